"""Pictures of word vectors: labelled 2-D maps (t-SNE, UMAP) of the most frequent words, and a TensorBoard
projector export (``tensorboard --logdir <dir>``, Projector tab) for exploring all of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from etl.core.errors import InputError

METHODS = ("tsne", "umap")


def frequent(words: list[str], vectors: np.ndarray, counts: np.ndarray, n: int,
             alphabetic_only: bool = True) -> tuple[list[str], np.ndarray]:
    """The ``n`` most frequent words (by default only words made of letters: punctuation and numbers
    crowd a map without telling much)."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    picked = [i for i in order if not alphabetic_only or words[i].isalpha()][:n]
    return [words[i] for i in picked], vectors[picked]


def project(vectors: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """2-D coordinates of unit-normalised ``vectors`` (cosine geometry) by t-SNE or UMAP."""
    from dl.w2v.evaluate import unit

    x = unit(vectors)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, perplexity=min(30.0, max(2.0, (len(x) - 1) / 3)), init="pca",
                    random_state=seed, metric="cosine").fit_transform(x)
    if method == "umap":
        import umap

        # seeded, so single-threaded (n_jobs=1 said outright, or UMAP warns that it overrode it)
        return umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), metric="cosine",
                         random_state=seed, n_jobs=1).fit_transform(x)
    raise InputError(f"method {method!r}: one of {', '.join(METHODS)}")


def word_map(words: list[str], coords: np.ndarray, out: str | Path, title: str) -> Path:
    """A scatter of the words at ``coords``, each labelled."""
    from dl.train.plots import _pyplot, _save

    plt = _pyplot()
    side = 8 + len(words) / 60
    fig, ax = plt.subplots(figsize=(side, side))
    ax.scatter(coords[:, 0], coords[:, 1], s=4, alpha=0.5)
    for w, (x, y) in zip(words, coords, strict=True):
        ax.annotate(w, (x, y), fontsize=7, alpha=0.85, xytext=(2, 2), textcoords="offset points")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(plt, fig, out)


def projector(words: list[str], vectors: np.ndarray, out_dir: str | Path) -> Path:
    """TensorBoard projector files (tensors, metadata, projector_config.pbtxt) under ``out_dir``."""
    import torch
    from torch.utils.tensorboard import SummaryWriter

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)  # one embedding per export, not one per rerun
    with SummaryWriter(str(out_dir)) as writer:
        writer.add_embedding(torch.from_numpy(np.ascontiguousarray(vectors)), metadata=words, tag="word2vec")
    return out_dir


def plot_run(run_dir: str | Path, methods: tuple[str, ...] = METHODS, n: int = 400,
             projector_words: int = 10_000) -> dict[str, str]:
    """Maps of a `lakedl w2v train` run's ``n`` most frequent words (``<run>/map_<method>.png``) and a
    projector export of its ``projector_words`` most frequent words (``<run>/projector``)."""
    from dl.w2v.train import load_model

    run_dir = Path(run_dir)
    words, vectors, counts = load_model(run_dir)
    top_words, top_vectors = frequent(words, vectors, counts, n)
    made = {}
    for method in methods:
        coords = project(top_vectors, method)
        made[method] = str(word_map(top_words, coords, run_dir / f"map_{method}.png",
                                    f"{run_dir.name}: the {len(top_words)} most frequent words, {method.upper()} (cosine)"))
    proj_words, proj_vectors = frequent(words, vectors, counts, projector_words, alphabetic_only=False)
    made["projector"] = str(projector(proj_words, proj_vectors, run_dir / "projector"))
    return made

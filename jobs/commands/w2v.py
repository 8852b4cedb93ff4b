"""``lakedl w2v corpus|train|neighbors|analogy|plot|eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from jobs.commands.common import ConfDir, ConfFiles, Sets, UsageError, echo_json, load, option_overrides

W2vRunDir = Annotated[Path, typer.Option("--run", help="a finished `lakedl w2v train` run directory "
                                          "(runs/w2v/<name>)")]


def w2v_corpus(input: Annotated[Optional[list[str]], typer.Option(
                   help="canonical JSON-lines file or directory, repeatable (default: corpus.inputs)")] = None,
               conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Tokenize the word2vec corpus (GCIDE text + reviews by default) with the text ETL into sentence shards."""
    from dl.w2v.train import build_corpus, corpus_dir

    cfg = load("w2v", conf_dir, conf, set_, option_overrides({"corpus.inputs": input or None}))
    report = build_corpus(cfg)
    typer.echo(f"corpus {corpus_dir(cfg)}: {report['rows_kept']} texts kept, {report['rows_quarantined']} quarantined "
               f"{report['reasons'] or ''}, {report['rows_already_present']} already present")


def w2v_train(processes: Annotated[Optional[int], typer.Option(help="training processes "
                                                               "(default: launcher.num_processes)")] = None,
              run_name: Annotated[Optional[str], typer.Option("--run-name", help="run name (default: generated)")] = None,
              conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Train word2vec on the corpus shards with the configured launcher; export and evaluate the vectors."""
    from dl.w2v.train import run_w2v

    cfg = load("w2v", conf_dir, conf, set_, option_overrides({"launcher.num_processes": processes,
                                                                 "run.name": run_name}))
    s = run_w2v(cfg)
    e = s["eval"]
    typer.echo(f"\nrun {s['run']}: {s['mode']}, {s['vocab']:,} words, {s['corpus_words']:,} corpus words x {s['epochs']} "
               f"epochs on {s['processes']} process(es): {s['words_per_second']:,} words/s")
    typer.echo(f"  WordSim-353 rho {e['ws353_spearman']}, SimLex-999 rho {e['simlex_spearman']}, "
               f"analogies {e['analogy_accuracy']} ({e['analogy_questions']} questions)")
    typer.echo(f"  run dir {s['run_dir']} (vectors.bin, vectors.txt, result.json); MLflow run {s['mlflow_run_id']}")


def _w2v_model(run: Path):
    from dl.w2v.train import load_model

    return load_model(run)


def w2v_neighbors(word: Annotated[str, typer.Argument(help="a word of the vocabulary")], run: W2vRunDir,
                  k: Annotated[int, typer.Option("-k", min=1, help="how many neighbours")] = 10) -> None:
    """The words nearest WORD (cosine similarity)."""
    from dl.w2v.evaluate import neighbors

    words, vectors, _ = _w2v_model(run)
    rows = neighbors(words, vectors, word, k)
    for w, score in rows:
        typer.echo(f"{score:7.4f}  {w}")


def w2v_analogy(a: Annotated[str, typer.Argument(help="A is to B ...")], b: Annotated[str, typer.Argument()],
                c: Annotated[str, typer.Argument(help="... as C is to ?")], run: W2vRunDir,
                k: Annotated[int, typer.Option("-k", min=1, help="how many answers")] = 5) -> None:
    """A is to B as C is to ?: the words nearest B - A + C."""
    from dl.w2v.evaluate import analogy

    words, vectors, _ = _w2v_model(run)
    rows = analogy(words, vectors, a, b, c, k)
    for w, score in rows:
        typer.echo(f"{score:7.4f}  {w}")


def w2v_plot(run: W2vRunDir,
             method: Annotated[Optional[list[str]], typer.Option(help="tsne and/or umap (default: both)")] = None,
             words: Annotated[int, typer.Option(min=10, help="the N most frequent words on the maps")] = 400,
             projector_words: Annotated[int, typer.Option(min=10, help="words in the TensorBoard projector export")]
             = 10_000) -> None:
    """Labelled t-SNE / UMAP maps (PNG) of the most frequent words and a TensorBoard projector export."""
    from dl.w2v.plots import METHODS, plot_run

    bad = [m for m in method or [] if m not in METHODS]
    if bad:
        raise UsageError(f"--method {bad[0]!r}: one of {', '.join(METHODS)}")
    made = plot_run(run, tuple(method or METHODS), words, projector_words)
    for kind, path in made.items():
        typer.echo(f"{kind}: {path}")
    typer.echo(f"projector: tensorboard --logdir {made['projector']}  (Projector tab)")


def w2v_eval(vectors: Annotated[Path, typer.Argument(help="a `lakedl w2v train` run directory, or any word2vec "
                                                      "text/binary file (e.g. data/raw/glove100/vectors.bin)")],
             eval_dir: Annotated[Path, typer.Option(help="gensim's test files")] = Path("data/raw/gensim_eval"),
             restrict_vocab: Annotated[int, typer.Option(min=1)] = 30_000) -> None:
    """WordSim-353 and SimLex-999 Spearman rho and Google analogy accuracy of a set of vectors."""
    from dl.w2v.evaluate import evaluate
    from etl.core.wordvec import read_word2vec

    if vectors.is_dir():
        words, vecs, counts = _w2v_model(vectors)
    else:  # a file's order is its frequency order (word2vec/gensim write most frequent first)
        words, vecs = read_word2vec(vectors)
        counts = None
    echo_json(evaluate(words, vecs, eval_dir, restrict_vocab, counts))

"""Distributed word2vec: the ``w2v`` job's config, the worker every process runs, and the driver.

Synchronization: every process trains its own copy of the two matrices on its share of the sentences
(every world-th sentence) with the Hogwild kernels of ``dl/w2v/kernels.py``. After every
``train.sync_words`` words it has read (``0``: at each epoch's end) the processes merge, with one
all-reduce per matrix (gloo on CPU, NCCL on GPU, or Horovod):

* ``sum_deltas`` (default): each process's change since the last merge is summed into the merged model —
  what the processes would have written into one shared model (as gensim's threads do), so the run makes
  the same number of updates as one process over the whole corpus;
* ``average``: the models are averaged (classic periodic model averaging / local SGD, as Spark MLlib's
  word2vec); each process's updates count 1/world, which slows learning at a fixed learning rate;
* ``shared`` (processes on one machine only): there is one pair of matrices, in shared memory, that
  every process updates directly (Hogwild across processes, as gensim's and word2vec.c's threads do);
  nothing to merge, and one copy of the model in the caches instead of one per process.

Every process cuts each epoch into the same number of chunks, so the all-reduces line up; after the last
merge every rank holds the same model. ``bench/w2v.py`` measures how the scheme and the interval change
quality against one process.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from etl.core.config import CommonConfig, Section, register_job
from etl.core.errors import InputError, MissingInput
from etl.core.logs import get_logger

log = get_logger(__name__)


# ------------------------------------------------------------------------------------------------
# Configuration (conf/base/w2v.yml)
# ------------------------------------------------------------------------------------------------
class CorpusSettings(Section):
    inputs: list[str] = Field(default_factory=lambda: ["data/raw/text/gcide.jsonl", "data/raw/reviews"],
                              min_length=1, description="canonical JSON-lines files or directories")
    name: str = Field("w2v_corpus", pattern=r"^[A-Za-z0-9_]+$", description="shards <shards_dir>/<name>/")
    shards_dir: str = "data/shards"
    min_count: int = Field(5, ge=1)
    max_size: int = Field(200_000, ge=10)
    max_len: int = Field(4096, ge=8, description="words kept per text (longer ones are truncated)")


class W2vModel(Section):
    mode: Literal["skipgram", "cbow"] = "skipgram"
    dim: int = Field(100, ge=2)
    window: int = Field(5, ge=1)
    negative: int = Field(5, ge=1)
    sample: float = Field(1e-3, ge=0, lt=1, description="subsampling threshold (0: keep every word)")
    ns_exponent: float = 0.75


class W2vTrain(Section):
    epochs: int = Field(5, ge=1)
    alpha: float = Field(0.025, gt=0)
    min_alpha: float = Field(0.0001, ge=0)
    seed: int = 1
    sync_words: int = Field(200_000, ge=0, description="words per process between merges (0: at epoch ends)")
    sync: Literal["sum_deltas", "average", "shared"] = "sum_deltas"
    progress: bool = True


class W2vLauncher(Section):
    kind: Literal["local", "torch_distributor", "horovod"] = "local"
    num_processes: int = Field(2, ge=1)


class W2vRun(Section):
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", description="default: w2v-<time>-<id>")


class W2vEval(Section):
    dir: str | None = Field(None, description="wordsim353.tsv, simlex999.txt, questions-words.txt; "
                                              "default <raw_dir>/gensim_eval")
    restrict_vocab: int = Field(30_000, ge=1, description="analogies among the N most frequent words (gensim's)")


class W2vConfig(CommonConfig):
    corpus: CorpusSettings = CorpusSettings()
    model: W2vModel = W2vModel()
    train: W2vTrain = W2vTrain()
    launcher: W2vLauncher = W2vLauncher()
    run: W2vRun = W2vRun()
    eval: W2vEval = W2vEval()


register_job("w2v", W2vConfig)


# ------------------------------------------------------------------------------------------------
# The worker (one per process)
# ------------------------------------------------------------------------------------------------
@dataclass
class W2vSettings:
    """What every word2vec rank receives: the corpus shards, where rank 0 writes the model, and the validated
    ``model`` and ``train`` sections of the config as they are."""
    shards: str
    out_dir: str
    model: W2vModel = field(default_factory=W2vModel)
    train: W2vTrain = field(default_factory=W2vTrain)


def initial_vectors(vocab: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """gensim's initialisation: input vectors uniform in ±0.5/dim, output vectors zero (the same on every
    rank: one seed)."""
    rng = np.random.default_rng(seed)
    syn0 = ((rng.random((vocab, dim), dtype=np.float32) - 0.5) / dim).astype(np.float32)
    return syn0, np.zeros((vocab, dim), np.float32)


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def w2v_worker(s: W2vSettings, backend: str = "none") -> dict:
    """Train on this rank's sentences, merging the ranks' models every ``sync_words`` words; rank 0 writes
    ``<out_dir>/model.npz``. Returns the loss history, words counted and every rank's weights digest."""
    import torch

    from dl.engine.distributed import make_dist
    from dl.w2v.corpus import (
        keep_probabilities,
        keep_thresholds,
        load_corpus,
        noise_table,
        rank_sentences,
        split_chunks,
    )
    from dl.w2v.kernels import train_chunk

    dist = make_dist(backend)
    try:
        rank, world = dist.rank, dist.world_size
        corpus = load_corpus(s.shards)
        syn0, syn1 = initial_vectors(len(corpus.words), s.model.dim, s.train.seed)
        shared = s.train.sync == "shared" and world > 1
        if shared:
            syn0, syn1 = shared_matrices(dist, syn0, syn1, s.out_dir)
        t0, t1 = torch.from_numpy(syn0), torch.from_numpy(syn1)  # the same memory: merged in place
        base = [t0.clone(), t1.clone()] if world > 1 and s.train.sync == "sum_deltas" else None
        cum = noise_table(corpus.counts, s.model.ns_exponent)
        keep = keep_thresholds(keep_probabilities(corpus.counts, s.model.sample))
        mine = rank_sentences(corpus, rank, world)
        # every rank cuts each epoch into the same number of chunks (from the largest share), so the
        # merging all-reduces line up
        lengths = np.diff(corpus.offsets)
        words_by_rank = [int(lengths[rank_sentences(corpus, r, world)].sum()) for r in range(world)]
        every = s.train.sync_words
        n_chunks = max(1, math.ceil(max(words_by_rank) / every)) if every and world > 1 and not shared else 1
        chunks = split_chunks(mine, corpus.offsets, n_chunks)
        my_words = words_by_rank[rank]
        total = max(1, my_words * s.train.epochs)
        done, history, train_seconds, sync_seconds = 0, [], 0.0, 0.0
        bar = None
        if s.train.progress and rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=total * world, unit="word", unit_scale=True, desc=f"word2vec ({world} proc)")
        for epoch in range(s.train.epochs):
            loss, terms, trained = 0.0, 0, 0
            for c, chunk in enumerate(chunks):
                started = time.perf_counter()
                read, kept, chunk_loss, chunk_terms = train_chunk(
                    syn0, syn1, corpus.tokens, corpus.offsets, chunk, keep, cum, s.model.mode == "cbow", s.model.window,
                    s.model.negative, s.train.alpha, s.train.min_alpha, done, total,
                    s.train.seed + 1_000_003 * rank + 7919 * (epoch * n_chunks + c))
                train_seconds += time.perf_counter() - started
                done, loss, terms, trained = done + read, loss + chunk_loss, terms + chunk_terms, trained + kept
                if world > 1 and not shared:
                    started = time.perf_counter()
                    merge(dist, [t0, t1], base)
                    sync_seconds += time.perf_counter() - started
                if bar is not None:
                    bar.update(read * world)
            mean_loss = dist.mean(loss / max(terms, 1))
            history.append({"epoch": epoch + 1, "loss": mean_loss, "words_trained": int(dist.mean(trained) * world)})
            if rank == 0:
                log.info("word2vec epoch %d/%d: loss %.4f", epoch + 1, s.train.epochs, mean_loss)
        if bar is not None:
            bar.close()
        if rank == 0:
            out = Path(s.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            np.savez(out / "model.npz.tmp.npz", syn0=syn0, syn1=syn1, counts=corpus.counts)
            (out / "model.npz.tmp.npz").replace(out / "model.npz")
            (out / "vocab.json").write_text(json.dumps(corpus.words))
        return {"history": history, "world_size": world, "words_per_process": my_words, "corpus_words": corpus.total_words,
                "sentences": corpus.sentences, "vocab": len(corpus.words), "chunks_per_epoch": n_chunks,
                "train_seconds": dist.mean(train_seconds), "sync_seconds": dist.mean(sync_seconds),
                "weights_sha256_by_rank": dist.gather(digest(syn0, syn1)), "tokenizer_sha256": corpus.tokenizer_sha256}
    finally:
        dist.close()


def shared_matrices(dist, syn0: np.ndarray, syn1: np.ndarray, out_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """``syn0``/``syn1`` moved into one memory-mapped file that every rank maps (``/dev/shm`` when it has
    room, else ``out_dir``): rank 0 writes the initial vectors, and the file is unlinked as soon as every
    rank has mapped it, so the mappings live on and nothing is left behind if a process dies."""
    import shutil
    import socket
    import uuid

    hosts = sorted(set(dist.gather(socket.gethostname())))
    if len(hosts) > 1:
        raise InputError(f"train.sync=shared needs every process on one machine, got {hosts}: use "
                         "train.sync=sum_deltas (or average) across machines")
    token = dist.gather(uuid.uuid4().hex)[0]  # rank 0's
    shm = Path("/dev/shm")
    folder = shm if shm.is_dir() and shutil.disk_usage(shm).free > 4 * syn0.nbytes else Path(out_dir)
    path = folder / f"lakedl-w2v-{token}.f32"
    shape = (2, *syn0.shape)
    if dist.rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        mm = np.memmap(path, np.float32, "w+", shape=shape)
        mm[0], mm[1] = syn0, syn1
        mm.flush()
    dist.mean(0.0)  # barrier: the file is complete
    if dist.rank != 0:
        mm = np.memmap(path, np.float32, "r+", shape=shape)
    dist.mean(0.0)  # barrier: every rank has mapped it
    if dist.rank == 0:
        path.unlink()
    both = mm.view(np.ndarray)  # a plain array over the mapping (what numba takes)
    return both[0], both[1]


def merge(dist, tensors: list, base: list | None) -> None:
    """Merge the ranks' matrices in place: the mean (``base`` None), or ``base`` plus the sum of every
    rank's change since ``base`` (then ``base`` becomes the merged model)."""
    for i, t in enumerate(tensors):
        if base is None:
            dist.average_(t, f"w2v{i}")
            continue
        t.sub_(base[i])  # this rank's delta
        dist.average_(t, f"w2v{i}").mul_(dist.world_size)  # the sum of the deltas
        t.add_(base[i])
        base[i].copy_(t)


def settings_from(cfg: W2vConfig, shards: Path, out_dir: Path) -> W2vSettings:
    return W2vSettings(str(shards), str(out_dir), cfg.model, cfg.train)


# ------------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------------
def corpus_dir(cfg: W2vConfig) -> Path:
    return Path(cfg.corpus.shards_dir) / cfg.corpus.name


def build_corpus(cfg: W2vConfig, spark=None) -> dict:
    """The text ETL over the corpus inputs, word-level, into ``<shards_dir>/<name>/`` (incremental: a
    second run adds only new texts and keeps the vocabulary)."""
    from etl.core.config import load_config
    from etl.text.config import TextEtlConfig  # noqa: F401  (registers the etl_text job)
    from etl.text.pipeline import run_etl_text

    c = cfg.corpus
    etl = load_config("etl_text", overrides=[
        f"input.paths={json.dumps(c.inputs)}", "input.format=json", "split.mode=hash", "tokenize.kind=word",
        f"tokenize.vocab.min_count={c.min_count}", f"tokenize.vocab.max_size={c.max_size}",
        f"encode.max_len={c.max_len}", "encode.fixed=false", f"output.name={c.name}",
        f"output.shards_dir={c.shards_dir}", f"paths.tables_dir={cfg.paths.tables_dir}",
        f"paths.raw_dir={cfg.paths.raw_dir}", f"spark.master={cfg.spark.master}"])
    return run_etl_text(etl, spark=spark)


def run_w2v(cfg: W2vConfig, spark=None) -> dict:
    """Train (launcher and process count from the config), export the vectors in word2vec text and binary
    formats, evaluate, and write ``result.json``; returns that summary."""
    from dl.engine.launch import launch
    from dl.engine.tracking import start_run
    from dl.w2v.evaluate import evaluate
    from etl.core.config import dump_config
    from etl.core.runs import new_run_id
    from etl.core.wordvec import write_word2vec

    shards = corpus_dir(cfg)
    if not (shards / "manifest.json").is_file():
        raise MissingInput(f"{shards}/manifest.json not found: run `lakedl w2v corpus` first")
    name = cfg.run.name or new_run_id("w2v")
    out = Path(cfg.paths.runs_dir) / "w2v" / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yml").write_text(dump_config(cfg))
    if cfg.launcher.kind != "local" and spark is None:
        from etl.core.spark import get_spark

        spark = get_spark(cfg.spark)
    with start_run(cfg, name, tags={"job": "w2v", "launcher": cfg.launcher.kind}) as handle:
        started = time.perf_counter()
        result = launch(w2v_worker, settings_from(cfg, shards, out), cfg.launcher.kind,
                        cfg.launcher.num_processes, spark=spark)
        seconds = time.perf_counter() - started
        words, vectors, counts = load_model(out)
        write_word2vec(out / "vectors.bin", words, vectors, binary=True)
        write_word2vec(out / "vectors.txt", words, vectors, binary=False)
        scores = evaluate(words, vectors, eval_dir(cfg), cfg.eval.restrict_vocab, counts)
        trained = result["corpus_words"] * cfg.train.epochs
        summary = {"run": name, "run_dir": str(out), "mlflow_run_id": handle.run_id, "processes": result["world_size"],
                   "mode": cfg.model.mode, "vocab": result["vocab"], "corpus_words": result["corpus_words"],
                   "sentences": result["sentences"], "epochs": cfg.train.epochs, "sync_words": cfg.train.sync_words, "sync": cfg.train.sync,
                   "chunks_per_epoch": result["chunks_per_epoch"], "seconds": round(seconds, 2),
                   "train_seconds": round(result["train_seconds"] + result["sync_seconds"], 2),
                   "sync_seconds": round(result["sync_seconds"], 2),
                   "words_per_second": round(trained / max(result["train_seconds"] + result["sync_seconds"], 1e-9)),
                   "history": result["history"], "eval": scores,
                   "weights_identical_across_ranks": len(set(result["weights_sha256_by_rank"])) == 1}
        (out / "result.json").write_text(json.dumps(summary, indent=1))
        import mlflow

        mlflow.log_metrics({"words_per_second": summary["words_per_second"],
                            **{k: v for k, v in scores.items() if isinstance(v, float)}})
        for h in result["history"]:
            mlflow.log_metric("loss", h["loss"], step=h["epoch"])
        mlflow.log_artifacts(str(out), artifact_path="w2v")
    log.info("word2vec %s: %s", name, {k: summary[k] for k in ("words_per_second", "eval")})
    return summary


def eval_dir(cfg: W2vConfig) -> Path:
    return Path(cfg.eval.dir) if cfg.eval.dir else Path(cfg.paths.raw_dir) / "gensim_eval"


def load_model(run_dir: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The words, input vectors (the embeddings) and corpus counts of a finished run."""
    run_dir = Path(run_dir)
    if not (run_dir / "model.npz").is_file():
        raise MissingInput(f"{run_dir}/model.npz not found: is it a finished `lakedl w2v train` run?")
    with np.load(run_dir / "model.npz") as z:
        vectors, counts = z["syn0"], z["counts"]
    return json.loads((run_dir / "vocab.json").read_text()), vectors, counts

"""word2vec: lakedl (2 processes) against gensim (workers=2) and Spark MLlib, one corpus, one vocabulary.

    python bench/w2v.py [--epochs 5] [--repeats 2]      (make bench-w2v)

The corpus is `lakedl w2v corpus` (GCIDE text + the review corpora, word-level text ETL, min count 5);
every system trains on the same sentences (the ETL's vocabulary, out-of-vocabulary words removed) with
the same settings: skip-gram, 100 dimensions, window 5, 5 negatives, sample 1e-3, alpha 0.025 → 1e-4.
Spark MLlib's Word2Vec has no negative sampling or subsampling (hierarchical softmax), so it gets the
same dimensions, window, learning rate, epochs and 2 partitions.

words/s = corpus words × epochs / training seconds (gensim: ``train()``; lakedl: the workers' training
and merge time, as `result.json` reports it, plus the end-to-end time including process start, corpus
load and JIT compilation; MLlib: ``fit()``). Speed ratios are medians over ``--repeats`` alternating runs.
Quality: WordSim-353 / SimLex-999 Spearman ρ and Google analogy accuracy (top 30k words), all computed by
``dl/w2v/evaluate.py`` (checked against gensim's own evaluators in tests/model/test_w2v.py).
Also measured: the ``shared`` scheme (one model in shared memory, processes on one machine), 1 process,
and the ``average`` merge scheme, to show what each way of distributing costs in quality.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from common import command_line, recipe, write_result  # bench/common.py, beside this script

from dl.w2v.corpus import load_corpus
from dl.w2v.evaluate import evaluate
from dl.w2v.train import build_corpus, corpus_dir, run_w2v
from jobs.configs import load_config

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO / "data" / "raw" / "gensim_eval"
QUALITY = ("ws353_spearman", "simlex_spearman", "analogy_accuracy")


def lakedl(epochs: int, processes: int, name: str, extra: list[str] = ()) -> dict:
    cfg = load_config("w2v", REPO / "conf", [recipe("w2v_skipgram")], overrides=[
        f"train.epochs={epochs}", f"launcher.num_processes={processes}", f"run.name={name}",
        "train.progress=false", f"paths.runs_dir={REPO / 'data' / 'work' / 'bench_w2v' / 'runs'}", *extra])
    s = run_w2v(cfg)
    return {"words_per_s": s["words_per_second"], "end_to_end_words_per_s": round(s["corpus_words"] * epochs / s["seconds"]),
            "train_s": s["train_seconds"], "sync_s": s["sync_seconds"], "merges_per_epoch": s["chunks_per_epoch"],
            **{k: s["eval"][k] for k in QUALITY}, "weights_identical_across_ranks": s["weights_identical_across_ranks"]}


def gensim_run(sentences: list[list[str]], total_words: int, epochs: int, workers: int) -> dict:
    from gensim.models import Word2Vec

    model = Word2Vec(vector_size=100, window=5, min_count=1, sample=1e-3, negative=5, sg=1, alpha=0.025,
                     min_alpha=1e-4, workers=workers, seed=1)
    model.build_vocab(sentences)
    started = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=epochs)
    seconds = time.perf_counter() - started
    words = list(model.wv.index_to_key)
    counts = np.asarray([model.wv.get_vecattr(w, "count") for w in words])
    scores = evaluate(words, model.wv.vectors, EVAL, 30_000, counts)
    return {"words_per_s": round(total_words * epochs / seconds), "train_s": round(seconds, 2),
            **{k: scores[k] for k in QUALITY}}


def mllib_run(corpus, epochs: int, work: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.ml.feature import Word2Vec

    from etl.core.spark import get_spark

    path = work / "sentences.parquet"
    if not path.exists():
        pq.write_table(pa.table({"words": corpus.sentence_words(np.arange(corpus.sentences))}), path)
    cfg = load_config("w2v", REPO / "conf", overrides=["spark.master=local[2]", "spark.driver_memory=8g"])
    spark = get_spark(cfg.spark)
    df = spark.read.parquet(str(path)).repartition(2).cache()
    df.count()
    w2v = Word2Vec(vectorSize=100, windowSize=5, minCount=1, maxIter=epochs, stepSize=0.025, numPartitions=2,
                   seed=1, inputCol="words", outputCol="vec", maxSentenceLength=4096)
    started = time.perf_counter()
    model = w2v.fit(df)
    seconds = time.perf_counter() - started
    table = model.getVectors().toPandas()
    df.unpersist()
    words = table["word"].tolist()
    vectors = np.stack([v.toArray() for v in table["vector"]]).astype(np.float32)
    index = {w: i for i, w in enumerate(corpus.words)}
    counts = np.asarray([corpus.counts[index[w]] for w in words])
    scores = evaluate(words, vectors, EVAL, 30_000, counts)
    return {"words_per_s": round(corpus.total_words * epochs / seconds), "train_s": round(seconds, 2),
            **{k: scores[k] for k in QUALITY}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2, help="alternating lakedl/gensim runs (speed: median)")
    ap.add_argument("--mllib-epochs", type=int, default=None, help="MLlib's epochs (default: --epochs)")
    args = ap.parse_args(argv)
    cfg = load_config("w2v", REPO / "conf", overrides=["spark.master=local[2]"])
    if not (corpus_dir(cfg) / "manifest.json").is_file():
        build_corpus(cfg)
    corpus = load_corpus(corpus_dir(cfg))
    sentences = corpus.sentence_words(np.arange(corpus.sentences))
    print(f"corpus: {corpus.total_words:,} words, {corpus.sentences:,} sentences, vocabulary {len(corpus.words):,}")
    ours, shared, theirs = [], [], []
    for r in range(args.repeats):
        ours.append(lakedl(args.epochs, 2, f"bench-2proc-{r}"))
        print("lakedl 2 processes", ours[-1], flush=True)
        shared.append(lakedl(args.epochs, 2, f"bench-2proc-shared-{r}", ["train.sync=shared"]))
        print("lakedl 2 processes, shared memory", shared[-1], flush=True)
        theirs.append(gensim_run(sentences, corpus.total_words, args.epochs, 2))
        print("gensim workers=2", theirs[-1], flush=True)
    one = lakedl(args.epochs, 1, "bench-1proc")
    print("lakedl 1 process", one, flush=True)
    averaged = lakedl(args.epochs, 2, "bench-2proc-average", ["train.sync=average"])
    print("lakedl 2 processes, average merge", averaged, flush=True)
    work = REPO / "data" / "work" / "bench_w2v"
    work.mkdir(parents=True, exist_ok=True)
    mllib = mllib_run(corpus, args.mllib_epochs or args.epochs, work)
    print("Spark MLlib", mllib, flush=True)

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    g_speed = med(theirs, "words_per_s")
    common = {"corpus_words": corpus.total_words, "vocab": len(corpus.words), "epochs": args.epochs}
    results = [
        {"case": "lakedl_2proc", "system": "lakedl (2 processes, sum_deltas, merge every 200k words)", **common,
         "words_per_s": med(ours, "words_per_s"), "end_to_end_words_per_s": med(ours, "end_to_end_words_per_s"),
         "ratio": round(med(ours, "words_per_s") / g_speed, 3), "baseline": "gensim Word2Vec workers=2, same run",
         "ratio_end_to_end": round(med(ours, "end_to_end_words_per_s") / g_speed, 3),
         **{k: ours[-1][k] for k in QUALITY}, **{f"{k}_minus_gensim": round(ours[-1][k] - theirs[-1][k], 4)
                                                for k in QUALITY},
         "runs": ours},
        {"case": "lakedl_2proc_shared", "system": "lakedl (2 processes on one machine, one model in shared memory)",
         **common, "words_per_s": med(shared, "words_per_s"),
         "end_to_end_words_per_s": med(shared, "end_to_end_words_per_s"),
         "ratio": round(med(shared, "words_per_s") / g_speed, 3), "baseline": "gensim Word2Vec workers=2, same run",
         "ratio_end_to_end": round(med(shared, "end_to_end_words_per_s") / g_speed, 3),
         **{k: shared[-1][k] for k in QUALITY}, **{f"{k}_minus_gensim": round(shared[-1][k] - theirs[-1][k], 4)
                                                  for k in QUALITY},
         "runs": shared},
        {"case": "gensim_2workers", "system": "gensim 4.4.0 Word2Vec (workers=2)", **common, "words_per_s": g_speed,
         **{k: theirs[-1][k] for k in QUALITY}, "runs": theirs},
        {"case": "spark_mllib", "system": "Spark MLlib Word2Vec (2 partitions, hierarchical softmax)", **common,
         "epochs": args.mllib_epochs or args.epochs, **mllib,
         "lakedl_speed_ratio": round(med(ours, "words_per_s") / mllib["words_per_s"], 2)},
        {"case": "lakedl_1proc", "system": "lakedl (1 process): the distribution's quality reference", **common, **one},
        {"case": "lakedl_2proc_average", "system": "lakedl (2 processes, average merge every 200k words)", **common,
         **averaged},
    ]
    path = write_result("w2v", command_line(), results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

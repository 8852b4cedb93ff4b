"""word2vec: GCIDE markup stripping, the noise distribution, subsampling, the evaluators against gensim's,
export through gensim's loader, and a real 2-process run (gloo) on a slice of the real GCIDE corpus that
ends with one model on both ranks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dl.w2v.corpus import keep_probabilities, keep_thresholds, noise_table, split_chunks
from dl.w2v.kernels import draw_kept, draw_noise
from etl.sources.fetch import gcide_text

REPO = Path(__file__).resolve().parents[2]


def test_gcide_markup_is_stripped_and_accents_kept_as_letters():
    raw = ('Calorifere \\Ca*lor"i*fere\\, n. [F. calorif[`e]re, fr. L. calor\n'
           '   heat + ferre to bear.]\n   An apparatus for conveying {heat}; a caf[\'e] stove. [Obs.]\n'
           '   [1913 Webster]')
    assert gcide_text(raw) == "Calorifere , n. An apparatus for conveying heat; a cafe stove."
    respelled = 'Zythum \\Zy"thum\\ (z[imac]"th[u^]m), n. A kind of malt beverage. --Pliny.'
    assert gcide_text(respelled) == "Zythum , n. A kind of malt beverage."


def test_noise_distribution_is_unigram_to_the_three_quarters():
    counts = np.array([1000, 100, 10, 0, 1], np.int64)
    cum = noise_table(counts, 0.75)
    assert cum[-1] == 2**31 - 1 and np.all(np.diff(cum) >= 0)
    draws = draw_noise(cum, 400_000, 7)
    freq = np.bincount(draws, minlength=len(counts)) / len(draws)
    expected = counts ** 0.75 / (counts ** 0.75).sum()
    assert freq[3] == 0  # a word never seen is never a negative
    np.testing.assert_allclose(freq, expected, atol=0.004)
    flat = draw_noise(noise_table(counts, 0.0), 200_000, 7)  # exponent 0: uniform over seen and unseen alike
    np.testing.assert_allclose(np.bincount(flat, minlength=5) / 200_000, 0.2, atol=0.005)


def test_subsampling_keeps_rare_words_and_thins_frequent_ones():
    counts = np.array([900_000, 90_000, 9_000, 100], np.int64)
    p = keep_probabilities(counts, 1e-3)
    t = 1e-3 * counts.sum()
    np.testing.assert_allclose(p[0], (np.sqrt(counts[0] / t) + 1) * t / counts[0])
    assert p[3] == 1.0 and p[0] < p[1] < p[2] <= 1.0
    assert np.all(keep_probabilities(counts, 0) == 1.0)
    tokens = np.repeat(np.arange(4, dtype=np.int32), [200_000, 20_000, 2_000, 100])
    kept = draw_kept(tokens, keep_thresholds(p), 3)
    n = np.array([200_000, 20_000, 2_000])
    assert np.all(np.abs(kept[:3] / n - p[:3]) < 4 * np.sqrt(p[:3] * (1 - p[:3]) / n))  # within 4 sigma
    assert kept[3] == 100


def test_chunks_cover_every_sentence_once_with_balanced_words():
    offsets = np.concatenate([[0], np.cumsum(np.arange(1, 101))]).astype(np.int64)
    sentences = np.arange(0, 100, 2, dtype=np.int64)
    chunks = split_chunks(sentences, offsets, 4)
    assert len(chunks) == 4 and np.array_equal(np.concatenate(chunks), sentences)
    words = [int(np.sum(np.diff(offsets)[c])) for c in chunks]
    assert max(words) - min(words) <= 100  # at most one sentence apart


@pytest.fixture(scope="module")
def w2v_run(raw_data, spark, tmp_path_factory):
    """The corpus ETL over the first 20,000 GCIDE paragraphs, then `lakedl w2v train`'s library call on 2
    processes (local launcher, gloo), 2 epochs."""
    from dl.w2v.train import build_corpus, run_w2v
    from jobs.configs import load_config

    root = tmp_path_factory.mktemp("w2v")
    lines = (raw_data / "text" / "gcide.jsonl").read_text(encoding="utf-8").splitlines()[:20_000]
    (root / "gcide.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    overrides = [f"corpus.inputs={json.dumps([str(root / 'gcide.jsonl')])}", f"corpus.shards_dir={root / 'shards'}",
                 f"paths.tables_dir={root / 'tables'}", f"paths.runs_dir={root / 'runs'}", f"paths.raw_dir={raw_data}",
                 "spark.master=local[2]", "corpus.min_count=3", "train.epochs=2", "train.progress=false",
                 "train.sync_words=20000", "run.name=two", "launcher.num_processes=2"]
    cfg = load_config("w2v", REPO / "conf", overrides=overrides)
    report = build_corpus(cfg, spark)
    assert report["rows_read"] == 20_000 == report["rows_kept"] + report["rows_quarantined"]
    return run_w2v(cfg), root


def test_two_processes_end_with_one_model_that_learned(w2v_run):
    summary, _ = w2v_run
    assert summary["processes"] == 2 and summary["weights_identical_across_ranks"]
    assert summary["chunks_per_epoch"] > 1  # merged within epochs, not only at their ends
    losses = [h["loss"] for h in summary["history"]]
    assert losses[1] < losses[0] < 0.7  # below chance (log 2 ≈ 0.69 per term) and falling
    assert summary["eval"]["ws353_pairs"] > 50 and -1 <= summary["eval"]["ws353_spearman"] <= 1
    run_dir = Path(summary["run_dir"])
    assert {"model.npz", "vocab.json", "vectors.bin", "vectors.txt", "result.json"} <= {p.name for p in run_dir.iterdir()}


def test_export_round_trips_through_gensims_loader(w2v_run):
    from gensim.models import KeyedVectors

    from dl.w2v.train import load_model

    summary, _ = w2v_run
    words, vectors, _ = load_model(summary["run_dir"])
    for name, binary in (("vectors.bin", True), ("vectors.txt", False)):
        kv = KeyedVectors.load_word2vec_format(str(Path(summary["run_dir"]) / name), binary=binary)
        assert kv.index_to_key == words
        np.testing.assert_allclose(kv.vectors, vectors, rtol=1e-6 if binary else 1e-5, atol=0 if binary else 1e-6)


def test_our_evaluators_agree_with_gensims(w2v_run, raw_data):
    from gensim.models import KeyedVectors

    from dl.w2v.evaluate import evaluate

    summary, _ = w2v_run
    kv = KeyedVectors.load_word2vec_format(str(Path(summary["run_dir"]) / "vectors.bin"), binary=True)
    ours = evaluate(kv.index_to_key, kv.vectors, raw_data / "gensim_eval", 30_000)
    ev = raw_data / "gensim_eval"
    _, rho, oov = kv.evaluate_word_pairs(str(ev / "wordsim353.tsv"))
    assert ours["ws353_spearman"] == pytest.approx(rho.statistic, abs=1e-4)
    assert ours["ws353_oov_ratio"] * 100 == pytest.approx(oov, abs=0.01)
    accuracy, _ = kv.evaluate_word_analogies(str(ev / "questions-words.txt"), restrict_vocab=30_000)
    assert ours["analogy_accuracy"] == pytest.approx(accuracy, abs=1e-4)


def test_cli_queries_answer_and_name_unknown_words(w2v_run):
    summary, _ = w2v_run
    cli = [str(Path(sys.executable).parent / "lakedl"), "w2v"]
    out = subprocess.run([*cli, "neighbors", "water", "--run", summary["run_dir"], "-k", "5"],
                         check=False, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()]
    assert len(rows) == 5 and all(-1 <= float(score) <= 1 for score, _ in rows) and "water" not in {w for _, w in rows}
    bad = subprocess.run([*cli, "analogy", "man", "king", "womman", "--run", summary["run_dir"]],
                         check=False, capture_output=True, text=True, cwd=REPO)
    assert bad.returncode != 0 and "'womman' is not in the vocabulary" in bad.stderr and "woman" in bad.stderr


def test_maps_and_projector_export(w2v_run):
    from dl.w2v.plots import plot_run

    summary, _ = w2v_run
    made = plot_run(summary["run_dir"], ("tsne", "umap"), n=60, projector_words=500)
    for method in ("tsne", "umap"):
        png = Path(made[method])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    config = (Path(made["projector"]) / "projector_config.pbtxt").read_text()
    tensors = next(Path(made["projector"]).rglob("tensors.tsv")).read_text().splitlines()
    metadata = next(Path(made["projector"]).rglob("metadata.tsv")).read_text().splitlines()
    assert "tensor_path" in config and len(tensors) == len(metadata) == 500
    assert len(tensors[0].split("\t")) == 100


def test_cbow_in_one_process_learns(w2v_run, tmp_path):
    from dl.w2v.train import W2vModel, W2vSettings, W2vTrain, w2v_worker

    _, root = w2v_run
    result = w2v_worker(W2vSettings(str(root / "shards" / "w2v_corpus"), str(tmp_path), W2vModel(mode="cbow"),
                                    W2vTrain(epochs=2, progress=False)), "none")
    losses = [h["loss"] for h in result["history"]]
    assert result["world_size"] == 1 and result["chunks_per_epoch"] == 1
    assert losses[1] < losses[0] < 0.7 and (tmp_path / "model.npz").is_file()


@pytest.mark.parametrize("kind", ["torch_distributor", "horovod"])
def test_the_spark_launchers_run_the_w2v_worker(w2v_run, spark, tmp_path, kind):
    from dl.engine.launch import launch
    from dl.w2v.train import W2vSettings, W2vTrain, w2v_worker

    _, root = w2v_run
    settings = W2vSettings(str(root / "shards" / "w2v_corpus"), str(tmp_path),
                           train=W2vTrain(epochs=1, sync_words=50_000, progress=False))
    result = launch(w2v_worker, settings, kind, 2, spark=spark)
    assert result["world_size"] == 2 and result["chunks_per_epoch"] > 1
    assert len(set(result["weights_sha256_by_rank"])) == 1 and (tmp_path / "model.npz").is_file()


def test_shared_memory_mode_trains_one_model_and_leaves_no_file(w2v_run, tmp_path):
    from dl.engine.launch import launch
    from dl.w2v.train import W2vSettings, W2vTrain, w2v_worker

    _, root = w2v_run
    before = set(Path("/dev/shm").glob("lakedl-w2v-*"))
    settings = W2vSettings(str(root / "shards" / "w2v_corpus"), str(tmp_path),
                           train=W2vTrain(epochs=2, sync="shared", progress=False))
    result = launch(w2v_worker, settings, "local", 2)
    losses = [h["loss"] for h in result["history"]]
    assert result["chunks_per_epoch"] == 1 and result["sync_seconds"] == 0  # nothing to merge
    assert len(set(result["weights_sha256_by_rank"])) == 1 and losses[1] < losses[0] < 0.7
    assert set(Path("/dev/shm").glob("lakedl-w2v-*")) == before and not list(tmp_path.glob("*.f32"))


def test_missing_inputs_are_named_with_what_to_run(tmp_path):
    from dl.w2v.corpus import load_corpus
    from dl.w2v.evaluate import evaluate
    from dl.w2v.train import load_model

    with pytest.raises(FileNotFoundError, match=r"manifest.json not found: build the corpus first \(`lakedl w2v corpus`\)"):
        load_corpus(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"lacks wordsim353.tsv, simlex999.txt, questions-words.txt: run "
                                                r"`lakedl data fetch --source gensim_eval`"):
        evaluate(["a"], np.zeros((1, 2), np.float32), tmp_path)
    with pytest.raises(FileNotFoundError, match="model.npz not found: is it a finished `lakedl w2v train` run"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="the vocabulary has no counts"):
        noise_table(np.zeros(3, np.int64))

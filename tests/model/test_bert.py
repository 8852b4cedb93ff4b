"""The fine-tuned pretrained encoder (model.name=bert): the real MiniLM-L6 from `lakedl data fetch`
loads offline and already separates meanings; it fine-tunes on SST sentences encoded by the text ETL's
MiniLM path through the 2-process launcher; its checkpoint rebuilds without the pretrained files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dl.models import build_model, rebuild
from dl.serve.search import Encoder
from dl.train.job import TrainError, run_train
from etl.text.textprep import load_minilm
from jobs.configs import load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def minilm(raw_data) -> Path:
    return raw_data / "minilm" / "model"


def test_pretrained_minilm_loads_offline_and_knows_english(minilm):
    encoder = Encoder(minilm)  # build_model("bert", ...)'s encoder, mean-pooled as all-MiniLM-L6-v2 was trained
    assert sum(p.numel() for p in encoder.model.parameters()) == 22_565_376  # MiniLM-L6-H384 without its pooler (147,840 more with it)
    e = encoder.embed(["a wonderful , moving film", "an excellent movie", "the bank raised interest rates"])
    similar, unrelated = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert similar > 0.5 > unrelated, (similar, unrelated)  # random weights would give neither


def test_bert_refusals(minilm, tmp_path, shards):
    with pytest.raises(ValueError, match="tokenize.kind=minilm"):
        build_model("bert", 48, {"pretrained": str(minilm)})  # a word vocabulary's size
    with pytest.raises(FileNotFoundError, match="lakedl data fetch --source minilm"):
        build_model("bert", 30522, {"pretrained": str(tmp_path)})
    cfg = load_config("train", REPO / "conf", overrides=[f"data.shards={shards}", f"paths.runs_dir={tmp_path}",
                                                          "model.name=bert", f"model.bert.pretrained={minilm}"])
    with pytest.raises(TrainError, match="rerun `lakedl etl text --set tokenize.kind=minilm`"):
        run_train(cfg)  # the toy shards use a word tokenizer
    with pytest.raises(TrainError, match="no config.json there"):
        run_train(load_config("train", REPO / "conf", overrides=[
            f"data.shards={shards}", f"paths.runs_dir={tmp_path}", "model.name=bert", f"model.bert.pretrained={tmp_path}"]))


def small_sst(sst_dir: Path, out: Path, n: dict[str, int]) -> Path:
    out.mkdir(parents=True)
    for split, count in n.items():
        lines = (sst_dir / f"{split}.txt").read_text().splitlines()
        (out / f"{split}.txt").write_text("\n".join(lines[:count]) + "\n")
    return out


@pytest.mark.spark
@pytest.mark.distributed
def test_minilm_fine_tunes_on_sst_through_the_launcher(spark, sst_dir, minilm, tmp_path):
    from etl.text.pipeline import run_etl_text

    sst = small_sst(sst_dir, tmp_path / "sst", {"train": 240, "dev": 80, "test": 80})
    etl = load_config("etl_text", REPO / "conf", overrides=[
        f"input.paths={json.dumps([str(sst)])}", "input.format=sst", "split.mode=given", "tokenize.kind=minilm",
        f"tokenize.subword.minilm_dir={minilm}", "output.name=sst_minilm", f"output.shards_dir={tmp_path / 'shards'}",
        f"paths.tables_dir={tmp_path / 'tables'}"])
    report = run_etl_text(etl)
    assert report["tokenizer"] == "minilm" and report["rows_per_split"] == {"train": 240, "dev": 80, "test": 80}
    cfg = load_config("train", REPO / "conf", overrides=[
        f"data.shards={tmp_path / 'shards' / 'sst_minilm'}", f"paths.runs_dir={tmp_path / 'runs'}", "run.name=ft",
        f"paths.raw_dir={minilm.parents[1]}", "model.name=bert", "model.bert.freeze_layers=3", "train.epochs=2",
        "train.batch_size=16", "optim.name=adamw", "optim.lr=0.0002", "train.progress=false",
        "launcher.kind=local", "launcher.num_processes=2"])
    summary = run_train(cfg)
    assert summary["processes"] == 2 and summary["weights_identical_across_ranks"]
    assert summary["test"]["sentiment_examples"] > 0
    # a frozen pretrained encoder with a fine-tuned top already beats chance on real sentences
    assert summary["test"]["sentiment_accuracy"] >= 0.6, summary["test"]
    state = torch.load(tmp_path / "runs" / "train" / "ft" / "best.pt", weights_only=True)
    config = {**state["config"], "pretrained": str(tmp_path / "nowhere")}  # the checkpoint alone rebuilds it
    model = rebuild(config)
    model.load_state_dict(state["model"])
    tokenizer = load_minilm(minilm)
    ids = torch.tensor([tokenizer.encode(["a gorgeous , witty , seductive movie ."], 64)[0]])
    reference = build_model("bert", tokenizer.vocab_size, {"pretrained": str(minilm)})
    reference.load_state_dict(state["model"])
    lengths = torch.tensor([ids.shape[1]])
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids, lengths)["sentiment"], reference.eval()(ids, lengths)["sentiment"])
    # the run as an inference bundle, scored on Spark from the silver table, reproduces the test accuracy
    from pyspark.sql import functions as F

    from dl.serve.bundle import export_bundle, load_bundle
    from dl.serve.score import score_frame
    from etl.core.tables import TableStore

    bundle = export_bundle(tmp_path / "runs" / "train" / "ft", tmp_path / "bundle")
    assert load_bundle(bundle).tokenizer.kind == "minilm"
    from dl.serve.explain import explain  # token attributions through MiniLM's word-embedding layer

    e = explain(load_bundle(bundle), ["a gorgeous , witty , seductive movie ."])[0]
    assert e.tokens[0] == "[CLS]" and e.tokens[-1] == "[SEP]" and e.attributions[0] == e.attributions[-1] == 0
    assert abs(e.explained) > 0.05 and abs(sum(e.attributions) - e.explained) <= 0.05 * abs(e.explained), e
    silver = TableStore(tmp_path / "tables", spark=spark, backend="delta-rs").read("silver_sst_minilm")
    test = silver.filter("split = 'test' AND label IS NOT NULL").select("review_id", "text", F.col("label").alias("gold"))
    scored = score_frame(test, bundle, batch_size=16).join(test, "review_id").toPandas()
    assert len(scored) == summary["test"]["sentiment_examples"]
    accuracy = ((scored["label"] == "positive") == (scored["gold"] == 1)).mean()
    assert accuracy == pytest.approx(summary["test"]["sentiment_accuracy"], abs=1e-9)

"""`lakedl viz lstm`: the hidden-state heatmap of a trained recurrent run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dl.engine.checkpoint import save_checkpoint
from dl.models import build_model, describe
from dl.train.job import run_train
from dl.train.rundir import RunError
from dl.viz.lstm import lstm_heatmap
from jobs.configs import load_config

REPO = Path(__file__).resolve().parents[2]


def test_lstm_heatmap_of_a_trained_run(shards, tmp_path):
    cfg = load_config("train", REPO / "conf", overrides=[
        f"data.shards={shards}", f"paths.runs_dir={tmp_path}", "run.name=lstm", "model.name=rnn",
        "model.rnn.embed_dim=16", "model.rnn.hidden=12", "train.epochs=2", "optim.lr=0.02",
        "launcher.num_processes=1", "train.progress=false"])
    run_train(cfg)
    run = tmp_path / "train" / "lstm"
    summary = lstm_heatmap(run, split="dev", sentences=4, units=8, min_len=3, max_len=12)
    assert Path(summary["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(Path(summary["png"]).with_suffix(".json").read_text())["units"] == summary["units"]
    assert len(summary["units"]) == len(set(summary["units"])) == 8
    # the units the sentiment head leans on: four towards positive, four towards negative
    assert [n[-3:] for n in summary["unit_names"]] == ["(+)"] * 4 + ["(-)"] * 4
    assert sorted(s["label"] for s in summary["sentences"]) == ["negative", "negative", "positive", "positive"]
    # the toy task is learnable: the model trained above gets these dev sentences right
    assert all((s["p_positive"] > 0.5) == (s["label"] == "positive") for s in summary["sentences"])
    assert {u.split()[0] for u in summary["unit_names"]} <= {"fwd", "bwd"}


def test_lstm_heatmap_refusals(tmp_path):
    with pytest.raises(RunError, match="no best.pt or last.pt"):
        lstm_heatmap(tmp_path)
    model = build_model("bow", 48, {})
    save_checkpoint(tmp_path / "best.pt", model=model, config=describe("bow", model))
    with pytest.raises(RunError, match="needs model.name=rnn"):
        lstm_heatmap(tmp_path)

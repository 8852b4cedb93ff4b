"""The nanoGPT-style language model and its Kneser–Ney trigram baseline."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from dl.engine.checkpoint import save_checkpoint
from dl.models import build_model, describe, rebuild
from dl.models.ngram import KneserNeyTrigram
from dl.serve.sample import sample
from dl.train.job import run_train
from dl.train.rundir import RunError
from etl.core.config import ConfigError
from jobs.configs import load_config

REPO = Path(__file__).resolve().parents[2]
V = 20
TINY = {"d_model": 32, "heads": 4, "layers": 2, "ff": 64, "max_len": 16}


def padded(texts):
    lengths = torch.tensor([len(t) for t in texts])
    ids = torch.zeros(len(texts), int(lengths.max()), dtype=torch.long)
    for i, t in enumerate(texts):
        ids[i, : len(t)] = torch.tensor(t)
    return ids, lengths


def test_teacher_forcing_targets_and_padding():
    torch.manual_seed(0)
    model = build_model("gpt", V, TINY).eval()
    ids, lengths = padded([[5, 6, 7], [8, 9]])
    inputs, targets, mask = model.teacher_forcing(ids, lengths)
    assert inputs.tolist() == [[2, 5, 6, 7], [2, 8, 9, 0]]
    assert targets.tolist() == [[5, 6, 7, 3], [8, 9, 3, 0]]  # every token, then <eos>; padding never a target
    assert mask.sum().item() == 4 + 3
    out = model(ids, lengths)
    assert out["lm"].shape == (7, V) and out["lm_targets"].tolist() == [5, 6, 7, 3, 8, 9, 3]
    wider = torch.cat([ids, torch.full((2, 5), 11)], 1)  # garbage after the length changes nothing
    torch.testing.assert_close(model(wider, lengths)["lm"], out["lm"], atol=1e-5, rtol=1e-5)


def test_gpt_learns_sequences_rebuilds_and_samples(tmp_path):
    torch.manual_seed(0)
    model = build_model("gpt", V, {**TINY, "dropout": 0.0})
    texts = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16]]
    ids, lengths = padded(texts)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        out = model(ids, lengths)
        loss = torch.nn.functional.cross_entropy(out["lm"], out["lm_targets"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    # the first token is one of three equally likely starts; everything after it is determined
    assert loss.item() < math.log(3) / 4 + 0.05, loss.item()
    assert model.generate([10], max_new=10, temperature=0.5) == [11, 12]  # continues, then stops at <eos>
    save_checkpoint(tmp_path / "lm.pt", model=model, config=describe("gpt", model))
    state = torch.load(tmp_path / "lm.pt", weights_only=True)
    again = rebuild(state["config"])
    again.load_state_dict(state["model"])
    assert again.out.weight.data_ptr() == again.embed.weight.data_ptr()  # still tied after loading
    torch.testing.assert_close(again.eval()(ids, lengths)["lm"], model.eval()(ids, lengths)["lm"])


def test_kneser_ney_distributions_sum_to_one():
    rng = random.Random(0)
    texts = [[rng.randrange(4, 30) for _ in range(rng.randrange(1, 12))] for _ in range(200)]
    kn = KneserNeyTrigram(vocab_size=40).fit(texts)
    for u, v in [(2, 2), (texts[0][0], texts[0][1] if len(texts[0]) > 1 else 3), (2, 35), (36, 37)]:
        total = sum(kn.prob(w, u, v) for w in range(40))
        assert abs(total - 1) < 1e-9, (u, v, total)
    seen = kn.evaluate(texts[:50])
    unseen = kn.evaluate([[rng.randrange(4, 30) for _ in range(8)] for _ in range(50)])
    assert 1 < seen["lm_perplexity"] < unseen["lm_perplexity"] < 40
    assert seen["lm_tokens"] == sum(len(t) + 1 for t in texts[:50])  # every token and each text's end
    with pytest.raises(ValueError, match="discount"):
        KneserNeyTrigram(10, discount=1.5)


def test_lm_trains_through_the_launcher(shards, tmp_path):
    with pytest.raises(ConfigError, match="train.task=lm"):
        load_config("train", REPO / "conf", overrides=["model.name=gpt"])  # a gpt needs the lm task
    cfg = load_config("train", REPO / "conf", overrides=[
        f"data.shards={shards}", f"paths.runs_dir={tmp_path}", "run.name=lm", "model.name=gpt", "train.task=lm",
        "model.gpt.d_model=32", "model.gpt.ff=64", "model.gpt.max_len=16", "train.epochs=3", "optim.lr=0.003",
        "train.batch_size=32", "launcher.num_processes=2", "train.progress=false"])
    summary = run_train(cfg)
    history = json.loads((tmp_path / "train" / "lm" / "history.json").read_text())
    assert summary["weights_identical_across_ranks"] and summary["processes"] == 2
    ppl = [h["dev_lm_perplexity"] for h in history]
    assert ppl[-1] < ppl[0] < 48  # better than uniform over the toy vocabulary, and improving
    assert summary["best_epoch"] == min(range(len(history)), key=lambda i: ppl[i])
    from conftest import WORDS  # tests/model/conftest.py: the toy shards' vocabulary

    rows = sample(tmp_path / "train" / "lm", ["Good"], n=2, max_new=6, seed=1)  # normalized like the ETL: lowercase
    assert len(rows) == 2 and all(r["text"].split()[0] == "good" for r in rows)
    assert all(set(r["text"].split()) <= set(WORDS) - {"<pad>", "<bos>", "<eos>"} for r in rows)
    assert rows == sample(tmp_path / "train" / "lm", ["Good"], n=2, max_new=6, seed=1)  # reproducible by seed
    with pytest.raises(RunError, match="no best.pt"):
        sample(tmp_path, ["x"])

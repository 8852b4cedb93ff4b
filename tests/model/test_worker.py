"""The training worker on small learnable shards of its own: learns, stops early, resumes exactly."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dl.optim import OptimSettings
from dl.worker import WorkerSettings, train_worker

WORDS = ["<pad>", "<unk>", "<bos>", "<eos>", "good", "great", "bad", "awful"] + [f"w{i}" for i in range(40)]


def make_split(path, n, seed):
    g = torch.Generator().manual_seed(seed)
    rows = {"ids": [], "sentiment": [], "sentiment_mask": [], "rating": [], "rating_mask": []}
    for i in range(n):
        positive = bool(torch.rand(1, generator=g) < 0.5)
        cue = 4 + int(torch.randint(0, 2, (1,), generator=g)) + (0 if positive else 2)
        filler = (torch.randint(8, len(WORDS), (int(torch.randint(2, 9, (1,), generator=g)),), generator=g)).tolist()
        ids = filler[: len(filler) // 2] + [cue] + filler[len(filler) // 2:]
        rows["ids"].append(ids)
        rows["sentiment"].append(int(positive))
        rows["sentiment_mask"].append(0 if i % 10 == 0 else 1)  # some labels missing
        rows["rating"].append(4 if positive else 0)
        rows["rating_mask"].append(1)
    path.mkdir(parents=True)
    table = pa.table({"ids": pa.array(rows["ids"], pa.list_(pa.int32())),
                      **{k: pa.array(v, pa.int8()) for k, v in rows.items() if k != "ids"}})
    pq.write_table(table, path / "part-0.parquet", row_group_size=128)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "toy"
    make_split(root / "train", 800, 0)
    make_split(root / "dev", 200, 1)
    payload = json.dumps(WORDS)
    import hashlib

    sha = hashlib.sha256(payload.encode()).hexdigest()
    (root / "_artifacts").mkdir()
    (root / "_artifacts" / "tokenizer-word.json").write_text(json.dumps({"kind": "word", "sha256": sha, "payload": payload}))
    (root / "manifest.json").write_text(json.dumps({"tokenizer_artifact": "_artifacts/tokenizer-word.json",
                                                    "tokenizer_sha256": sha}))
    return root


def settings(shards, **kw):
    base = dict(shards=str(shards), epochs=4, batch_size=32, optim=OptimSettings(name="adam", lr=0.02), seed=3)
    base.update(kw)
    return WorkerSettings(**base)


def test_learns_the_toy_task(shards):
    result = train_worker(settings(shards))
    last = result["history"][-1]
    assert last["dev_sentiment_accuracy"] >= 0.95
    assert result["history"][0]["loss"] > last["loss"]
    assert result["diagnosis"]["verdict"] in {"good", "high variance", "high bias", "high bias and high variance"}


def test_multitask_trains_every_head(shards):
    result = train_worker(settings(shards, task="multitask", epochs=3))
    last = result["history"][-1]
    assert last["dev_sentiment_accuracy"] >= 0.9 and last["dev_rating_accuracy"] >= 0.9
    assert last["dev_rating_reg_mae"] < 1.0


def test_early_stopping_stops_when_dev_stalls(shards):
    result = train_worker(settings(shards, epochs=10, patience=1, optim=OptimSettings(name="sgd", lr=1e-9)))
    assert result["epochs_run"] == 3  # best at epoch 0, then two epochs without improvement


def test_resume_continues_exactly_where_it_stopped(shards, tmp_path):
    full = train_worker(settings(shards, epochs=3, checkpoint_dir=str(tmp_path / "a")))
    part = train_worker(settings(shards, epochs=3, checkpoint_dir=str(tmp_path / "b"), max_epochs_this_call=1))
    assert part["epochs_run"] == 1
    resumed = train_worker(settings(shards, epochs=3, checkpoint_dir=str(tmp_path / "b"), resume=True))
    assert resumed["steps"] == full["steps"]
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in full["history"]])
    for a, b in zip(full["model"].state_dict().values(), resumed["model"].state_dict().values()):
        assert torch.allclose(a, b)


def test_resume_refuses_other_shards(shards, tmp_path):
    train_worker(settings(shards, epochs=1, checkpoint_dir=str(tmp_path)))
    manifest = json.loads((shards / "manifest.json").read_text())
    other = tmp_path / "other"
    import shutil

    shutil.copytree(shards, other)
    (other / "manifest.json").write_text(json.dumps({**manifest, "tokenizer_sha256": "f" * 64}))
    with pytest.raises(ValueError, match="trained with tokenizer"):
        train_worker(settings(other, epochs=2, checkpoint_dir=str(tmp_path), resume=True))

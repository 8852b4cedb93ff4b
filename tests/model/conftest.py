"""The toy shards the training-engine tests share: a learnable sentiment task with some labels missing,
laid out like the text ETL's output (train/, dev/, manifest.json, a word tokenizer artifact)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

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


def toy_shards(root, train_rows: int):
    make_split(root / "train", train_rows, 0)
    make_split(root / "dev", 200, 1)
    payload = json.dumps(WORDS)
    sha = hashlib.sha256(payload.encode()).hexdigest()
    (root / "_artifacts").mkdir()
    (root / "_artifacts" / "tokenizer-word.json").write_text(json.dumps({"kind": "word", "sha256": sha, "payload": payload}))
    (root / "manifest.json").write_text(json.dumps({"tokenizer_artifact": "_artifacts/tokenizer-word.json",
                                                    "tokenizer_sha256": sha}))
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return toy_shards(tmp_path_factory.mktemp("ds") / "toy", 800)  # 720 labelled rows in 7 row groups


@pytest.fixture(scope="module")
def odd_shards(tmp_path_factory):
    """705 labelled training rows: two ranks own 352 and 353 of them, 11 and 12 batches of 32 an epoch, so
    the first rank ends each epoch with a shadow step."""
    return toy_shards(tmp_path_factory.mktemp("ds") / "odd", 784)




@pytest.fixture(scope="module")
def bundle(shards, tmp_path_factory) -> Path:
    """An inference bundle of a small BiLSTM trained on the toy shards (one process)."""
    from dl.serve.bundle import export_bundle
    from dl.train.job import run_train
    from jobs.configs import load_config

    runs = tmp_path_factory.mktemp("runs")
    cfg = load_config("train", Path(__file__).resolve().parents[2] / "conf", overrides=[
        f"data.shards={shards}", f"paths.runs_dir={runs}", "run.name=b", "model.name=rnn", "model.rnn.embed_dim=16",
        "model.rnn.hidden=12", "train.epochs=2", "optim.lr=0.02", "launcher.num_processes=1", "train.progress=false"])
    run_train(cfg)
    return export_bundle(runs / "train" / "b", runs / "bundle")

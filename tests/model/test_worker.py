"""The training worker on small learnable shards of its own: learns, stops early, resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch
from worker_settings import worker_settings  # tests/model/worker_settings.py

from dl.engine.callbacks import EarlyStopping, StopAtTarget
from dl.engine.optim import OptimSettings
from dl.train.worker import train_worker


def settings(shards, **kw):
    base = dict(epochs=4, batch_size=32, optim=OptimSettings(name="adam", lr=0.02), seed=3)
    base.update(kw)
    return worker_settings(shards, **base)


def test_learns_the_toy_task(shards):
    result = train_worker(settings(shards))
    last = result["history"][-1]
    assert last["dev_sentiment_accuracy"] >= 0.95
    assert result["history"][0]["loss"] > last["loss"]
    assert result["diagnosis"]["verdict"] in {"good", "high variance", "high bias", "high bias and high variance"}


def test_length_buckets_learn_the_toy_task_in_the_same_steps(shards):
    plain = train_worker(settings(shards, epochs=2))
    bucketed = train_worker(settings(shards, epochs=2, length_buckets=4))
    assert bucketed["steps"] == plain["steps"]  # the LR schedule was sized for exactly these batches
    assert bucketed["history"][-1]["dev_sentiment_accuracy"] >= 0.95
    assert [h["loss"] for h in bucketed["history"]] != pytest.approx([h["loss"] for h in plain["history"]])


def test_multitask_trains_every_head(shards):
    result = train_worker(settings(shards, task="multitask", epochs=3))
    last = result["history"][-1]
    assert last["dev_sentiment_accuracy"] >= 0.9 and last["dev_rating_accuracy"] >= 0.9
    assert last["dev_rating_reg_mae"] < 1.0


def test_max_norm_caps_every_linear_row_during_training(shards, tmp_path):
    result = train_worker(settings(shards, epochs=2, max_norm=0.3, checkpoint_dir=str(tmp_path)))
    assert result["history"][-1]["dev_sentiment_accuracy"] >= 0.9  # the toy task is still learnt
    weights = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    linear = ["body.0.weight", "heads.sentiment.weight", "heads.rating.weight"]  # bow: hidden layer and heads
    assert max(float(weights[name].norm(dim=1).max()) for name in linear) <= 0.3 + 1e-5
    train_worker(settings(shards, epochs=2, checkpoint_dir=str(tmp_path / "free")))
    free = torch.load(tmp_path / "free" / "last.pt", weights_only=True)["model"]
    assert float(free["heads.sentiment.weight"].norm(dim=1).max()) > 0.3  # unconstrained, they grow past it


def test_early_stopping_stops_when_dev_stalls(shards):
    result = train_worker(settings(shards, epochs=10, callbacks=[EarlyStopping(1)], optim=OptimSettings(name="sgd", lr=1e-9)))
    assert result["epochs_run"] == 3  # best at epoch 0, then two epochs without improvement


def test_training_stops_after_the_epoch_that_reaches_the_target(shards):
    full = train_worker(settings(shards, epochs=4))
    dev = [h["dev_sentiment_accuracy"] for h in full["history"]]
    first = next(i for i, a in enumerate(dev) if a >= 0.9)  # the toy task: learnt within the 4 epochs
    assert first < 3
    result = train_worker(settings(shards, epochs=4, callbacks=[StopAtTarget(0.9)]))
    assert result["stopped_by"] == "target_reached" and result["epochs_run"] == first + 1
    assert [h["dev_sentiment_accuracy"] for h in result["history"]] == pytest.approx(dev[:first + 1])


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
    import hashlib
    import shutil

    from conftest import WORDS

    train_worker(settings(shards, epochs=1, checkpoint_dir=str(tmp_path)))
    other = tmp_path / "other"
    shutil.copytree(shards, other)
    payload = json.dumps(WORDS + ["another"])  # a different tokenizer: ids mean other words
    sha = hashlib.sha256(payload.encode()).hexdigest()
    (other / "_artifacts" / "tokenizer-word.json").write_text(json.dumps({"kind": "word", "sha256": sha,
                                                                          "payload": payload}))
    with pytest.raises(ValueError, match="trained with tokenizer"):
        train_worker(settings(other, epochs=2, checkpoint_dir=str(tmp_path), resume=True))


def test_resume_from_a_mid_epoch_checkpoint_is_exact(shards, tmp_path):
    # 720 labelled rows / 32 = 23 steps per epoch; checkpoints every 10 steps; stopped at step 37 (epoch 1,
    # batch 14), so the last checkpoint is step 30: epoch 1 after 7 of its batches
    kw = dict(epochs=2, checkpoint_every=10, model_options={"dropout": 0.3})
    full = train_worker(settings(shards, checkpoint_dir=str(tmp_path / "a"), **kw))
    part = train_worker(settings(shards, checkpoint_dir=str(tmp_path / "b"), stop_after_steps=37, **kw))
    assert part["interrupted"] and part["steps"] == 37
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"], state["metrics"]["batches_done"]) == (1, 30, 7)
    resumed = train_worker(settings(shards, checkpoint_dir=str(tmp_path / "b"), resume=True, **kw))
    assert resumed["steps"] == full["steps"] == 46
    assert resumed["weights_sha256"] == full["weights_sha256"]  # same batches, same dropout masks


def test_bf16_autocast_trains(shards):
    result = train_worker(settings(shards, amp="bf16"))
    assert result["history"][-1]["dev_sentiment_accuracy"] >= 0.95
    fp32 = train_worker(settings(shards))
    assert result["weights_sha256"] != fp32["weights_sha256"]  # autocast really ran in bf16


def test_fp16_and_cuda_are_refused_without_a_gpu_fake_free(shards):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train_worker(settings(shards, amp="fp16"))
    with pytest.raises(ValueError, match="no CUDA device"):
        train_worker(settings(shards, device="cuda"))

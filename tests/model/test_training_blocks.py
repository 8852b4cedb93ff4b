"""Optimizers, schedules, penalties, clipping, metrics, diagnosis and checkpoints of the training engine."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from dl.engine.checkpoint import load_checkpoint, save_checkpoint
from dl.engine.metrics import (
    bias_variance,
    classification_report,
    coverage,
    feature_moments,
    frechet_distance,
    rating_errors,
)
from dl.engine.optim import (
    OptimSettings,
    ScheduleSettings,
    build_optimizer,
    build_scheduler,
    clip_gradients,
    constrain_max_norm,
    lr_factor,
    param_groups,
    penalty,
)


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def train_steps(opt_settings: OptimSettings, steps: int = 20) -> tuple[list[float], torch.nn.Module]:
    model = tiny()
    opt = build_optimizer(model.parameters(), opt_settings)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()  # learnable
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, model


@pytest.mark.parametrize("name, cls, lr", [("sgd", torch.optim.SGD, 0.5), ("adagrad", torch.optim.Adagrad, 0.1),
                                          ("rmsprop", torch.optim.RMSprop, 0.01), ("adadelta", torch.optim.Adadelta, 1.0),
                                          ("adam", torch.optim.Adam, 0.01), ("adamw", torch.optim.AdamW, 0.01)])
def test_every_optimizer_is_built_and_reduces_the_loss(name, cls, lr):
    losses, _ = train_steps(OptimSettings(name=name, lr=lr), steps=100)
    assert isinstance(build_optimizer(tiny().parameters(), OptimSettings(name=name, lr=lr)), cls)
    assert losses[-1] < losses[0] * 0.9


def test_momentum_and_nesterov_change_sgd_and_are_validated():
    plain, _ = train_steps(OptimSettings(name="sgd", lr=0.1))
    momentum, _ = train_steps(OptimSettings(name="sgd", lr=0.1, momentum=0.9))
    nesterov, _ = train_steps(OptimSettings(name="sgd", lr=0.1, momentum=0.9, nesterov=True))
    assert momentum[-1] < plain[-1] and nesterov != momentum
    opt = build_optimizer(tiny().parameters(), OptimSettings(name="sgd", momentum=0.9, nesterov=True))
    assert opt.param_groups[0]["nesterov"] is True and opt.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="nesterov=true needs optim.momentum > 0"):
        build_optimizer(tiny().parameters(), OptimSettings(name="sgd", nesterov=True))



def test_embedding_lr_scale_moves_the_tables_at_that_share_of_the_rate():
    def first_step(scale):  # SGD: a step is lr x gradient, so the share shows exactly
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Flatten(), torch.nn.Linear(12, 2))
        before = [p.detach().clone() for p in model.parameters()]
        s = OptimSettings(name="sgd", lr=0.1, embedding_lr_scale=scale)
        opt = build_optimizer(param_groups(model, s), s)
        sched = build_scheduler(opt, ScheduleSettings(name="cosine"), total_steps=2)
        torch.nn.functional.cross_entropy(model(torch.tensor([[1, 2, 3]])), torch.tensor([1])).backward()
        opt.step()
        sched.step()
        return [(p.detach() - b).abs().sum().item() for p, b in zip(model.parameters(), before, strict=True)], opt

    (table, *rest), _ = first_step(1.0)
    (table_slow, *rest_same), opt = first_step(0.1)
    assert table_slow == pytest.approx(table * 0.1, rel=1e-4) and rest_same == pytest.approx(rest, rel=1e-6)
    assert [g["lr"] / g["initial_lr"] for g in opt.param_groups] == pytest.approx([0.5, 0.5])  # one schedule
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # the logged rate is the rest's
    with pytest.raises(ValueError, match="no embedding table"):
        param_groups(tiny(), OptimSettings(embedding_lr_scale=0.1))

def test_weight_decay_shrinks_weights():
    _, free = train_steps(OptimSettings(name="adamw", lr=0.01), steps=50)
    _, decayed = train_steps(OptimSettings(name="adamw", lr=0.01, weight_decay=0.5), steps=50)
    norm = lambda m: sum(p.norm() ** 2 for p in m.parameters() if p.dim() > 1)  # noqa: E731
    assert norm(decayed) < norm(free)


@pytest.mark.parametrize("settings, expected", [
    (ScheduleSettings(name="constant"), [1, 1, 1, 1]),
    (ScheduleSettings(name="step", step_size=2, gamma=0.5), [1, 1, 0.5, 0.5]),
    (ScheduleSettings(name="exponential", step_size=1, gamma=0.5), [1, 0.5, 0.25, 0.125]),
    (ScheduleSettings(name="linear", decay_steps=2, final_ratio=0.2), [1, 0.6, 0.2, 0.2]),
    (ScheduleSettings(name="cosine", final_ratio=0.0), [1, 0.5, 0.0, 0.0]),  # over total_steps=2
    (ScheduleSettings(name="constant", warmup_steps=2), [0.5, 1, 1, 1]),
    (ScheduleSettings(name="step", warmup_steps=1, step_size=1, gamma=0.5), [1, 1, 0.5, 0.25]),
])
def test_schedules(settings, expected):
    total = 2
    assert [lr_factor(settings, step, total) for step in range(4)] == pytest.approx(expected)
    opt = build_optimizer(tiny().parameters(), OptimSettings(name="sgd", lr=0.1))
    sched = build_scheduler(opt, settings, total_steps=total)
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.1 * f for f in expected])


def test_reduce_on_plateau_cuts_the_rate_when_the_dev_metric_stalls():
    opt = build_optimizer(tiny().parameters(), OptimSettings(name="sgd", lr=0.1))
    sched = build_scheduler(opt, ScheduleSettings(name="plateau", patience=1, gamma=0.5), total_steps=0)
    for metric in (0.5, 0.6, 0.6, 0.6):
        sched.step(metric)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_l1_l2_penalties_and_clipping():
    model = tiny()
    weights = [p for p in model.parameters() if p.dim() > 1]
    assert penalty(model).item() == 0
    assert penalty(model, l1=0.1).item() == pytest.approx(0.1 * sum(p.abs().sum().item() for p in weights), rel=1e-5)
    assert penalty(model, l2=0.1).item() == pytest.approx(0.1 * sum((p ** 2).sum().item() for p in weights), rel=1e-5)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    clip_gradients(model, max_value=1.0)
    assert max(p.grad.abs().max().item() for p in model.parameters()) == 1.0
    before = clip_gradients(model, max_norm=0.5)
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())).item()
    assert before > 0.5 and total == pytest.approx(0.5, rel=1e-4)


def test_max_norm_rescales_only_the_rows_above_it():
    model = tiny()
    with torch.no_grad():
        model[0].weight[0] = torch.tensor([3.0, 4.0, 0.0, 0.0])  # norm 5: scaled to 2
        model[0].weight[1] = torch.tensor([0.6, 0.8, 0.0, 0.0])  # norm 1: left alone
    before = [p.clone() for p in model.parameters()]
    constrain_max_norm(model, None)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    constrain_max_norm(model, 2.0)
    assert model[0].weight[0].tolist() == pytest.approx([1.2, 1.6, 0.0, 0.0], rel=1e-5)
    assert model[0].weight[1].tolist() == pytest.approx([0.6, 0.8, 0.0, 0.0])
    for layer in (model[0], model[2]):
        assert float(layer.weight.norm(dim=1).max()) <= 2.0 + 1e-5
    assert torch.equal(model[0].bias, before[1])  # biases are not constrained


def test_classification_metrics_by_hand():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    r = classification_report(y_true, y_pred, 3)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["per_class"][0] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert r["per_class"][1]["precision"] == pytest.approx(2 / 3) and r["per_class"][1]["recall"] == 1.0
    assert r["per_class"][2] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert r["f1_macro"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert r["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert rating_errors([1, 2, 3], [1, 4, 2]) == {"mae": 1.0, "rmse": pytest.approx((5 / 3) ** 0.5)}
    assert coverage([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]], 0.75) == pytest.approx(2 / 3)


@pytest.mark.parametrize("train, dev, verdict", [(0.15, 0.16, "high bias"), (0.01, 0.10, "high variance"),
                                                 (0.15, 0.30, "high bias and high variance"), (0.05, 0.06, "good")])
def test_bias_variance_verdict(train, dev, verdict):
    d = bias_variance(train, dev, optimal_error=0.04)
    assert d.verdict == verdict and d.advice


def test_checkpoint_round_trip_restores_training_state_and_rng(tmp_path):
    losses, model = train_steps(OptimSettings(name="adam", lr=0.01), steps=5)
    opt = build_optimizer(model.parameters(), OptimSettings(name="adam", lr=0.01))
    sched = build_scheduler(opt, ScheduleSettings(name="step", step_size=1, gamma=0.5), total_steps=10)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    sched.step()
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    path = save_checkpoint(tmp_path / "ckpt" / "last.pt", model=model, optimizer=opt, scheduler=sched, epoch=2,
                           step=7, config={"model": "tiny"}, tokenizer_sha256="abc", label_map={"0": "neg"})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left

    fresh = tiny()
    opt2 = build_optimizer(fresh.parameters(), OptimSettings(name="adam", lr=0.01))
    sched2 = build_scheduler(opt2, ScheduleSettings(name="step", step_size=1, gamma=0.5), total_steps=10)
    state = load_checkpoint(path, model=fresh, optimizer=opt2, scheduler=sched2)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.005)
    assert (state["epoch"], state["step"], state["tokenizer_sha256"], state["label_map"]) == (2, 7, "abc", {"0": "neg"})


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    """FID's formula on samples of known Gaussians: N(0, I) against N(m, 4I) in d dimensions is
    |m|² + d(1 + 4 − 2·2) = |m|² + d; moments summed over parts are the moments of the whole."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40_000, 3))
    b = rng.normal(size=(40_000, 3)) * 2 + np.array([1.0, 0.0, 2.0])
    assert frechet_distance(feature_moments(a), feature_moments(a)) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(feature_moments(a), feature_moments(b)) == pytest.approx(5.0 + 3.0, rel=0.02)
    halves = feature_moments(b[:15_000]) + feature_moments(b[15_000:])
    assert frechet_distance(feature_moments(a), halves) == pytest.approx(
        frechet_distance(feature_moments(a), feature_moments(b)), rel=1e-9)


def test_dcgan_shapes_and_the_conditional_discriminator_judges_the_claimed_class():
    from dl.models import model_config
    from dl.models.gan import DCGAN

    gan = DCGAN(model_config("dcgan", {"width": 8, "z_dim": 16, "conditional": True}, channels=1, size=28,
                             num_classes=10))
    z, labels = gan.noise(6, torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = gan(z, labels)
    assert images.shape == (6, 1, 28, 28) and float(images.abs().max()) <= 1.0  # tanh: [-1, 1]
    assert gan.discriminator(images, labels).shape == (6,)
    with torch.no_grad():  # the same images claimed as another class get another score: the projection term
        gan.discriminator.classes.weight[0].fill_(1.0)
    other = gan.discriminator(images, torch.zeros_like(labels))
    assert not torch.allclose(other, gan.discriminator(images, labels))
    samples = gan.sample(4, torch.tensor([1, 1, 2, 2]), seed=3)
    assert samples.shape == (4, 1, 28, 28) and 0 <= float(samples.min()) and float(samples.max()) <= 1
    assert torch.equal(samples, gan.sample(4, torch.tensor([1, 1, 2, 2]), seed=3))  # seeded: reproducible
    with pytest.raises(ValueError, match="not divisible by 4"):
        DCGAN(model_config("dcgan", {}, channels=1, size=30, num_classes=10))

"""Optimizers and learning-rate schedules by config (the classic training techniques as switches)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator

from etl.core.config import Section
from etl.core.errors import InputError


class OptimSettings(Section):
    name: Literal["sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1, description="sgd and rmsprop")
    nesterov: bool = Field(False, description="sgd only; needs momentum > 0")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (decoupled for adamw)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="adam/adamw; a YAML list [b1, b2]")
    eps: float = Field(1e-8, gt=0)
    rho: float = Field(0.9, gt=0, lt=1, description="adadelta's decay")
    alpha: float = Field(0.99, gt=0, lt=1, description="rmsprop's smoothing")
    embedding_lr_scale: float = Field(1.0, gt=0, description="learning rate of the embedding tables as a share of "
                                      "lr, e.g. 0.1 to move pretrained vectors slowly")

    @field_validator("betas", mode="before")
    @classmethod
    def _betas(cls, value):  # YAML and --set give a list; strict sections take only a tuple otherwise
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _nesterov(self):
        if self.nesterov and self.momentum <= 0:
            raise ValueError("optim.nesterov=true needs optim.momentum > 0")
        return self


class ScheduleSettings(Section):
    name: Literal["constant", "step", "exponential", "linear", "cosine", "plateau"] = "constant"
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from 0 before the schedule (not plateau)")
    step_size: int = Field(1000, ge=1, description="step: decay every step_size steps")
    gamma: float = Field(0.1, gt=0, le=1, description="step/exponential/plateau decay factor")
    decay_steps: int = Field(1000, ge=1, description="linear: steps to go from lr to final_ratio*lr")
    final_ratio: float = Field(0.0, ge=0, le=1, description="linear/cosine: floor as a share of lr")
    patience: int = Field(2, ge=0, description="plateau: evaluations without improvement")


def param_groups(model: torch.nn.Module, s: OptimSettings) -> list:
    """``model``'s parameters for ``build_optimizer``: one group, or with ``embedding_lr_scale`` two, the
    rest first (its learning rate is the one logged) and every ``nn.Embedding``'s weights at the scaled rate."""
    if s.embedding_lr_scale == 1.0:
        return list(model.parameters())
    embedding = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    rest = [p for p in model.parameters() if id(p) not in embedding]
    tables = [p for p in model.parameters() if id(p) in embedding]
    if not tables:
        raise InputError("optim.embedding_lr_scale is set but the model has no embedding table")
    return [{"params": rest}, {"params": tables, "lr": s.lr * s.embedding_lr_scale}]


def build_optimizer(params: Iterable, s: OptimSettings) -> torch.optim.Optimizer:
    """The optimizer ``s`` names, with only the options that optimizer understands; ``params`` are
    parameters or parameter groups (``param_groups``)."""
    params = list(params)
    if s.name == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov,
                               weight_decay=s.weight_decay)
    if s.name == "adagrad":
        return torch.optim.Adagrad(params, lr=s.lr, weight_decay=s.weight_decay, eps=s.eps)
    if s.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=s.lr, alpha=s.alpha, momentum=s.momentum, eps=s.eps,
                                   weight_decay=s.weight_decay)
    if s.name == "adadelta":
        return torch.optim.Adadelta(params, lr=s.lr, rho=s.rho, eps=s.eps, weight_decay=s.weight_decay)
    if s.name == "adam":
        return torch.optim.Adam(params, lr=s.lr, betas=s.betas, eps=s.eps, weight_decay=s.weight_decay)
    return torch.optim.AdamW(params, lr=s.lr, betas=s.betas, eps=s.eps, weight_decay=s.weight_decay)


class Optimizers:
    """Optimizers that step in turn, one per part of the model (a GAN's discriminator and generator), seen as one
    by what treats a run's optimizer as a whole: the checkpoint (one state per part), the learning-rate log and
    trace (every part's groups, in order). ``named[part]`` is each part's own."""

    def __init__(self, named: dict) -> None:
        self.named = dict(named)

    @property
    def param_groups(self) -> list:
        return [g for o in self.named.values() for g in o.param_groups]

    def state_dict(self) -> dict:
        return {name: o.state_dict() for name, o in self.named.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, o in self.named.items():
            o.load_state_dict(state[name])


class Schedulers(Optimizers):
    """One learning-rate schedule per part, like ``Optimizers``; ``step`` steps them all (plateau: with the
    dev metric)."""

    def step(self, *args) -> None:
        for s in self.named.values():
            s.step(*args)


def lr_factor(s: ScheduleSettings, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based) for the per-step schedules."""
    if s.warmup_steps and step < s.warmup_steps:
        return (step + 1) / s.warmup_steps
    t = step - s.warmup_steps
    if s.name == "step":
        return s.gamma ** (t // s.step_size)
    if s.name == "exponential":
        return s.gamma ** (t / s.step_size)
    if s.name == "linear":  # linear decay over decay_steps, then constant at final_ratio
        return 1.0 - (1.0 - s.final_ratio) * min(t, s.decay_steps) / s.decay_steps
    if s.name == "cosine":
        span = max(1, total_steps - s.warmup_steps)
        return s.final_ratio + (1 - s.final_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, span) / span))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, s: ScheduleSettings, total_steps: int):
    """A scheduler stepped once per optimizer step, or ReduceLROnPlateau stepped with the dev metric
    (higher is better) after each evaluation."""
    if s.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=s.gamma, patience=s.patience)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(s, step, total_steps))


def penalty(model: torch.nn.Module, l1: float = 0.0, l2: float = 0.0) -> torch.Tensor:
    """Explicit L1/L2 penalties on weights (not biases or norms), added to the loss."""
    total = torch.zeros((), device=next(model.parameters()).device)
    if not l1 and not l2:
        return total
    for name, p in model.named_parameters():
        if p.requires_grad and p.dim() > 1:
            if l1:
                total = total + l1 * p.abs().sum()
            if l2:
                total = total + l2 * p.pow(2).sum()
    return total


def constrain_max_norm(model: torch.nn.Module, max_norm: float | None = None) -> None:
    """Max-norm regularisation (Srivastava et al. 2014; Kim 2014 uses 3): after an optimizer step, every row
    of every ``nn.Linear`` weight — one unit's incoming weights — whose L2 norm exceeds ``max_norm`` is
    scaled back to it. Deterministic, so data-parallel replicas stay identical."""
    if not max_norm:
        return
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.renorm_(2, 0, max_norm)


def clip_gradients(model: torch.nn.Module, max_norm: float | None = None, max_value: float | None = None) -> float:
    """Clip by global norm and/or by value; returns the gradient norm before clipping (or 0)."""
    norm = 0.0
    if max_value:
        torch.nn.utils.clip_grad_value_(model.parameters(), max_value)
    if max_norm:
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    return norm

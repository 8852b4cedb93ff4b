"""Checkpoints that a run can be rebuilt and resumed from: model, optimizer, scheduler, progress, RNG
states, config, tokenizer hash and label map. Written atomically (temporary file, then rename), so a
crash mid-write leaves the previous checkpoint intact; loaded with ``weights_only=True``."""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    np.random.set_state(_tuples(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value):
    """Safe loading returns lists where the RNG APIs want tuples."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def save_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, optimizer=None, scheduler=None,
                    epoch: int = 0, step: int = 0, config: dict | None = None, tokenizer_sha256: str = "",
                    label_map: dict | None = None, metrics: dict | None = None) -> Path:
    """Write the checkpoint atomically; returns its path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": epoch, "step": step, "rng": _plain_rng(rng_state()),
        "config": config or {}, "tokenizer_sha256": tokenizer_sha256, "label_map": label_map or {},
        "metrics": metrics or {},
    }
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _plain_rng(state: dict[str, Any]) -> dict[str, Any]:
    """RNG states as tensors, lists and numbers only, so ``weights_only=True`` can load them."""
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    return {"python": [state["python"][0], list(state["python"][1]), state["python"][2]],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "torch": state["torch"], **({"cuda": state["cuda"]} if "cuda" in state else {})}


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """The checkpoint's contents (safe loading: tensors and plain data only)."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def restore(state: dict[str, Any], *, model: torch.nn.Module | None = None, optimizer=None, scheduler=None,
            restore_rng: bool = True) -> dict[str, Any]:
    """Load a read checkpoint into the given objects (those that are not None); returns ``state``."""
    if model is not None:
        model.load_state_dict(state["model"])
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        rng = state["rng"]
        kind, keys, pos, has_gauss, gauss = rng["numpy"]
        set_rng_state({"python": (rng["python"][0], tuple(rng["python"][1]), rng["python"][2]),
                       "numpy": (kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss),
                       "torch": rng["torch"], **({"cuda": rng["cuda"]} if "cuda" in rng else {})})
    return state


def run_weights(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint a `lakedl train` run directory is read from: ``best.pt`` (the weights chosen on dev), else
    ``last.pt``; None when it holds neither."""
    return next((Path(run_dir) / n for n in ("best.pt", "last.pt") if (Path(run_dir) / n).is_file()), None)


def load_model(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model a checkpoint file holds, rebuilt from its stored config with its weights, in eval mode, and
    the checkpoint's contents."""
    from dl.models import rebuild

    state = read_checkpoint(path)
    model = rebuild(state["config"])
    model.load_state_dict(state["model"])
    return model.eval(), state


def load_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module | None = None, optimizer=None,
                    scheduler=None, restore_rng: bool = True, map_location="cpu") -> dict[str, Any]:
    """Read the checkpoint and load it into the given objects; returns the whole checkpoint."""
    return restore(read_checkpoint(path, map_location), model=model, optimizer=optimizer, scheduler=scheduler,
                   restore_rng=restore_rng)

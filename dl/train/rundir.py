"""The run-directory contract: where a ``lakedl train`` run lives and how other commands (bundle export,
report, sample, viz) load its model. A run directory holds ``best.pt`` (the weights chosen on dev),
``last.pt`` (resume), ``run.json`` (the MLflow run id), ``config.yml``, ``history.json``, ``curves.png``,
``result.json`` and ``report.html``."""

from __future__ import annotations

import os
from pathlib import Path

from dl.train.config import TrainConfig
from etl.core.errors import LakedlError


def run_dir(cfg: TrainConfig, name: str) -> Path:
    return Path(cfg.run.dir) if cfg.run.dir else Path(cfg.paths.runs_dir) / "train" / name


class RunError(LakedlError, RuntimeError):
    """A finished run cannot be used as asked (no checkpoint, another model family, another vocabulary)."""


class NoCheckpointError(RunError, FileNotFoundError):
    """The run directory holds neither best.pt nor last.pt."""


def load_weights(run_dir: str | os.PathLike):
    """The model of a `lakedl train` run directory (``best.pt``, else ``last.pt``) rebuilt from its stored
    config, in eval mode, with the checkpoint state and the file it came from."""
    from dl.engine.checkpoint import load_model, run_weights

    weights = run_weights(run_dir)
    if weights is None:
        raise NoCheckpointError(f"{run_dir}: no best.pt or last.pt; point --run at a finished `lakedl train` run "
                                "directory")
    model, state = load_model(weights)
    return model, state, weights


def load_run(run_dir: str | os.PathLike, family: str | None, shards: str | os.PathLike | None = None, purpose: str = ""):
    """The trained model of a `lakedl train` run directory (``best.pt``, else ``last.pt``), in eval mode,
    with its checkpoint state, the shards it was trained on (or ``shards``) and their tokenizer; refuses
    another model family than ``family`` (None: any) and shards tokenized with another vocabulary."""
    from dl.data.text import shard_tokenizer
    from etl.core.config import read_yaml

    run_dir = Path(run_dir)
    model, state, weights = load_weights(run_dir)
    if family is not None and state["config"].get("model") != family:
        raise RunError(f"{weights} holds a {state['config'].get('model')!r} model; {purpose or 'this'} needs "
                       f"model.name={family}")
    shards = Path(shards) if shards else Path(read_yaml(run_dir / "config.yml")["data"]["shards"])
    tokenizer = shard_tokenizer(shards)
    if state.get("tokenizer_sha256") and tokenizer.sha256 != state["tokenizer_sha256"]:
        raise RunError(f"{shards} was tokenized with another vocabulary than {weights} was trained on")
    return model, state, shards, tokenizer

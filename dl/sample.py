"""Text from a trained language-model run (``lakedl sample --run RUN_DIR --prompt ...``): the prompt is
normalized and tokenized exactly as the ETL did for the run's shards, then continued by the model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from dl.models import rebuild


class SampleError(RuntimeError):
    """The run cannot be sampled from; the message says why."""


def load_lm(run_dir: str | os.PathLike, shards: str | os.PathLike | None = None):
    """``(model, tokenizer, normalizer)`` of a ``model.name=gpt`` run (its best.pt, else last.pt)."""
    from dl.worker import shard_tokenizer
    from etl.config import read_yaml
    from etl.textprep import Normalizer

    run_dir = Path(run_dir)
    weights = next((run_dir / n for n in ("best.pt", "last.pt") if (run_dir / n).is_file()), None)
    if weights is None:
        raise SampleError(f"{run_dir}: no best.pt or last.pt; point --run at a finished `lakedl train` run directory")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if state["config"].get("model") != "gpt":
        raise SampleError(f"{weights} holds a {state['config'].get('model')!r} model; sampling needs model.name=gpt")
    model = rebuild(state["config"])
    model.load_state_dict(state["model"])
    shards = Path(shards) if shards else Path(read_yaml(run_dir / "config.yml")["data"]["shards"])
    tokenizer = shard_tokenizer(shards)
    if tokenizer.sha256 != state.get("tokenizer_sha256", tokenizer.sha256):
        raise SampleError(f"{shards} was tokenized with another vocabulary than {weights} was trained on")
    settings = json.loads((shards / "manifest.json").read_text()).get("config", {}).get("normalize", {})
    normalizer = Normalizer(**{k: v for k, v in settings.items() if k in Normalizer.__dataclass_fields__})
    return model.eval(), tokenizer, normalizer


def sample(run_dir: str | os.PathLike, prompts: list[str], n: int = 1, max_new: int = 30, temperature: float = 0.8,
           top_k: int | None = 40, seed: int = 0) -> list[dict]:
    """``n`` continuations of each prompt (reproducible with ``seed``)."""
    model, tokenizer, normalizer = load_lm(run_dir)
    vocab = tokenizer.vocabulary()
    generator = torch.Generator().manual_seed(seed)
    out = []
    for prompt in prompts:
        ids = tokenizer.encode([normalizer(prompt)], model.cfg.max_len)[0] if prompt.strip() else []
        for _ in range(n):
            new = model.generate(ids, max_new, temperature, top_k, generator)
            out.append({"prompt": prompt, "text": " ".join(vocab[i] for i in [*ids, *new])})
    return out

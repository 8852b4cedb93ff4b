"""Text from a trained language-model run (``lakedl sample --run RUN_DIR --prompt ...``): the prompt is
normalized and tokenized exactly as the ETL did for the run's shards, then continued by the model."""

from __future__ import annotations

import json
import os

import torch


def load_lm(run_dir: str | os.PathLike, shards: str | os.PathLike | None = None):
    """``(model, tokenizer, normalizer)`` of a ``model.name=gpt`` run (its best.pt, else last.pt)."""
    from dl.train.rundir import load_run
    from etl.text.textprep import Normalizer

    model, _, shards, tokenizer = load_run(run_dir, "gpt", shards, purpose="sampling")
    settings = json.loads((shards / "manifest.json").read_text()).get("config", {}).get("normalize", {})
    return model, tokenizer, Normalizer.from_dict(settings)


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

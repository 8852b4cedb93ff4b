"""Samples from a trained generative run (``lakedl sample --run RUN_DIR``): text from a language model (the
prompt is normalized and tokenized exactly as the ETL did for the run's shards, then continued by the model),
or a PNG grid of images from a GAN (optionally of one class)."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def sample_images(run_dir: str | os.PathLike, n: int = 64, label: str | None = None, seed: int = 0,
                  out: str | os.PathLike | None = None) -> tuple[Path, list[str]]:
    """``n`` images from a trained GAN run (``model.name=dcgan``) as one PNG grid (default ``<run>/sample.png``),
    reproducible with ``seed``; ``label`` (a class name or index) for a conditional GAN, else its classes in turn
    (one per row when ``n`` is a multiple of their number). Returns the PNG and each image's class name."""
    from dl.data.images import save_grid
    from dl.train.rundir import RunError, load_weights

    model, state, weights = load_weights(run_dir)
    if state["config"].get("model") != "dcgan":
        raise RunError(f"{weights} holds a {state['config'].get('model')!r} model; image samples need a GAN run "
                       "(model.name=dcgan, train.task=generate); text samples: --prompt with a gpt run")
    classes = (state.get("label_map") or {}).get("class") or [str(i) for i in range(model.cfg.num_classes)]
    if label is not None and not model.cfg.conditional:
        raise RunError(f"{weights} is an unconditional GAN: drop --class (a GAN trained with "
                       "model.dcgan.conditional=true draws a chosen class)")
    labels, cols = None, 8
    if model.cfg.conditional:
        if label is None:
            per = max(1, n // len(classes))
            labels = torch.arange(n) // per % len(classes)
            cols = per if n % len(classes) == 0 else 8  # a row per class
        else:
            index = classes.index(label) if label in classes else int(label) if str(label).isdigit() else -1
            if not 0 <= index < len(classes):
                raise RunError(f"--class {label!r}: one of {', '.join(classes)} (or 0-{len(classes) - 1})")
            labels = torch.full((n,), index)
    path = save_grid(model.sample(n, labels, seed=seed), cols, Path(out) if out else Path(run_dir) / "sample.png")
    return path, [classes[int(i)] for i in labels] if labels is not None else []

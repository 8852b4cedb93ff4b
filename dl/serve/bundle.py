"""Inference bundles: what batch scoring needs from a trained run, in a directory that loads without
pickle — ``weights.safetensors``, ``tokenizer.json`` (the ETL's tokenizer artifact, content-hashed) and
``bundle.json`` (model config, label map, the ETL's normalization and max_len, hashes, model version).

``export_bundle(run_dir, out)`` writes one (``lakedl bundle export``); ``load_bundle(path)`` refuses a
bundle whose tokenizer or weights do not match the hashes recorded at export, and ``Bundle.predict``
normalizes, tokenizes and scores texts exactly as the ETL and training did. ``quantize="int8"`` makes a bundle
whose Linear and LSTM layers run as int8 (PyTorch dynamic quantization, applied when it loads: the weights file
stays float, the model version says int8)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from etl.core.errors import LakedlError
from etl.sources.fetch import sha256

FORMAT = 1
FILES = ("bundle.json", "weights.safetensors", "tokenizer.json")
QUANTIZE = ("none", "int8")


class BundleError(LakedlError, ValueError):
    """The bundle is incomplete, corrupt or does not match itself; the message says which."""


def export_bundle(run_dir: str | os.PathLike, out: str | os.PathLike, shards: str | os.PathLike | None = None,
                  quantize: str = "none") -> Path:
    """Write the bundle of a finished classifier run (its best.pt, else last.pt) to ``out``; ``quantize``:
    ``none`` or ``int8`` (dynamic quantization of Linear/LSTM layers when the bundle loads)."""
    from safetensors.torch import save_file

    from dl.train.rundir import load_run

    if quantize not in QUANTIZE:
        raise BundleError(f"quantize={quantize!r}: expected one of {', '.join(QUANTIZE)}")

    model, state, shards, tokenizer = load_run(run_dir, None, shards)
    if state["config"]["model"] == "gpt":
        raise BundleError("a language model (gpt) has no sentiment to score; bundle a classifier run")
    manifest = json.loads((Path(shards) / "manifest.json").read_text())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(weights, str(out / "weights.safetensors"))
    tokenizer.save(out / "tokenizer.json")
    weights_sha = sha256(out / "weights.safetensors")
    meta = {
        "format": FORMAT, "config": state["config"], "label_map": state.get("label_map") or {},
        "tokenizer_sha256": tokenizer.sha256, "weights_sha256": weights_sha,
        "model_version": f"{Path(run_dir).name}-{weights_sha[:12]}" + ("-int8" if quantize == "int8" else ""),
        "quantize": quantize,
        "normalize": manifest.get("config", {}).get("normalize", {}), "max_len": manifest.get("max_len", 128),
        "source_run": str(Path(run_dir).absolute()), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = out / "bundle.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(out / "bundle.json")  # a bundle.json is whole or absent, never half-written
    return out


@dataclass
class Bundle:
    path: Path
    meta: dict
    model: torch.nn.Module
    tokenizer: object
    normalizer: object

    @property
    def version(self) -> str:
        return self.meta["model_version"]

    @property
    def labels(self) -> list[str]:
        return list(self.meta["label_map"].get("sentiment", ["negative", "positive"]))

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids and lengths of a batch of raw texts (normalized and encoded as one Arrow batch)."""
        offsets, flat = self._encode_flat(texts)
        return self._padded(offsets, flat, np.arange(len(offsets) - 1))

    def _encode_flat(self, texts) -> tuple[np.ndarray, np.ndarray]:
        return self.tokenizer.encode_flat(self.normalizer.batch(texts), int(self.meta["max_len"]))

    def _padded(self, offsets: np.ndarray, flat: np.ndarray, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids of ``rows`` padded to the longest of them, and their lengths (an empty text: one pad token)."""
        counts = (offsets[rows + 1] - offsets[rows]).astype(np.int64)
        lengths = np.maximum(counts, 1)
        width = int(lengths.max()) if len(rows) else 1
        padded = np.full((len(rows), width), self.tokenizer.pad_id, np.int64)
        mask = np.arange(width)[None, :] < counts[:, None]
        starts = np.repeat(offsets[rows].astype(np.int64), counts)
        padded[mask] = flat[starts + (np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts))]
        return torch.from_numpy(padded), torch.from_numpy(lengths)

    @torch.no_grad()
    def predict(self, texts: list[str], batch_size: int = 256, device: str | torch.device = "cpu") -> pd.DataFrame:
        """One row per text, in order: ``label``, ``p_<label>`` per class, ``model_version``. The texts are
        encoded at once and scored in batches of similar length (sorted by token count), so a batch pads to
        little more than its own texts; each text's result does not depend on its neighbours."""
        self.model.to(device)
        offsets, flat = self._encode_flat(texts)
        order = np.argsort(np.diff(offsets), kind="stable")
        p = np.zeros((len(texts), len(self.labels)))
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            ids, lengths = self._padded(offsets, flat, rows)
            logits = self.model(ids.to(device), lengths.to(device))["sentiment"]
            p[rows] = torch.softmax(logits.float(), -1).cpu().numpy()
        out = pd.DataFrame({f"p_{name}": p[:, i] for i, name in enumerate(self.labels)})
        out.insert(0, "label", [self.labels[i] for i in p.argmax(1)] if len(p) else [])
        out["model_version"] = self.version
        return out


REQUIRED = ("format", "config", "label_map", "tokenizer_sha256", "weights_sha256", "model_version", "max_len")


def read_meta(path: str | os.PathLike) -> dict:
    """``bundle.json`` of the bundle at ``path``, refused with a BundleError when it is not a JSON object
    holding every key a bundle needs (a hand-edited or truncated file)."""
    meta_path = Path(path) / "bundle.json"
    try:
        meta = json.loads(meta_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{meta_path}: not valid JSON ({exc}); re-export the bundle with "
                          "`lakedl bundle export --run RUN_DIR --out DIR`") from exc
    if not isinstance(meta, dict):
        raise BundleError(f"{meta_path}: expected a JSON object, found {type(meta).__name__}; re-export the bundle")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise BundleError(f"{meta_path}: lacks {', '.join(missing)}; re-export the bundle from its run")
    if not isinstance(meta["label_map"], dict) or not isinstance(meta["config"], dict):
        raise BundleError(f"{meta_path}: label_map and config must be JSON objects; re-export the bundle")
    return meta


def load_bundle(path: str | os.PathLike) -> Bundle:
    from safetensors.torch import load_file

    from dl.models import rebuild
    from etl.text.textprep import Normalizer, TextTokenizer

    path = Path(path)
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise BundleError(f"{path}: not an inference bundle (missing {', '.join(missing)}); "
                          "write one with `lakedl bundle export --run RUN_DIR --out DIR`")
    meta = read_meta(path)
    if meta.get("format") != FORMAT:
        raise BundleError(f"{path}: bundle format {meta.get('format')!r}, this lakedl reads format {FORMAT}")
    try:
        tokenizer = TextTokenizer.load(path / "tokenizer.json")
    except (ValueError, KeyError) as exc:
        raise BundleError(f"{path / 'tokenizer.json'}: {exc}") from exc
    if tokenizer.sha256 != meta["tokenizer_sha256"]:
        raise BundleError(f"{path}: tokenizer {tokenizer.sha256[:12]} is not the one the model was trained with "
                          f"({meta['tokenizer_sha256'][:12]}); re-export the bundle from the run")
    if sha256(path / "weights.safetensors") != meta["weights_sha256"]:
        raise BundleError(f"{path / 'weights.safetensors'}: content does not match bundle.json (corrupt or "
                          "replaced); re-export the bundle from the run")
    try:
        model = rebuild(meta["config"])
        model.load_state_dict(load_file(str(path / "weights.safetensors")))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a config that does not build these weights
        raise BundleError(f"{path}: bundle.json's config does not rebuild the saved model ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]}); re-export the bundle from its run") from exc
    model = model.eval()
    quantize = meta.get("quantize", "none")
    if quantize not in QUANTIZE:
        raise BundleError(f"{path}: bundle.json's quantize={quantize!r} is not one of {', '.join(QUANTIZE)}; "
                          "re-export the bundle")
    if quantize == "int8":
        import warnings

        with warnings.catch_warnings():  # torch marks its quantized-tensor constructors deprecated (for torchao)
            warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear, torch.nn.LSTM, torch.nn.GRU},
                                                           dtype=torch.qint8)
    return Bundle(path, meta, model, tokenizer, Normalizer.from_dict(meta.get("normalize", {})))

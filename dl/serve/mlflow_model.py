"""Trained classifiers as MLflow models: logged with their run, registered by name and alias, and resolved back to
a bundle for scoring.

``log_run_model`` exports a finished text classifier run's bundle into the run directory and logs it into the
run's MLflow run as a pyfunc model (dl/serve/pyfunc_model.py is the model's code, by MLflow's "models from code":
nothing is pickled; the bundle's safetensors, tokenizer and bundle.json are its artifacts), with a signature
(input: ``text`` string; output: ``label`` string and ``p_<class>`` doubles) and an input example; its model URI
goes into the run's result.json and run.json. ``register`` puts that model in the Model Registry under a name
(and an alias); ``resolve_bundle`` turns ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/ID/model``
or a bundle directory into a local bundle directory. The registry is ``tracking.registry_uri``, else the
tracking store when that is a database or server, else a SQLite file beside the file store
(``<runs_dir>/mlflow-registry.db``): MLflow's file store has no registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from dl.models import FAMILIES
from etl.core.errors import InputError, LakedlError
from etl.core.logs import get_logger

log = get_logger(__name__)

CODE = Path(__file__).with_name("pyfunc_model.py")
EXAMPLE = ["A gripping, beautifully acted film.", "Dull and far too long."]
SCHEMES = ("models:/", "runs:/")


class ModelError(LakedlError, RuntimeError):
    """A model cannot be logged, registered or found; the message says what to do."""


def loggable(cfg) -> bool:
    """Whether a run of ``cfg`` (a TrainConfig) makes a bundle: a text classifier with a sentiment head."""
    return FAMILIES[cfg.model.name].kind == "text" and cfg.train.task in ("sentiment", "multitask")


def registry_uri(cfg) -> str:
    from dl.engine.tracking import tracking_uri

    configured = getattr(cfg.tracking, "registry_uri", None)
    if configured:
        return configured
    uri = tracking_uri(cfg.paths.runs_dir, cfg.tracking.mlflow_uri)
    if not uri.startswith("file:"):
        return uri
    return f"sqlite:///{Path(cfg.paths.runs_dir, 'mlflow-registry.db').absolute()}"


@contextlib.contextmanager
def _mlflow(cfg) -> Iterator[object]:
    """mlflow with this config's tracking and registry stores (put back afterwards), without progress bars."""
    import mlflow

    from dl.engine.tracking import tracking_uri

    uri = tracking_uri(cfg.paths.runs_dir, cfg.tracking.mlflow_uri)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI",
                                            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_ALLOW_FILE_STORE")}
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    quiet = logging.getLogger("mlflow")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # not its INFO lines about validating examples and creating tables
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(registry_uri(cfg))
        yield mlflow
    finally:
        quiet.setLevel(level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def log_run_model(cfg, summary: dict) -> str | None:
    """Log the finished run ``summary`` (run_train's) as an MLflow pyfunc model in its MLflow run; returns the
    model URI (None: not a text sentiment classifier, which makes no bundle)."""
    import pandas as pd
    from mlflow.models import infer_signature

    from dl.engine.tracking import start_run
    from dl.serve.bundle import export_bundle, load_bundle

    if not loggable(cfg):
        return None
    directory = Path(summary["run_dir"])
    bundle = export_bundle(directory, directory / "bundle")
    example = pd.DataFrame({"text": EXAMPLE})
    output = load_bundle(bundle).predict(EXAMPLE).drop(columns=["model_version"])
    with _mlflow(cfg) as mlflow, start_run(cfg, summary["run"], run_id=summary["mlflow_run_id"]):
        info = mlflow.pyfunc.log_model(name="model", python_model=str(CODE), artifacts={"bundle": str(bundle)},
                                       signature=infer_signature(example, output), input_example=example,
                                       pip_requirements=["lakedl"])
    for name in ("result.json", "run.json"):
        path = directory / name
        doc = json.loads(path.read_text())
        doc["mlflow_model_uri"] = info.model_uri
        path.write_text(json.dumps(doc, indent=1, default=str))
    summary["mlflow_model_uri"] = info.model_uri
    return info.model_uri


def register(cfg, run: str | os.PathLike, name: str, alias: str | None = None) -> dict:
    """Register the model logged with training run directory ``run`` as a new version of ``name`` (and point
    ``alias`` at it); returns name, version, alias and the model URI."""
    meta = Path(run) / "run.json"
    if not meta.is_file():
        raise InputError(f"{run}: not a training run directory (no run.json); pass --run runs/train/<name>")
    uri = json.loads(meta.read_text()).get("mlflow_model_uri")
    if not uri:
        raise ModelError(f"{run}: no MLflow model was logged with this run (only text sentiment classifiers "
                         "log one, since this version); train it again, or score its bundle: "
                         f"`lakedl bundle export --run {run} --out DIR`")
    with _mlflow(cfg) as mlflow:
        version = mlflow.register_model(uri, name)
        if alias:
            mlflow.MlflowClient().set_registered_model_alias(name, alias, version.version)
    return {"name": name, "version": int(version.version), "alias": alias, "model_uri": uri,
            "registry": registry_uri(cfg)}


def resolve_bundle(cfg, model: str | os.PathLike) -> Path:
    """A local bundle directory for ``model``: a bundle directory as it is; ``models:/…`` or ``runs:/…``
    downloaded (once per resolved version) under ``<work_dir>/models/``."""
    text = str(model)
    if not text.startswith(SCHEMES):
        return Path(text)
    with _mlflow(cfg) as mlflow:
        try:
            source = text
            if text.startswith("models:/"):  # the version an alias or number names now: a new one downloads anew
                spec = text[len("models:/"):]
                client = mlflow.MlflowClient()
                if "@" in spec:
                    name, alias = spec.split("@", 1)
                    version = client.get_model_version_by_alias(name, alias)
                else:
                    name, number = spec.rsplit("/", 1)
                    version = client.get_model_version(name, number)
                source = f"models:/{version.name}/{version.version}|{version.source}"
            key = hashlib.sha256(source.encode()).hexdigest()[:16]
            target = Path(cfg.paths.work_dir, "models", key).absolute()
            if not (target / "artifacts" / "bundle" / "bundle.json").is_file():  # downloaded aside, moved in whole
                partial = target.with_name(f"{key}.{os.getpid()}.partial")
                partial.mkdir(parents=True, exist_ok=True)
                mlflow.artifacts.download_artifacts(text, dst_path=str(partial))
                with contextlib.suppress(OSError):  # a concurrent run moved its copy in first
                    partial.rename(target)
                shutil.rmtree(partial, ignore_errors=True)
        except mlflow.exceptions.MlflowException as exc:
            raise ModelError(f"{text}: {str(exc).splitlines()[0]} (registry {registry_uri(cfg)}; register one with "
                             "`lakedl model register --run RUN --name NAME --alias ALIAS`)") from exc
    bundle = target / "artifacts" / "bundle"
    if not (bundle / "bundle.json").is_file():
        raise ModelError(f"{text}: not a lakedl model (no artifacts/bundle); log one by training a text classifier")
    return bundle

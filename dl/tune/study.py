"""Hyper-parameter search (``lakedl tune``): grid, random or Bayesian (Optuna TPE) search over any key of the
train job's configuration, each trial a full `lakedl train` run (its own run directory and MLflow child run),
bad trials pruned from their per-epoch dev metric, the study kept in Optuna's RDB storage so that a stopped
search resumes where it stopped.

Where trials run:

* ``tune.parallel`` > 1: that many Spark tasks, each an Optuna worker on the shared study: it asks the study
  for parameters, trains the trial in the task (``launcher.num_processes=1``, set by tune.yml) and tells the
  study the result, until the study holds ``tune.trials`` trials. Locally the storage is a SQLite file; on a
  cluster point ``tune.storage`` at a database every executor reaches (any SQLAlchemy URL).
* ``tune.parallel`` = 1: trials one after another in this process, each with the configured launcher — a
  large trial can be a distributed training run of its own (``launcher.kind``/``num_processes``).

Pruning (``tune.pruning``, Optuna's median rule): after every epoch rank 0 reports the dev score (accuracy,
or minus the error: higher is better, as the train job selects its epoch) to the study and asks whether the
trial is worse than the median of earlier trials at the same epoch; every rank stops together if so.

The space file maps config keys to distributions::

    optim.lr: {type: float, low: 0.0003, high: 0.01, log: true}
    model.rnn.hidden: {type: int, low: 64, high: 256, step: 64}
    optim.name: {type: categorical, choices: [adam, adamw]}

The grid strategy needs every key enumerable: ``categorical``, an ``int`` with ``step``, or a ``grid:`` list.
Outputs in ``<runs_dir>/tune/<study>/``: ``study.db`` (default storage), ``trials.csv``, ``best.yml`` (the
best trial's settings in config-file shape: ``lakedl train --conf best.yml``), ``summary.json`` and PNGs
(optimisation history, parallel coordinates, parameter importances).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from dl.train.config import TrainConfig
from etl.core.config import ConfigError, Section, load_yaml, register_job
from etl.core.errors import LakedlError
from etl.core.logs import get_logger

log = get_logger(__name__)


class TuneError(LakedlError, RuntimeError):
    """The search cannot start or run as configured; the message says what to change."""


class TuneSettings(Section):
    study: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", description="default: tune-<time>-<id>; "
                              "give an existing study's name to resume it")
    space: str | None = Field(None, description="YAML file of config key → distribution (conf/base/spaces/)")
    strategy: Literal["grid", "random", "bayes"] = "bayes"
    trials: int = Field(12, ge=1, description="trials in the study in all (a resumed study counts its earlier ones)")
    parallel: int = Field(2, ge=1, description="trials at once, as Spark tasks (1: one by one in this process)")
    storage: str | None = Field(None, description="Optuna RDB storage URL; default sqlite:///<runs_dir>/tune/<study>/study.db")
    pruning: bool = Field(True, description="stop trials below the median of earlier trials at the same epoch")
    startup_trials: int = Field(4, ge=0, description="bayes: random trials before TPE takes over; pruning: "
                                "trials that are never pruned")
    seed: int = 0


class TuneConfig(TrainConfig):
    tune: TuneSettings = TuneSettings()


register_job("tune", TuneConfig, bases=("train",))


@dataclass(frozen=True)
class Dim:
    """One searched config key."""
    key: str
    type: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None
    grid: tuple | None = None

    def values(self) -> list:
        """The grid strategy's values of this key."""
        if self.grid is not None:
            return list(self.grid)
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int" and self.step:
            return list(range(int(self.low), int(self.high) + 1, int(self.step)))
        raise TuneError(f"space key {self.key!r}: the grid strategy needs a finite set of values: give it "
                        "`grid: [...]`, a `step` (int), or make it categorical")

    def suggest(self, trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)


def read_space(path: str | os.PathLike) -> list[Dim]:
    """The space file's keys; a malformed entry or an unknown train config key is refused by name."""
    path = Path(path)
    if not path.is_file():
        raise TuneError(f"tune.space={path}: no such file; see conf/base/spaces/ for examples")
    raw = load_yaml(path.read_text()) or {}
    if not isinstance(raw, dict) or not raw:
        raise TuneError(f"{path}: expected a mapping of config key → {{type: ..., ...}}")
    dims = []
    for key, spec in raw.items():
        if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
            raise TuneError(f"{path}: {key}: needs `type: float | int | categorical`, got {spec!r}")
        allowed = {"type", "low", "high", "log", "step", "choices", "grid"}
        if set(spec) - allowed:
            raise TuneError(f"{path}: {key}: unknown field(s) {sorted(set(spec) - allowed)}; allowed {sorted(allowed)}")
        if spec["type"] == "categorical" and not spec.get("choices"):
            raise TuneError(f"{path}: {key}: a categorical key needs `choices: [...]`")
        if spec["type"] != "categorical" and not (isinstance(spec.get("low"), (int, float))
                                                  and isinstance(spec.get("high"), (int, float))
                                                  and spec["low"] <= spec["high"]):
            raise TuneError(f"{path}: {key}: a {spec['type']} key needs numbers `low` <= `high`")
        dims.append(Dim(key, spec["type"], spec.get("low"), spec.get("high"), bool(spec.get("log", False)),
                        spec.get("step"), tuple(spec["choices"]) if spec.get("choices") else None,
                        tuple(spec["grid"]) if spec.get("grid") else None))
    return dims


def _set(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def trial_config(cfg: TuneConfig, params: dict[str, Any], run_name: str) -> TrainConfig:
    """The train config of one trial: the study's settings with ``params`` and the trial's run name."""
    tree = cfg.model_dump(exclude={"tune"})
    for key, value in params.items():
        _set(tree, key, value)
    _set(tree, "run.name", run_name)
    _set(tree, "run.dir", None)
    _set(tree, "run.resume", False)
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"not a valid train config: {problems}") from None


def check_space(cfg: TuneConfig, dims: list[Dim]) -> None:
    """Every key must be a train config key that takes the space's values (tried at both ends)."""
    tree = cfg.model_dump(exclude={"tune"})
    for dim in dims:
        node = tree
        for part in dim.key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise TuneError(f"space key {dim.key!r} is not a train config key (see `lakedl config show train`)")
            node = node[part]
        for value in list(dim.choices or dim.grid or (dim.low, dim.high)):
            try:
                trial_config(cfg, {dim.key: int(value) if dim.type == "int" else value}, "check")
            except ConfigError as exc:
                raise TuneError(f"space key {dim.key!r} = {value!r}: {exc}") from None


def study_dir(cfg: TuneConfig, study: str) -> Path:
    return Path(cfg.paths.runs_dir) / "tune" / study


def storage_url(cfg: TuneConfig, study: str) -> str:
    if cfg.tune.storage:
        return cfg.tune.storage
    return f"sqlite:///{(study_dir(cfg, study) / 'study.db').absolute()}"


def make_sampler(cfg: TuneConfig, dims: list[Dim], worker: int = 0):
    import optuna

    seed = cfg.tune.seed + worker  # parallel workers must not draw the same parameters
    if cfg.tune.strategy == "grid":
        return optuna.samplers.GridSampler({d.key: d.values() for d in dims}, seed=seed)
    if cfg.tune.strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.tune.startup_trials,
                                      constant_liar=cfg.tune.parallel > 1)


def make_pruner(cfg: TuneConfig):
    import optuna

    if not cfg.tune.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=max(cfg.tune.startup_trials, 1), n_warmup_steps=1)


def load(cfg: TuneConfig, study: str, dims: list[Dim], worker: int = 0):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=study, storage=storage_url(cfg, study), direction="maximize",
                               sampler=make_sampler(cfg, dims, worker), pruner=make_pruner(cfg), load_if_exists=True)


@dataclass(frozen=True)
class Pruning:
    """The epoch-end callback (dl/engine/callbacks.py) of a trial: rank 0 records the epoch's dev score in the
    study and asks the pruner whether to stop. Picklable: it reaches the workers as settings."""

    study: str
    storage: str
    trial_id: int
    pruning: bool
    startup_trials: int
    name: str = "pruned"
    rank0_only: bool = True

    def __call__(self, end) -> bool:
        import optuna

        study = optuna.load_study(study_name=self.study, storage=self.storage, pruner=_pruner_of(self))
        trial = optuna.trial.Trial(study, self.trial_id)
        trial.report(end.score, end.epoch)
        return trial.should_prune()


def _pruner_of(prune: Pruning):
    import optuna

    if not prune.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=prune.startup_trials, n_warmup_steps=1)


def _objective(cfg: TuneConfig, study: str, dims: list[Dim], parent_run_id: str | None, spark=None):
    def objective(trial) -> float:
        import optuna

        from dl.train.job import run_train

        params = {d.key: d.suggest(trial) for d in dims}
        name = f"{study}-{trial.number:03d}"
        tcfg = trial_config(cfg, params, name)
        prune = Pruning(study, storage_url(cfg, study), trial._trial_id, cfg.tune.pruning,
                        max(cfg.tune.startup_trials, 1))
        tags = {"tune.study": study, "tune.trial": str(trial.number)}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        trial.set_user_attr("run_dir", str((Path(tcfg.paths.runs_dir) / "train" / name).absolute()))
        summary = run_train(tcfg, spark=spark, callbacks=[prune], tags=tags)
        trial.set_user_attr("epochs_run", summary["epochs_run"])
        if summary.get("pruned"):
            raise optuna.TrialPruned(f"pruned after epoch {summary['epochs_run']}")
        score = summary.get("best_score")
        if score is None or not math.isfinite(score):
            raise TuneError(f"trial {trial.number} finished without a dev score")
        return float(score)

    return objective


def _run_worker(cfg: TuneConfig, study: str, dims: list[Dim], parent_run_id: str | None, worker: int,
                spark=None) -> int:
    """One Optuna worker: trials until the study holds ``tune.trials`` (any state)."""
    import optuna

    s = load(cfg, study, dims, worker)
    stop = optuna.study.MaxTrialsCallback(cfg.tune.trials, states=None)
    before = len(s.trials)
    if before < cfg.tune.trials:
        s.optimize(_objective(cfg, study, dims, parent_run_id, spark), callbacks=[stop], catch=(TuneError,))
    return len(s.trials) - before


def _spark_task(payload):
    """A Spark task's body: one Optuna worker per row of its partition, numbered by the row (torch on one
    thread: the tasks share the cores). A DataFrame task, not an RDD one, so that it runs through Spark
    Connect too."""
    def run(batches):
        import pandas as pd
        import torch

        torch.set_num_threads(1)
        cfg, study, dims, parent = payload
        for batch in batches:
            for index in batch["id"]:
                _run_worker(cfg, study, dims, parent, int(index) + 1)
                yield pd.DataFrame({"worker": [int(index) + 1]})
    return run


def run_tune(cfg: TuneConfig, spark=None) -> dict:
    """Run (or resume) the study; returns the summary written to ``summary.json``."""
    import optuna

    from dl.engine.tracking import start_run
    from etl.core.runs import new_run_id

    if not cfg.tune.space:
        raise TuneError("tune.space is not set: pass --space conf/base/spaces/<name>.yml")
    dims = read_space(cfg.tune.space)
    check_space(cfg, dims)
    if cfg.tune.parallel > 1 and (cfg.launcher.kind != "local" or cfg.launcher.num_processes != 1):
        raise TuneError(f"tune.parallel={cfg.tune.parallel} runs each trial as one Spark task with one process: set "
                        "launcher.kind=local and launcher.num_processes=1, or tune.parallel=1 to run the trials one "
                        "by one as distributed training runs")
    study = cfg.tune.study or new_run_id("tune")
    directory = study_dir(cfg, study)
    directory.mkdir(parents=True, exist_ok=True)
    s = load(cfg, study, dims)
    resumed = len(s.trials)
    for t in s.trials:  # a stopped search left these running: nobody will finish them
        if t.state == optuna.trial.TrialState.RUNNING:
            s._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    meta = directory / "study.json"
    previous = json.loads(meta.read_text())["mlflow_run_id"] if meta.is_file() else None
    with start_run(cfg, study, tags={"job": "tune", "strategy": cfg.tune.strategy}, run_id=previous) as handle:
        meta.write_text(json.dumps({"study": study, "storage": storage_url(cfg, study),
                                    "mlflow_run_id": handle.run_id}))
        log.info("study %s: %s search, %d trial(s) wanted, %d there, %d at once", study, cfg.tune.strategy,
                 cfg.tune.trials, resumed, cfg.tune.parallel)
        if cfg.tune.parallel == 1:
            _run_worker(cfg, study, dims, handle.run_id, 0, spark)
        else:
            from etl.core.spark import get_spark, job_description

            spark = spark or get_spark(cfg.spark)
            with job_description(spark, f"lakedl tune {study}"):
                spark.range(0, cfg.tune.parallel, 1, cfg.tune.parallel).mapInPandas(
                    _spark_task((cfg, study, dims, handle.run_id)), "worker long").collect()
        s = load(cfg, study, dims)
        summary = write_reports(s, cfg, study, dims, directory, resumed)
        import mlflow

        if summary["best"]:
            mlflow.log_metric("best_dev_score", summary["best"]["value"])
            mlflow.log_params({f"best.{k}": v for k, v in summary["best"]["params"].items()})
        for name in ("summary.json", "trials.csv", "best.yml"):
            if (directory / name).is_file():
                mlflow.log_artifact(str(directory / name))
    return summary


def write_reports(s, cfg: TuneConfig, study: str, dims: list[Dim], directory: Path, resumed: int) -> dict:
    """trials.csv, best.yml, summary.json and the study's PNGs."""
    import optuna

    states = optuna.trial.TrialState
    rows = s.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs", "duration"))
    rows.to_csv(directory / "trials.csv", index=False)
    complete = [t for t in s.trials if t.state == states.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    if best is not None:
        tree: dict = {}
        for key, value in best.params.items():
            _set(tree, key, value)
        (directory / "best.yml").write_text(
            f"# best trial of study {study}: #{best.number}, dev score {best.value:.4f}\n"
            f"# lakedl train --conf {directory / 'best.yml'} (with the study's other settings)\n"
            + yaml.safe_dump(tree, sort_keys=False))
    pictures = plot_study(s, directory) if complete else []
    counts = {state.name.lower(): sum(t.state == state for t in s.trials) for state in states}
    best_so_far, curve = -math.inf, []
    for t in sorted(s.trials, key=lambda t: t.number):
        if t.state == states.COMPLETE:
            best_so_far = max(best_so_far, t.value)
        curve.append(None if best_so_far == -math.inf else best_so_far)
    summary = {"study": study, "strategy": cfg.tune.strategy, "storage": storage_url(cfg, study), "dir": str(directory),
               "trials": len(s.trials), "resumed_from": resumed, "states": {k: v for k, v in counts.items() if v},
               "best": {"number": best.number, "value": best.value, "params": best.params,
                        "run_dir": best.user_attrs.get("run_dir")} if best else None,
               "best_so_far": curve, "space": [d.key for d in dims], "pictures": pictures}
    (directory / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def plot_study(s, directory: Path) -> list[str]:
    """Optimisation history, parallel coordinates and (with ≥ 2 finished trials) parameter importances."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    written = []
    plots = {"history": ovm.plot_optimization_history, "parallel_coordinates": ovm.plot_parallel_coordinate,
             "importances": ovm.plot_param_importances}
    for name, fn in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
            try:
                ax = fn(s)
            except (ValueError, RuntimeError) as exc:  # e.g. importances of a single-parameter or one-trial study
                log.info("study plot %s skipped: %s", name, exc)
                continue
        fig = (ax[0] if hasattr(ax, "__len__") else ax).get_figure()
        fig.set_size_inches(13 if name == "parallel_coordinates" else 9, 5)
        fig.tight_layout()
        path = directory / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written

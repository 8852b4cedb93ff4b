"""``lakedl train``, ``lakedl tune`` and ``lakedl report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from jobs.commands.common import ConfDir, ConfFiles, Sets, load, option_overrides


def train(shards: Annotated[Optional[str], typer.Option(help="the text or image ETL's output directory "
                                                        "(default: data.shards)")] = None,
          launcher: Annotated[Optional[str], typer.Option(help="local, torch_distributor or horovod "
                                                          "(default: launcher.kind)")] = None,
          processes: Annotated[Optional[int], typer.Option(help="number of training processes "
                                                           "(default: launcher.num_processes)")] = None,
          run_name: Annotated[Optional[str], typer.Option("--run-name", help="run name (default: generated)")] = None,
          resume: Annotated[bool, typer.Option("--resume", help="continue run --run-name from its last "
                                               "checkpoint")] = False,
          conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Train a model on the ETL's shards with the configured launcher; checkpoints, MLflow run, curves PNG."""
    from dl.serve.mlflow_model import log_run_model
    from dl.train.job import run_train

    extra = option_overrides({"data.shards": shards, "launcher.kind": launcher,
                               "launcher.num_processes": processes, "run.name": run_name})
    if resume:
        extra.append("run.resume=true")
    cfg = load("train", conf_dir, conf, set_, extra)
    summary = run_train(cfg)
    log_run_model(cfg, summary)  # a text sentiment classifier: its bundle as an MLflow pyfunc model
    final = summary["final"]
    typer.echo(f"\nrun {summary['run']}: {summary['epochs_run']} epochs, {summary['steps']} steps on "
               f"{summary['processes']} process(es) ({summary['launcher']}) in {summary['seconds']} s")
    typer.echo("  " + ", ".join(f"{k} {v:.4f}" for k, v in final.items() if k.startswith("dev_")))
    test = {k: v for k, v in (summary.get("test") or {}).items() if isinstance(v, float)}
    if test:
        typer.echo("  test: " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
    if summary.get("mlflow_model_uri"):
        typer.echo(f"  MLflow model {summary['mlflow_model_uri']} (`lakedl model register --run "
                   f"{summary['run_dir']} --name NAME --alias champion`)")
    if summary.get("diagnosis"):
        typer.echo(f"  diagnosis: {summary['diagnosis']['verdict']} — {summary['diagnosis']['advice']}")
    typer.echo(f"  run dir {summary['run_dir']} (last.pt, curves.png, history.json); MLflow run "
               f"{summary['mlflow_run_id']}")


def tune(space: Annotated[Optional[str], typer.Option(help="search space YAML (default: tune.space)")] = None,
         strategy: Annotated[Optional[str], typer.Option(help="grid, random or bayes (default: tune.strategy)")] = None,
         trials: Annotated[Optional[int], typer.Option(min=1, help="trials in the study in all (default: tune.trials)")]
         = None,
         parallel: Annotated[Optional[int], typer.Option(min=1, help="trials at once as Spark tasks (default: "
                                                         "tune.parallel)")] = None,
         study: Annotated[Optional[str], typer.Option(help="study name; an existing one resumes (default: new)")] = None,
         conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Hyper-parameter search over train config keys (Optuna: grid, random, TPE), trials as Spark tasks,
    pruning on the dev metric, resumable study; trials.csv, best.yml and plots in runs/tune/<study>/."""
    from dl.tune.study import run_tune

    extra = option_overrides({"tune.space": space, "tune.strategy": strategy, "tune.trials": trials,
                               "tune.parallel": parallel, "tune.study": study})
    cfg = load("tune", conf_dir, conf, set_, extra)
    summary = run_tune(cfg)
    typer.echo(f"\nstudy {summary['study']} ({summary['strategy']}): {summary['trials']} trials "
               f"({', '.join(f'{n} {k}' for k, n in summary['states'].items())}; {summary['resumed_from']} before this run)")
    best = summary["best"]
    if best:
        typer.echo(f"  best: trial {best['number']}, dev score {best['value']:.4f}, "
                   + ", ".join(f"{k}={v}" for k, v in best["params"].items()))
        typer.echo(f"  run dir {best['run_dir']}")
    typer.echo(f"  {summary['dir']}: trials.csv, best.yml, summary.json, PNGs; study storage {summary['storage']}")


def report(run: Annotated[Path, typer.Option(help="a finished `lakedl train` run directory")]) -> None:
    """Write <run>/report.html: facts, test figures, curves, confusion matrix, per-class precision/recall,
    the bias/variance verdict and the worst-scored test examples, or a GAN's samples (train writes it too)."""
    from dl.train.report import write_report

    typer.echo(str(write_report(run)))

"""`lakedl tune` on the toy shards with a real SparkSession, real Optuna SQLite storage and a real MLflow file
store: trials as parallel Spark tasks, MLflow child runs, resuming a study, the grid enumerated, pruning
through the worker's per-epoch report, and refusals that name the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dl.tune.study import TuneError, read_space, run_tune
from jobs.configs import load_config

REPO = Path(__file__).resolve().parents[2]


def tune_cfg(shards, runs: Path, space: str, *sets: str):
    path = runs / "space.yml"
    path.write_text(space)
    return load_config("tune", REPO / "conf", overrides=[
        f"data.shards={shards}", f"paths.runs_dir={runs}", f"tune.space={path}", "model.name=bow",
        "train.epochs=2", "train.batch_size=32", *sets])


SPACE = """
optim.lr: {type: float, low: 0.001, high: 0.05, log: true}
model.bow.hidden: {type: int, low: 16, high: 64, step: 16}
"""


def test_random_search_runs_trials_as_spark_tasks_and_a_stopped_study_resumes(shards, tmp_path, spark):
    from mlflow.tracking import MlflowClient

    cfg = tune_cfg(shards, tmp_path, SPACE, "tune.strategy=random", "tune.trials=4", "tune.parallel=2",
                   "tune.study=s1")
    summary = run_tune(cfg, spark)
    assert summary["trials"] == 4 and summary["states"] == {"complete": 4} and summary["resumed_from"] == 0
    study = tmp_path / "tune" / "s1"
    assert (study / "study.db").is_file() and (study / "history.png").is_file()
    best = summary["best"]
    assert 0.5 < best["value"] <= 1.0 and set(best["params"]) == {"optim.lr", "model.bow.hidden"}
    result = json.loads((Path(best["run_dir"]) / "result.json").read_text())
    assert max(h["dev_sentiment_accuracy"] for h in json.loads((Path(best["run_dir"]) / "history.json").read_text())) \
        == pytest.approx(best["value"]) and result["processes"] == 1
    import yaml

    chosen = yaml.safe_load((study / "best.yml").read_text())
    assert chosen["optim"]["lr"] == best["params"]["optim.lr"]
    client = MlflowClient((tmp_path / "mlflow").absolute().as_uri())
    parent = json.loads((study / "study.json").read_text())["mlflow_run_id"]
    children = client.search_runs([client.get_experiment_by_name("lakedl").experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 4 and {r.data.tags["tune.study"] for r in children} == {"s1"}
    lrs = {r.data.params["optim.lr"] for r in children}
    assert len(lrs) == 4  # the two Spark tasks' samplers drew different parameters

    again = run_tune(tune_cfg(shards, tmp_path, SPACE, "tune.strategy=random", "tune.trials=6", "tune.parallel=1",
                              "tune.study=s1"), spark)
    assert again["resumed_from"] == 4 and again["trials"] == 6
    import csv

    with open(study / "trials.csv") as fh:
        assert sorted(int(r["number"]) for r in csv.DictReader(fh)) == list(range(6))  # counting went on from 4
    assert len(client.search_runs([client.get_experiment_by_name("lakedl").experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent}'")) == 6  # the same parent run


def test_grid_search_enumerates_the_grid(shards, tmp_path):
    space = """
optim.lr: {type: float, low: 0.003, high: 0.03, grid: [0.003, 0.03]}
model.bow.hidden: {type: int, low: 16, high: 32, step: 16}
"""
    summary = run_tune(tune_cfg(shards, tmp_path, space, "tune.strategy=grid", "tune.trials=10", "tune.parallel=1",
                                "tune.study=g", "train.epochs=1"))
    import csv

    with open(tmp_path / "tune" / "g" / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert summary["trials"] == 4  # the grid is exhausted before tune.trials
    assert {(float(r["params_optim.lr"]), int(r["params_model.bow.hidden"])) for r in rows} == \
        {(0.003, 16), (0.003, 32), (0.03, 16), (0.03, 32)}


def test_a_trial_below_the_median_is_pruned_by_the_workers_report(shards, tmp_path):
    import optuna

    from dl.train.job import run_train
    from dl.tune.study import Pruning, load, read_space, storage_url, trial_config

    cfg = tune_cfg(shards, tmp_path, SPACE, "tune.study=p", "tune.startup_trials=1", "train.epochs=4")
    (tmp_path / "tune" / "p").mkdir(parents=True)
    study = load(cfg, "p", read_space(cfg.tune.space))
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0,
                                              intermediate_values={e: 1.0 for e in range(4)}))  # a perfect earlier trial
    trial = study.ask()
    prune = Pruning("p", storage_url(cfg, "p"), trial._trial_id, pruning=True, startup_trials=1)
    summary = run_train(trial_config(cfg, {"optim.lr": 0.001}, "p-001"), callbacks=[prune])
    assert summary["pruned"] and summary["stopped_by"] == "pruned" and summary["epochs_run"] == 2  # epoch 0 is the warm-up, epoch 1 is below the median
    assert sorted(optuna.load_study(study_name="p", storage=prune.storage).trials[1].intermediate_values) == [0, 1]


def test_bad_searches_are_refused_with_what_to_change(shards, tmp_path):
    with pytest.raises(TuneError, match="'optim.lrr' is not a train config key"):
        run_tune(tune_cfg(shards, tmp_path, "optim.lrr: {type: float, low: 0.1, high: 1.0}"))
    with pytest.raises(TuneError, match="needs a finite set of values"):
        run_tune(tune_cfg(shards, tmp_path, SPACE, "tune.strategy=grid"))
    with pytest.raises(TuneError, match="'model.bow.dropout' = 1.5"):
        run_tune(tune_cfg(shards, tmp_path, "model.bow.dropout: {type: float, low: 0.1, high: 1.5}"))
    with pytest.raises(TuneError, match="set launcher.kind=local and launcher.num_processes=1"):
        run_tune(tune_cfg(shards, tmp_path, SPACE, "launcher.num_processes=2"))
    with pytest.raises(TuneError, match="needs `type: float"):
        run_tune(tune_cfg(shards, tmp_path, "optim.lr: [0.1, 0.2]"))


def test_space_bounds_in_exponent_notation_are_numbers(tmp_path):
    space = tmp_path / "space.yml"
    space.write_text("optim.lr: {type: float, low: 1e-5, high: 1e-2, log: true}\n")
    (dim,) = read_space(space)
    assert (dim.low, dim.high, dim.log) == (1e-5, 1e-2, True)

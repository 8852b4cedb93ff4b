"""Trained classifiers as MLflow models: the train command logs the bundle as a pyfunc model (no pickle), `lakedl
model register` names it with an alias in a SQLite registry, and `models:/NAME@ALIAS` scores through MLflow's own
loaders (pyfunc, spark_udf) and through ours, with the same probabilities as the scoring UDF, on real reviews."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.configs import load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def logged(shards, tmp_path_factory):
    """A train run through the CLI command (which logs the model), its config and its summary."""
    runs = tmp_path_factory.mktemp("runs")
    sets = [f"paths.runs_dir={runs}", f"paths.work_dir={runs / 'work'}", "model.name=rnn", "model.rnn.embed_dim=16",
            "model.rnn.hidden=12", "train.epochs=1", "launcher.num_processes=1", "train.progress=false"]
    out = subprocess.run([sys.executable, "-m", "jobs.cli", "train", "--shards", str(shards), "--run-name", "m",
                          *[a for s in sets for a in ("--set", s)]], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "MLflow model models:/" in out.stdout and "warning" not in (out.stdout + out.stderr).lower()
    cfg = load_config("train", REPO / "conf", overrides=[f"data.shards={shards}", *sets])
    return cfg, json.loads((runs / "train" / "m" / "result.json").read_text())


def test_the_logged_model_is_the_bundle_with_a_signature_and_no_pickle(logged):
    from dl.serve.mlflow_model import _mlflow

    cfg, summary = logged
    uri = summary["mlflow_model_uri"]
    assert uri.startswith("models:/")
    assert json.loads((Path(summary["run_dir"]) / "run.json").read_text())["mlflow_model_uri"] == uri
    with _mlflow(cfg) as mlflow:
        local = Path(mlflow.artifacts.download_artifacts(uri))
        info = mlflow.models.get_model_info(uri)
    assert {"bundle.json", "weights.safetensors", "tokenizer.json"} <= {p.name for p in (local / "artifacts" / "bundle").iterdir()}
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("*.pickle"))
    assert [c.name for c in info.signature.inputs.inputs] == ["text"]
    assert [c.name for c in info.signature.outputs.inputs] == ["label", "p_negative", "p_positive"]


@pytest.mark.spark
def test_registered_alias_scores_like_our_udf_through_pyfunc_spark_udf_and_score(logged, spark, raw_data, tmp_path):
    from dl.serve.bundle import load_bundle
    from dl.serve.mlflow_model import _mlflow, resolve_bundle
    from dl.serve.score import output_schema, score_files, score_frame
    from etl.core.tables import TableStore

    cfg, summary = logged
    out = subprocess.run([sys.executable, "-m", "jobs.cli", "model", "register", "--run", summary["run_dir"],
                          "--name", "sentiment", "--alias", "champion", "--set", f"paths.runs_dir={cfg.paths.runs_dir}"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    registered = json.loads(out.stdout)
    assert (registered["version"], registered["alias"]) == (1, "champion")
    assert registered["registry"].startswith("sqlite:///")

    uri = "models:/sentiment@champion"
    bundle = resolve_bundle(cfg, uri)
    assert resolve_bundle(cfg, uri) == bundle  # one download per resolved version
    rows = [json.loads(line) for line in (raw_data / "reviews" / "vader_movie.jsonl").read_text().splitlines()[:500]]
    df = spark.createDataFrame([(r["review_id"], r["text"]) for r in rows], "review_id string, text string")
    ours = score_frame(df, bundle, batch_size=64).toPandas().set_index("review_id").loc[[r["review_id"] for r in rows]]
    expected = load_bundle(bundle).predict([r["text"] for r in rows])
    np.testing.assert_allclose(ours["p_positive"], expected["p_positive"], atol=1e-5)
    with _mlflow(cfg) as mlflow:
        pyfunc = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"text": [r["text"] for r in rows]}))
        schema = output_schema(bundle)
        udf = mlflow.pyfunc.spark_udf(spark, uri, result_type=", ".join(
            f"{f.name} {f.dataType.simpleString()}" for f in schema.fields if f.name != "model_version"), env_manager="local")
        theirs = df.select("review_id", udf("text").alias("p")).select("review_id", "p.*").toPandas()
    np.testing.assert_allclose(pyfunc["p_positive"], expected["p_positive"], atol=1e-5)
    theirs = theirs.set_index("review_id").loc[[r["review_id"] for r in rows]]
    np.testing.assert_allclose(theirs["p_positive"], expected["p_positive"], atol=1e-5)
    assert theirs["label"].tolist() == pyfunc["label"].tolist() == expected["label"].tolist()

    store = TableStore(tmp_path / "tables", spark=spark, backend="delta-rs")
    report = score_files(store, df, bundle, "reviews", "predictions")
    assert report["rows_scored"] == 500 and report["model_version"] == expected["model_version"].iloc[0]


def test_an_unknown_model_or_a_run_without_one_says_what_to_do(logged, tmp_path):
    from dl.serve.mlflow_model import ModelError, register, resolve_bundle

    cfg, _ = logged
    with pytest.raises(ModelError, match="lakedl model register"):
        resolve_bundle(cfg, "models:/nope@champion")
    (tmp_path / "run.json").write_text(json.dumps({"name": "x", "mlflow_run_id": "0"}))
    with pytest.raises(ModelError, match="no MLflow model was logged with this run"):
        register(cfg, tmp_path, "sentiment")

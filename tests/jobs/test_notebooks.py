"""Every notebook in notebooks/ runs headlessly (nbclient, a real Jupyter kernel with its own SparkSession)
on a small slice of the real review corpora: ETL → training (2 processes) → scoring into Delta →
embeddings and search; their outputs are checked, not just their exit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"


def execute(name: str, params: dict) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", []), f"{name}: the first code cell must hold the parameters"
    names = {line.split("=")[0].strip() for line in first.source.splitlines() if "=" in line and not line.startswith(" ")}
    assert set(params) <= names, f"{name}: {sorted(set(params) - names)} are not parameters of the notebook"
    first.source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    return nb


def text_of(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        out.append(o.get("text", "") or o.get("data", {}).get("text/plain", ""))
    return "\n".join(out)


@pytest.fixture(scope="module")
def small_input(raw_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nb")
    (root / "input").mkdir()
    for path in sorted((raw_data / "reviews").glob("vader_*.jsonl")):  # 150 real snippets of each corpus
        lines = path.read_text().splitlines()[:150]
        (root / "input" / path.name).write_text("\n".join(lines) + "\n")
    return root


def test_every_notebook_is_parameterised_and_covered():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == ["01_etl", "02_train", "03_score", "04_embeddings"]
    for path in NOTEBOOKS.glob("*.ipynb"):
        source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
        assert "sys.path" not in source, path


@pytest.mark.parametrize("session", ["classic", "connect"])
def test_notebooks_run_headlessly_in_order(small_input, raw_data, session, request, monkeypatch, tmp_path):
    """``connect``: the kernel is a Spark Connect client of `lakedl cluster up --connect` that cannot start a JVM
    (the ``connect_env`` fixture), as in a shared or serverless cluster's notebook."""
    if session == "connect":
        for key in ("SPARK_REMOTE", "SPARK_HOME", "JAVA_HOME"):  # the kernel inherits them
            monkeypatch.setenv(key, request.getfixturevalue("connect_env")[key])
        shutil.copytree(small_input / "input", tmp_path / "input")
        root = tmp_path
    else:
        root = small_input
    common = {"CONF_DIR": str(REPO / "conf"), "TABLES_DIR": str(root / "tables")}
    etl = execute("01_etl", {**common, "INPUT": [str(root / "input")], "SHARDS_DIR": str(root / "shards"),
                             "NAME": "reviews", "SETTINGS": ["tokenize.vocab.min_count=1"]})
    report = text_of(etl.cells[2])
    assert "'rows_read': 600" in report and "rows_per_split" in report
    assert "review_id" in text_of(etl.cells[3])  # the silver sample

    train = execute("02_train", {"CONF_DIR": str(REPO / "conf"), "SHARDS": str(root / "shards" / "reviews"),
                                 "RUNS_DIR": str(root / "runs"), "RUN_NAME": "nb", "MODEL": "bow", "EPOCHS": 2,
                                 "PROCESSES": 2, "LAUNCHER": "local", "SETTINGS": ["optim.lr=0.01"]})
    result = json.loads((root / "runs" / "train" / "nb" / "result.json").read_text())
    assert result["processes"] == 2 and result["epochs_run"] == 2 and "'processes': 2" in text_of(train.cells[2])
    assert any("image/png" in o.get("data", {}) for o in train.cells[4].outputs)  # the curves
    assert (root / "runs" / "train" / "nb" / "report.html").is_file()

    score = execute("03_score", {**common, "RUN": str(root / "runs" / "train" / "nb"),
                                 "BUNDLE": str(root / "runs" / "bundle"), "SOURCE": "silver_reviews"})
    assert "'rows_scored': 600" in text_of(score.cells[2]) and "'rows_scored': 0" in text_of(score.cells[3])
    assert "positive" in text_of(score.cells[4])

    emb = execute("04_embeddings", {**common, "MODEL_DIR": str(raw_data / "minilm" / "model"),
                                    "SOURCE": "silver_reviews", "VECTORS": "review_vectors", "LIMIT": 100,
                                    "QUERIES": ["a great movie"]})
    assert "'inserted': 100" in text_of(emb.cells[2])
    hits = text_of(emb.cells[3])
    assert "a great movie" in hits and hits.count("\n") >= 3

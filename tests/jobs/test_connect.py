"""lakedl through Spark Connect: every job below is a `lakedl` command run as a Connect client of a real server
started by `lakedl cluster up --connect` (standalone master + 2 workers). The client cannot start a JVM of
its own (SPARK_HOME and JAVA_HOME point nowhere: ``connect_env``), so what works here works without one."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.distributed
LAKEDL = str(Path(sys.executable).parent / "lakedl")
REPO = Path(__file__).resolve().parents[2]


def run(env, *args, timeout=600):
    return subprocess.run([LAKEDL, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("connect-work")


def sets(work: Path) -> list[str]:
    return ["--set", f"paths.tables_dir={work / 'tables'}", "--set", f"paths.runs_dir={work / 'runs'}"]


def test_cluster_status_shows_the_connect_server(connect_cluster):
    out = subprocess.run([LAKEDL, "cluster", "status", "--state-dir", connect_cluster.state_dir],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and f"connect  {connect_cluster.connect_url}  (up)" in out.stdout, out.stdout


def test_without_a_server_the_client_environment_cannot_start_spark(connect_env, raw_data, tmp_path):
    """The check the other tests rely on: with no SPARK_REMOTE, the same environment fails to make a session."""
    env = {k: v for k, v in connect_env.items() if k != "SPARK_REMOTE"}
    out = run(env, "bronze", "load", "--input", str(raw_data / "reviews" / "vader_tweets.jsonl"), *sets(tmp_path),
              timeout=120)
    assert out.returncode != 0 and not (tmp_path / "tables" / "bronze_reviews").exists()


def test_bronze_text_etl_and_the_table_commands_run_through_connect(connect_env, connect_cluster, raw_data, work):
    reviews = work / "reviews"
    reviews.mkdir()
    shutil.copy(raw_data / "reviews" / "vader_tweets.jsonl", reviews)
    out = run(connect_env, "bronze", "load", "--input", str(reviews), *sets(work))
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["rows_read"] == report["rows_inserted"] == 4200
    shown = run(connect_env, "tables", "show", "bronze_reviews", "--limit", "2", *sets(work))
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert json.loads(shown.stdout)["rows"] == 4200

    shards = ["--set", f"output.shards_dir={work / 'shards'}"]
    out = run(connect_env, "etl", "text", "--input", str(raw_data / "reviews" / "vader_nyt.jsonl"), *sets(work),
              *shards)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["rows_read"] == report["rows_kept"] == 5190 and sum(report["rows_per_split"].values()) == 5190
    assert (work / "shards" / "reviews" / "manifest.json").is_file()
    history = run(connect_env, "tables", "history", "silver_reviews", *sets(work))
    assert history.returncode == 0, history.stderr[-2000:]
    assert len(json.loads(history.stdout)) >= 1

    bad = work / "bad.jsonl"
    bad.write_text('{"review_id": "x", "text": "fine"}\nnot json\n')
    out = run(connect_env, "etl", "text", "--input", str(bad), "--name", "bad", *sets(work), *shards)
    assert out.returncode == 1 and "1 of 2 rows (50.0%) were quarantined" in out.stderr, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    # the work ran in the executors the Connect server's application got from both workers
    launched = [Path(log).read_text().count("Asked to launch executor") for log in connect_cluster.logs[1:3]]
    assert all(n >= 1 for n in launched), launched


def test_image_etl_runs_through_connect_and_petastorm_reads_its_output(connect_env, raw_data, tmp_path):
    from petastorm import make_reader
    from PIL import Image

    from etl.images.pipeline import idx_array

    images = idx_array(raw_data / "fashion_mnist" / "train-images-idx3-ubyte.gz")[:30]
    root = tmp_path / "tree"
    for i, image in enumerate(images):
        (root / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        (root / f"c{i % 3}" / f"{i}.png").write_bytes(buf.getvalue())
    (root / "c0" / "empty.png").write_bytes(b"")
    (root / "c1" / "junk.png").write_bytes(b"not an image" * 20)
    out = run(connect_env, "etl", "images", "--input", str(root), "--format", "folder", "--name", "imgs",
              "--set", f"output.shards_dir={tmp_path / 'shards'}", "--set", f"paths.tables_dir={tmp_path / 'tables'}",
              "--set", "validation.max_quarantine_rate=0.2")
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["rows_read"] == 32 and report["rows_kept"] == 30
    assert report["reasons"] == {"empty_file": 1, "undecodable": 1}
    seen = {}
    for split, rows in report["rows_per_split"].items():
        with make_reader((tmp_path / "shards" / "imgs" / split).as_uri(), num_epochs=1, workers_count=1) as reader:
            read = {row.image_id: row.image for row in reader}
        assert len(read) == rows, split
        seen.update(read)
    assert len(seen) == 30
    for image_id, image in seen.items():  # bit-exact pixels through Spark Connect and petastorm
        assert np.array_equal(image, images[int(Path(image_id).stem)])


def test_train_score_and_change_feed_through_connect_and_horovod_refuses(connect_env, work):
    """After the text ETL test: TorchDistributor trains through Connect, the bundle scores the silver table
    (anti-join, then the change feed after an edit and a delete)."""
    from deltalake import DeltaTable

    if not (work / "shards" / "reviews" / "manifest.json").is_file():
        pytest.fail("needs test_bronze_text_etl_and_the_table_commands_run_through_connect to have run first")
    train = ["--shards", str(work / "shards" / "reviews"), "--set", "model.name=bow", "--set", "train.epochs=1",
             "--set", "train.progress=false", *sets(work)]
    refused = run(connect_env, "train", "--launcher", "horovod", "--processes", "2", "--run-name", "hvd", *train)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("error: Horovod on Spark") and "Spark Connect" in line and "torch_distributor" in line

    out = run(connect_env, "train", "--launcher", "torch_distributor", "--processes", "2", "--run-name", "td", *train)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((work / "runs" / "train" / "td" / "result.json").read_text())
    assert result["processes"] == 2 and result["launcher"] == "torch_distributor"
    assert result["weights_identical_across_ranks"]

    bundle = work / "runs" / "bundle"
    out = run(connect_env, "bundle", "export", "--run", str(work / "runs" / "train" / "td"), "--out", str(bundle))
    assert out.returncode == 0, out.stderr[-3000:]
    score = ["score", "--bundle", str(bundle), "--source", "silver_reviews", *sets(work)]
    first = run(connect_env, *score)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads(first.stdout)
    assert report["path"] == "anti_join" and report["rows_scored"] == 5190

    silver = DeltaTable(str(work / "tables" / "silver_reviews"))
    ids = silver.to_pyarrow_table(columns=["review_id"]).column("review_id").to_pylist()
    silver.update(predicate=f"review_id = '{ids[0]}'", updates={"text": "'an utterly wonderful, joyous film'"})
    silver.delete(predicate=f"review_id = '{ids[1]}'")
    second = run(connect_env, *score)
    assert second.returncode == 0, second.stderr[-3000:]
    report = json.loads(second.stdout)
    assert report["path"] == "cdf" and report["rows_scored"] == 1
    assert report["rows_updated"] == 1 and report["rows_deleted"] == 1
    predictions = DeltaTable(str(work / "tables" / "predictions")).to_pyarrow_table(columns=["review_id"])
    assert predictions.num_rows == 5189 and ids[1] not in predictions.column("review_id").to_pylist()


def test_embed_and_search_run_through_connect(connect_env, raw_data, tmp_path):
    lines = (raw_data / "reviews" / "vader_amazon.jsonl").read_text().splitlines()[:200]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    common = ["--set", f"paths.tables_dir={tmp_path / 'tables'}", "--model-dir", str(raw_data / "minilm" / "model")]
    out = run(connect_env, "embed", "--input", str(tmp_path / "in.jsonl"), *common)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["inserted"] == 200
    first = json.loads(lines[0])
    hits = run(connect_env, "search", first["text"], "-k", "3", *common)
    assert hits.returncode == 0, hits.stderr[-3000:]
    assert hits.stdout.splitlines()[0].split()[2] == first["review_id"]  # a text finds itself first


def test_a_connect_session_is_a_client_without_a_spark_context(connect_env):
    probe = ("import json; from etl.core.spark import get_spark, is_connect; from etl.core.config import "
             "SparkSettings; from pyspark import SparkContext; s = get_spark(SparkSettings()); "
             "print(json.dumps({'connect': is_connect(s), 'gateway': SparkContext._gateway is None, "
             "'rows': s.range(10).count()}))")
    out = subprocess.run([sys.executable, "-c", probe], env=connect_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.splitlines()[-1]) == {"connect": True, "gateway": True, "rows": 10}
    assert os.environ.get("SPARK_REMOTE") is None  # the test process itself stays a classic session

"""The `lakedl` command as a user runs it: exit codes, messages that name the problem, real work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

LAKEDL = str(Path(sys.executable).parent / "lakedl")
REPO = Path(__file__).resolve().parents[2]


def run(*args, cwd=REPO, timeout=300):
    return subprocess.run([LAKEDL, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for command in ("demo", "config", "data", "bronze", "tables", "cluster", "train", "etl"):
        assert command in out.stdout


def test_config_show_prints_the_merged_yaml(conf_dir):
    out = run("config", "show", "demo", "--conf-dir", str(conf_dir), "--set", "spark.shuffle_partitions=4")
    assert out.returncode == 0, out.stderr
    shown = yaml.safe_load(out.stdout)
    assert shown["spark"]["shuffle_partitions"] == 4 and shown["bronze"]["table"] == "bronze_reviews"


def test_bad_config_key_exits_2_naming_key_and_file(conf_dir):
    (conf_dir / "local" / "demo.yml").write_text("bronze:\n  tabel: x\n")
    out = run("config", "show", "demo", "--conf-dir", str(conf_dir))
    assert out.returncode == 2
    assert "unknown key 'bronze.tabel'" in out.stderr and "local/demo.yml" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_set_value_exits_2_naming_the_key():
    out = run("config", "show", "common", "--set", "spark.driver_memory=4")
    assert out.returncode == 2
    assert "'spark.driver_memory' = 4 from --set" in out.stderr


def test_bad_cli_option_type_is_rejected():
    out = run("tables", "show", "x", "--limit", "zero")
    assert out.returncode == 2
    assert "--limit" in out.stderr


def test_sst_without_dir_and_with_a_wrong_dir(tmp_path):
    out = run("data", "sst")
    assert out.returncode == 2 and "missing required value 'sst.dir'" in out.stderr
    out = run("data", "sst", "--dir", str(tmp_path))
    assert out.returncode == 1 and "is not an SST directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_sst_conversion_reports_reconciled_counts(sst_dir, tmp_path):
    out = run("data", "sst", "--dir", str(sst_dir), "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    train = report["sst_train"]
    assert train["read"] == train["sentences"] + train["quarantined"] == 9645
    assert (tmp_path / "_quarantine" / "sst_train.jsonl").is_file()


def test_missing_table_is_a_clear_error(tmp_path):
    out = run("tables", "history", "nope", "--set", f"paths.tables_dir={tmp_path}")
    assert out.returncode == 1 and "table 'nope' does not exist" in out.stderr


@pytest.mark.spark
def test_bronze_load_then_tables_show(raw_data, tmp_path):
    reviews = tmp_path / "reviews"
    reviews.mkdir()
    shutil.copy(raw_data / "reviews" / "vader_tweets.jsonl", reviews)
    tables = f"paths.tables_dir={tmp_path / 'tables'}"
    out = run("bronze", "load", "--input", str(reviews), "--set", tables, "--set", "spark.master=local[2]")
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["rows_read"] == report["rows_inserted"] == 4200
    assert report["rows_by_source"] == {"vader_tweets": 4200}
    shown = run("tables", "show", "bronze_reviews", "--limit", "2", "--set", tables)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["rows"] == 4200 and doc["version"] == 0 and len(doc["head"]) == 2


@pytest.mark.spark
def test_etl_text_command_and_a_failing_quarantine_rate(raw_data, tmp_path):
    sets = ["--set", f"paths.tables_dir={tmp_path / 'tables'}", "--set", f"output.shards_dir={tmp_path / 'shards'}",
            "--set", "spark.master=local[2]"]
    out = run("etl", "text", "--input", str(raw_data / "reviews" / "vader_nyt.jsonl"), "--tokenizer", "minilm",
              "--set", f"tokenize.subword.minilm_dir={raw_data / 'minilm' / 'model'}", *sets)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["rows_read"] == report["rows_kept"] == 5190 and report["tokenizer"] == "minilm"
    assert (tmp_path / "shards" / "reviews" / "manifest.json").is_file()
    missing = run("etl", "text", "--input", str(tmp_path / "nowhere" / "*.jsonl"), *sets)
    assert missing.returncode == 1 and "nowhere/*.jsonl matches no file or directory" in missing.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"review_id": "x", "text": "fine"}\nnot json\n')
    out = run("etl", "text", "--input", str(bad), "--name", "bad", *sets)
    assert out.returncode == 1
    assert "1 of 2 rows (50.0%) were quarantined" in out.stderr and "lakedl tables show quarantine_bad" in out.stderr
    assert "Traceback" not in out.stderr


def test_tune_without_a_space_or_with_a_bad_strategy_says_what_to_pass(tmp_path):
    out = run("tune", "--set", f"paths.runs_dir={tmp_path}")
    assert out.returncode == 1 and "tune.space is not set: pass --space" in out.stderr
    out = run("tune", "--strategy", "annealing")
    assert out.returncode == 2 and "tune.strategy" in out.stderr
    assert "Traceback" not in out.stderr

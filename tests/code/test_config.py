"""Layered configuration: precedence, typed values, and errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.core.config import ConfigError, dump_config, parse_override
from etl.sources.config import DataSstConfig
from jobs.configs import load_config


def test_base_defaults_are_loaded_into_typed_objects(conf_dir):
    cfg = load_config("demo", conf_dir)
    assert cfg.spark.master == "local[*]"
    assert cfg.spark.shuffle_partitions == 8
    assert cfg.tables.backend == "auto"
    assert cfg.bronze.table == "bronze_reviews"
    assert cfg.fetch.sources == ["vader", "fashion_mnist", "gcide", "gensim_eval", "minilm"]


def test_layers_apply_in_order_base_local_conf_set(conf_dir, tmp_path):
    (conf_dir / "local" / "common.yml").write_text("spark:\n  shuffle_partitions: 3\n  driver_memory: 6g\n")
    (conf_dir / "local" / "demo.yml").write_text("spark:\n  shuffle_partitions: 5\n")
    extra = tmp_path / "extra.yml"
    extra.write_text("spark:\n  driver_memory: 1g\npaths:\n  runs_dir: /tmp/r\n")
    cfg = load_config("demo", conf_dir, [extra], ["paths.runs_dir=/tmp/s", "spark.conf={spark.x: y}"])
    assert cfg.spark.shuffle_partitions == 5          # local/demo.yml beats local/common.yml
    assert cfg.spark.driver_memory == "1g"            # --conf beats local
    assert cfg.paths.runs_dir == "/tmp/s"             # --set beats everything
    assert cfg.spark.conf == {"spark.x": "y"}
    assert cfg.spark.app_name == "lakedl"             # untouched keys keep the base value


def test_unknown_key_names_key_and_file(conf_dir):
    bad = conf_dir / "local" / "common.yml"
    bad.write_text("spark:\n  shuffle_partitons: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config("common", conf_dir)
    msg = str(err.value)
    assert "unknown key 'spark.shuffle_partitons'" in msg
    assert str(bad) in msg
    assert "shuffle_partitions" in msg  # the allowed keys are listed


def test_unknown_section_names_file(conf_dir):
    (conf_dir / "local" / "common.yml").write_text("sparkk:\n  master: local[1]\n")
    with pytest.raises(ConfigError, match=r"unknown key 'sparkk' in .*local/common.yml"):
        load_config("common", conf_dir)


def test_wrong_type_from_set_names_key_and_origin(conf_dir):
    with pytest.raises(ConfigError) as err:
        load_config("common", conf_dir, overrides=["spark.shuffle_partitions=lots"])
    msg = str(err.value)
    assert "'spark.shuffle_partitions' = 'lots' from --set" in msg
    assert "integer" in msg


def test_wrong_type_in_file_names_that_file(conf_dir):
    (conf_dir / "base" / "common.yml").write_text("spark:\n  ui_enabled: 'sometimes'\n")
    with pytest.raises(ConfigError, match=r"'spark.ui_enabled' = 'sometimes' from .*base/common.yml"):
        load_config("common", conf_dir)


def test_invalid_choice_is_rejected(conf_dir):
    with pytest.raises(ConfigError, match=r"'tables.backend' = 'hive' from --set"):
        load_config("common", conf_dir, overrides=["tables.backend=hive"])
    with pytest.raises(ConfigError, match=r"'spark.shuffle_partitions' = 0"):
        load_config("common", conf_dir, overrides=["spark.shuffle_partitions=0"])


def test_missing_required_value_is_named(conf_dir):
    with pytest.raises(ConfigError) as err:
        load_config("data_sst", conf_dir)
    assert "missing required value 'sst.dir'" in str(err.value)
    assert "--set sst.dir=" in str(err.value)
    cfg = load_config("data_sst", conf_dir, overrides=["sst.dir=/data/sst"])
    assert isinstance(cfg, DataSstConfig) and cfg.sst.dir == "/data/sst"


def test_several_problems_are_reported_together(conf_dir):
    with pytest.raises(ConfigError) as err:
        load_config("common", conf_dir, overrides=["spark.nope=1", "logging.level=LOUD"])
    assert "spark.nope" in str(err.value) and "logging.level" in str(err.value)


def test_bad_yaml_names_the_file(conf_dir):
    (conf_dir / "local" / "common.yml").write_text("spark: [unclosed\n")
    with pytest.raises(ConfigError, match=r"local/common.yml: not valid YAML"):
        load_config("common", conf_dir)


def test_top_level_must_be_a_mapping(conf_dir):
    (conf_dir / "local" / "common.yml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"top level must be a mapping"):
        load_config("common", conf_dir)


def test_missing_conf_dir_and_files_are_clear(tmp_path, conf_dir):
    with pytest.raises(ConfigError, match=r"base/common.yml not found"):
        load_config("common", tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"--conf .*missing.yml: file not found"):
        load_config("common", conf_dir, [tmp_path / "missing.yml"])
    with pytest.raises(ConfigError, match=r"unknown job 'trian'"):
        load_config("trian", conf_dir)


@pytest.mark.parametrize("text, expected", [
    ("a.b=3", {"a": {"b": 3}}),
    ("a=true", {"a": True}),
    ("a.b.c=[x, y]", {"a": {"b": {"c": ["x", "y"]}}}),
    ("a=", {"a": ""}),
    ("a=x=y", {"a": "x=y"}),
    ("a=1e-6", {"a": 1e-6}),      # YAML 1.2 floats: PyYAML alone reads these two as strings
    ("a=-3E4", {"a": -30000.0}),
    ("a=1e", {"a": "1e"}),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["novalue", "=3", "a..b=1"])
def test_parse_override_rejects_malformed(text):
    with pytest.raises(ConfigError, match="--set"):
        parse_override(text)


def test_exponents_without_a_dot_are_numbers_in_files_and_set(conf_dir, tmp_path):
    extra = tmp_path / "optim.yml"
    extra.write_text("optim:\n  eps: 1e-6\n")
    cfg = load_config("train", conf_dir, [extra], ["optim.lr=3e-4"])
    assert (cfg.optim.eps, cfg.optim.lr) == (1e-6, 3e-4)


def test_max_norm_must_be_positive(conf_dir):
    assert load_config("train", conf_dir, overrides=["train.max_norm=3"]).train.max_norm == 3.0
    with pytest.raises(ConfigError, match=r"'train.max_norm' = 0 from --set: Input should be greater than 0"):
        load_config("train", conf_dir, overrides=["train.max_norm=0"])


def test_dump_round_trips_through_a_conf_file(conf_dir, tmp_path):
    cfg = load_config("demo", conf_dir, overrides=["spark.shuffle_partitions=7"])
    dumped = tmp_path / "dumped.yml"
    dumped.write_text(dump_config(cfg))
    again = load_config("demo", conf_dir, [dumped])
    assert again == cfg


def test_demo_trains_with_train_yml_and_the_demo_settings(conf_dir):
    from jobs.flows.demo import train_config

    demo = load_config("demo", conf_dir, overrides=["paths.runs_dir=/tmp/demo-runs", "demo.model=cnn",
                                                    "demo.epochs=3", "spark.shuffle_partitions=3"])
    cfg = train_config(demo, "/data/shards/reviews", conf_dir)
    assert (cfg.data.shards, cfg.model.name, cfg.train.epochs) == ("/data/shards/reviews", "cnn", 3)
    assert (cfg.launcher.kind, cfg.launcher.num_processes, cfg.run.name) == ("local", 2, "demo")
    assert cfg.paths.runs_dir == "/tmp/demo-runs" and cfg.spark.shuffle_partitions == 3  # the demo's common sections
    assert cfg.optim == load_config("train", conf_dir).optim  # the rest from train.yml
    with pytest.raises(ConfigError, match="demo.model"):
        load_config("demo", conf_dir, overrides=["demo.model=gpt"])  # an LM has no sentiment to score


def test_demo_trains_a_recipe_on_its_own_shards(conf_dir, tmp_path):
    from etl.core.errors import MissingInput
    from jobs.flows.demo import train_config

    general = Path(__file__).parents[2] / "conf" / "recipes" / "sentiment_general.yml"
    shards = tmp_path / "general"
    recipe = tmp_path / "sentiment_general.yml"
    recipe.write_text(general.read_text().replace("data/shards/general", str(shards)))
    demo = load_config("demo", conf_dir, overrides=[f"demo.recipe={recipe}", "demo.processes=3"])
    with pytest.raises(MissingInput, match="holds no shards: build them first with the `lakedl etl text` command"):
        train_config(demo, "/data/shards/reviews", conf_dir)
    shards.mkdir()
    (shards / "manifest.json").write_text("{}")
    cfg = train_config(demo, "/data/shards/reviews", conf_dir)
    assert (cfg.data.shards, cfg.model.name, cfg.model.embeddings) == (str(shards), "rnn", "data/raw/glove100/vectors.bin")
    assert (cfg.train.epochs, cfg.schedule.name, cfg.run.name) == (5, "cosine", "sentiment_general")  # the recipe's
    assert (cfg.launcher.kind, cfg.launcher.num_processes) == ("local", 3)  # the demo's


def test_train_stop_at_and_patience_become_the_runs_epoch_end_callbacks(conf_dir, tmp_path):
    from dl.engine.callbacks import EarlyStopping, StopAtTarget
    from dl.train.job import worker_settings

    cfg = load_config("train", conf_dir, overrides=["train.stop_at=0.84", "train.patience=2"])
    assert worker_settings(cfg, tmp_path).callbacks == [EarlyStopping(2), StopAtTarget(0.84)]
    assert worker_settings(load_config("train", conf_dir), tmp_path).callbacks == []

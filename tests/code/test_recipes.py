"""Recipes are configuration: every quality row of bench/ is a conf/recipes/*.yml that `lakedl train --conf`
(or `lakedl etl text --conf`, `lakedl w2v train --conf`) validates, and every recipe belongs to a row
(sentiment_general's are bench/transfer.py's, one per domain)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from jobs.configs import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "conf" / "recipes"


@pytest.fixture(scope="module")
def rows():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import quality_gan
        import quality_images
        import quality_sst
    finally:
        sys.path.remove(str(REPO / "bench"))
    return {"sst": quality_sst, "images": quality_images, "gan": quality_gan}


def test_every_quality_row_is_a_valid_recipe_and_every_recipe_a_row(rows):
    train = {*rows["sst"].ROWS, *rows["images"].ROWS, *rows["gan"].ROWS, "gpt_vader"}
    for name in sorted(train):
        cfg = load_config("train", REPO / "conf", [RECIPES / f"{name}.yml"])
        assert cfg.launcher.num_processes == 2 and cfg.train.seed == 0, name  # as the figures were measured
    general = load_config("train", REPO / "conf", [RECIPES / "sentiment_general.yml"])  # rows: transfer.json
    assert general.launcher.num_processes == 2 and general.train.seed == 0 and general.data.shards.endswith("general")
    etl = {"sst_phrases", "sst_minilm", "sst_minilm_phrases", "vader", "general"}
    for name in sorted(etl):
        assert load_config("etl_text", REPO / "conf", [RECIPES / "etl" / f"{name}.yml"]).output.name == name
    load_config("w2v", REPO / "conf", [RECIPES / "w2v_skipgram.yml"])
    on_disk = {p.stem for p in RECIPES.glob("*.yml")}
    assert on_disk == train | {"w2v_skipgram", "sentiment_general"}
    assert {p.stem for p in (RECIPES / "etl").glob("*.yml")} == etl


def test_the_two_reproduced_rows_say_what_they_train(rows):
    bilstm = load_config("train", REPO / "conf", [RECIPES / "bilstm_glove_cos_sst2.yml"])
    assert (bilstm.model.name, bilstm.model.rnn.hidden, bilstm.schedule.name, bilstm.train.epochs) == ("rnn", 150, "cosine", 5)
    assert bilstm.model.embeddings == "data/raw/glove100/vectors.bin"
    lenet = load_config("train", REPO / "conf", [RECIPES / "lenet5.yml"])
    assert (lenet.model.name, lenet.train.task, lenet.train.epochs, lenet.data.augment.flip) == ("lenet5", "class", 12, True)


def test_a_recipe_with_a_typo_is_refused_naming_the_file(tmp_path):
    bad = tmp_path / "typo.yml"
    bad.write_text((RECIPES / "lenet5.yml").read_text().replace("epochs: 12", "epocs: 12"))
    with pytest.raises(ConfigError, match="epocs.*typo.yml"):
        load_config("train", REPO / "conf", [bad])

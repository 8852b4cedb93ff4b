"""``lakedl demo`` as a flow of the stages' job bodies. ``run_demo`` is the data half: fetch → (SST) →
bronze → text ETL. Then the model half: train on the text ETL's shards with the local launcher (gloo,
``demo.processes`` processes), export the run as an inference bundle and score the silver table into
the predictions table incrementally — the same job bodies as ``lakedl train``, ``lakedl bundle export``
and ``lakedl score --source``. With ``demo.images`` also the image pipeline: ``lakedl etl images`` on
Fashion-MNIST and a short ``lakedl train`` of ``demo.image_model`` (run ``demo_images``).

The run is named ``demo``; a second demo reuses it (same weights, same model version), so its scoring
run adds nothing, like the rest of the demo. ``demo.retrain=true`` trains anew."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from dl.train.config import TrainConfig  # noqa: F401  (registers the train job)
from etl.bronze import BronzeSettings, run_load_bronze
from etl.core import catalog
from etl.core.config import Section, load_config, register_job
from etl.core.errors import MissingInput
from etl.core.logs import get_logger
from etl.images.config import ImageEtlConfig  # noqa: F401  (registers the etl_images job)
from etl.sources.config import FetchSettings
from etl.sources.fetch import REVIEWS_DIR, raw_dir, run_data_fetch
from etl.sources.sst import convert_sst
from etl.text.config import TextEtlConfig
from etl.text.pipeline import run_etl_text

log = get_logger(__name__)


class DemoSettings(Section):
    sst_dir: str | None = Field(None, description="SST trees to convert and load too (make demo passes ../shared/data/sst)")
    train: bool = Field(True, description="after the ETL: train on the shards, export an inference bundle and "
                                          "score silver_<output.name> into the predictions table")
    model: Literal["bow", "rnn", "cnn", "transformer"] = Field("rnn", description="model.name of the demo run "
                                                                                   "(the other train settings: train.yml)")
    epochs: int = Field(2, ge=1)
    recipe: str | None = Field(None, description="a training recipe (e.g. conf/recipes/sentiment_general.yml) to "
                               "train the text model with instead of demo.model/demo.epochs: its shards (data.shards, "
                               "built first with the ETL command its header names), model and settings, on "
                               "demo.processes processes; the run is named after the recipe and its bundle "
                               "scores the demo's silver table")
    processes: int = Field(2, ge=1, description="training processes (local launcher, gloo)")
    retrain: bool = Field(False, description="train anew even if runs/train/demo finished before (a new model version "
                                             "scores every row again)")
    sample: int = Field(5, ge=0, description="predictions printed at the end")
    images: bool = Field(True, description="also the image pipeline: `lakedl etl images` on Fashion-MNIST, then "
                                           "a short image-model run on the same processes")
    image_model: Literal["lenet5", "alexnet_small", "resnet_small"] = "lenet5"
    image_epochs: int = Field(1, ge=1)


class DemoConfig(TextEtlConfig):
    fetch: FetchSettings = FetchSettings()
    bronze: BronzeSettings = BronzeSettings()
    demo: DemoSettings = DemoSettings()

    @model_validator(mode="after")
    def _reads_its_bronze(self):
        if self.input.format == "bronze" and self.input.table != self.bronze.table:
            raise ValueError(f"input.table={self.input.table} but the demo loads bronze.table={self.bronze.table}: "
                             "set both to the same table")
        return self


register_job("demo", DemoConfig)

COMMON = ("spark", "paths", "tables", "tracking", "logging")
RUN_NAME = "demo"
IMAGE_RUN = "demo_images"


def train_config(cfg: DemoConfig, shards: str | os.PathLike, conf_dir: str | os.PathLike | None = None):
    """train.yml (from ``conf_dir``) with the demo's data, model, epochs and processes — or, with
    ``demo.recipe``, that recipe on its own shards — and the demo's common sections (spark, paths, tables,
    tracking, logging)."""
    launcher = ["launcher.kind=local", f"launcher.num_processes={cfg.demo.processes}"]
    if cfg.demo.recipe:
        recipe = Path(cfg.demo.recipe)
        train = load_config("train", conf_dir, [recipe], overrides=[*launcher, f"run.name={recipe.stem}"])
        if not (Path(train.data.shards) / "manifest.json").is_file():
            raise MissingInput(f"demo.recipe={recipe} trains on data.shards={train.data.shards}, which holds no shards: "
                            f"build them first with the `lakedl etl text` command in {recipe}'s header")
    else:
        train = load_config("train", conf_dir, overrides=[
            f"data.shards={json.dumps(str(shards))}", f"model.name={cfg.demo.model}",
            f"train.epochs={cfg.demo.epochs}", *launcher, f"run.name={RUN_NAME}"])
    return train.model_copy(update={k: getattr(cfg, k) for k in COMMON})


def train_and_score(cfg: DemoConfig, etl_text: dict, spark=None, conf_dir: str | os.PathLike | None = None) -> dict:
    from pyspark.sql import functions as F

    from dl.serve.bundle import export_bundle
    from dl.serve.mlflow_model import log_run_model
    from dl.serve.score import score_incremental
    from dl.train.job import run_train
    from dl.train.rundir import run_dir
    from etl.core.spark import get_spark
    from etl.core.tables import TableStore

    tcfg = train_config(cfg, etl_text["shards_dir"], conf_dir)
    name = tcfg.run.name
    directory = run_dir(tcfg, name)
    if cfg.demo.retrain and directory.exists():
        shutil.rmtree(directory)
    if (directory / "result.json").is_file():
        log.info("demo: reusing the finished run %s (demo.retrain=true trains anew)", directory)
        summary = json.loads((directory / "result.json").read_text())
        summary["reused"] = True
    else:
        summary = run_train(tcfg)
        log_run_model(tcfg, summary)  # the bundle as an MLflow pyfunc model in the run
        summary["reused"] = False
    bundle = export_bundle(directory, Path(cfg.paths.runs_dir) / "bundles" / name)
    spark = spark or get_spark(cfg.spark)
    store = TableStore.from_config(cfg, spark)
    silver = catalog.silver(cfg.output.name)
    scoring = score_incremental(store, silver, bundle)
    sample = []
    if cfg.demo.sample:
        texts = store.read(silver).select("review_id", "text")
        sample = [r.asDict() for r in (store.read(catalog.PREDICTIONS)
                                       .filter(F.col("model_version") == scoring["model_version"])
                                       .join(texts, "review_id").orderBy(F.xxhash64("review_id"))
                                       .limit(cfg.demo.sample).collect())]
    return {"train": summary, "bundle": str(bundle), "score": scoring, "sample": sample}


def images(cfg: DemoConfig, spark=None, conf_dir: str | os.PathLike | None = None) -> dict:
    """Fashion-MNIST (fetched by the demo) through the image ETL, then ``demo.image_epochs`` of
    ``demo.image_model`` on ``demo.processes`` processes; a finished run is reused like the text run."""
    from dl.train.job import run_train
    from dl.train.rundir import run_dir
    from etl.images.pipeline import run_etl_images

    fashion = Path(cfg.paths.raw_dir) / "fashion_mnist"  # where the demo's fetch put it
    ecfg = load_config("etl_images", conf_dir, overrides=[f"input.paths={json.dumps([str(fashion)])}",
                                                          "input.format=idx"])
    ecfg = ecfg.model_copy(update={k: getattr(cfg, k) for k in COMMON})
    etl = run_etl_images(ecfg, spark)
    tcfg = load_config("train", conf_dir, overrides=[
        f"data.shards={json.dumps(etl['shards_dir'])}", f"model.name={cfg.demo.image_model}", "train.task=class",
        f"train.epochs={cfg.demo.image_epochs}", "data.augment.mean=0.286", "data.augment.std=0.353",
        "data.eval_train_rows=6000", "launcher.kind=local", f"launcher.num_processes={cfg.demo.processes}",
        f"run.name={IMAGE_RUN}"])
    tcfg = tcfg.model_copy(update={k: getattr(cfg, k) for k in COMMON})
    directory = run_dir(tcfg, IMAGE_RUN)
    if cfg.demo.retrain and directory.exists():
        shutil.rmtree(directory)
    if (directory / "result.json").is_file():
        log.info("demo: reusing the finished image run %s (demo.retrain=true trains anew)", directory)
        return {"etl": etl, "train": {**json.loads((directory / "result.json").read_text()), "reused": True}}
    return {"etl": etl, "train": {**run_train(tcfg), "reused": False}}


def run_demo(cfg: DemoConfig, spark=None) -> dict:
    """The data half: fetch → (SST conversion) → bronze table → text ETL of what bronze gained → counts."""
    fetched = run_data_fetch(cfg)
    sst = convert_sst(cfg.demo.sst_dir, raw_dir(cfg) / REVIEWS_DIR) if cfg.demo.sst_dir else {}
    bronze = run_load_bronze(cfg, spark)
    text = run_etl_text(cfg, spark)  # demo.yml: input.format=bronze, the rows the bronze load added
    return {"fetched": fetched, "sst": sst, "bronze": bronze.as_dict(), "etl_text": text}

"""Job bodies: each takes a validated config, does one job's work and returns what it did.
Entry points (CLI, spark-submit scripts, notebooks) only load the config and call these."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from etl.config import DataFetchConfig, DataSstConfig, DemoConfig, LoadBronzeConfig
from etl.logs import get_logger

log = get_logger(__name__)


def new_run_id(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def raw_dir(cfg) -> Path:
    return Path(getattr(getattr(cfg, "fetch", None), "cache_dir", None) or cfg.paths.raw_dir)


def run_data_fetch(cfg: DataFetchConfig | DemoConfig) -> dict[str, dict]:
    """Fetch the configured demo sources into the raw cache; returns what each source did."""
    from etl.fetch import fetch_all

    return fetch_all(cfg.fetch.sources, raw_dir(cfg))


def run_data_sst(cfg: DataSstConfig) -> dict[str, int]:
    """Convert SST trees to canonical review JSON lines (rows written per split)."""
    from etl.fetch import REVIEWS_DIR
    from etl.sst import convert_sst

    out = cfg.sst.out_dir or str(Path(cfg.paths.raw_dir) / REVIEWS_DIR)
    return convert_sst(cfg.sst.dir, out, cfg.sst.phrases)


@dataclass
class BronzeReport:
    run_id: str
    table: str
    rows_read: int
    rows_corrupt: int
    rows_inserted: int
    version: int
    rows_by_source: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def run_load_bronze(cfg: LoadBronzeConfig | DemoConfig, spark=None) -> BronzeReport:
    """Load canonical raw reviews into the bronze table and count its rows per source."""
    from etl.bronze import counts_by_source, load_bronze
    from etl.spark import get_spark, job_description
    from etl.tables import TableStore

    spark = spark or get_spark(cfg.spark)
    store = TableStore.from_config(cfg, spark)
    run_id = new_run_id("bronze")
    source = cfg.bronze.input
    if not any(Path(source).glob("*.json*")) and Path(source).is_dir():
        raise FileNotFoundError(f"no JSON-lines files in {source}: run `lakedl data fetch` first")
    with job_description(spark, f"lakedl bronze load {run_id}"):
        loaded = load_bronze(spark, store, source, cfg.bronze.table, run_id)
        by_source = counts_by_source(store.read(cfg.bronze.table))
    report = BronzeReport(run_id, cfg.bronze.table, loaded.rows_read, loaded.rows_corrupt, loaded.rows_inserted,
                          loaded.version, by_source)
    log.info("bronze loaded", extra=report.as_dict())
    return report


def run_etl_text(cfg, spark=None) -> dict:
    """The text ETL (etl.text_etl) as a job: one run id, a Spark job description, a plain-dict report."""
    from etl.spark import get_spark, job_description
    from etl.text_etl import run_text_etl

    spark = spark or get_spark(cfg.spark)
    run_id = new_run_id("etl-text")
    with job_description(spark, f"lakedl etl text {run_id}"):
        return asdict(run_text_etl(cfg, spark, run_id))


def run_etl_images(cfg, spark=None) -> dict:
    """The image ETL (etl.images) as a job: one run id, a Spark job description, a plain-dict report."""
    from etl.images import run_image_etl
    from etl.spark import get_spark, job_description

    spark = spark or get_spark(cfg.spark)
    run_id = new_run_id("etl-images")
    with job_description(spark, f"lakedl etl images {run_id}"):
        return asdict(run_image_etl(cfg, spark, run_id))


def run_demo(cfg: DemoConfig, spark=None) -> dict:
    """fetch → (SST conversion) → bronze table → text ETL → counts."""
    from etl.fetch import REVIEWS_DIR
    from etl.sst import convert_sst

    fetched = run_data_fetch(cfg)
    sst = convert_sst(cfg.demo.sst_dir, raw_dir(cfg) / REVIEWS_DIR) if cfg.demo.sst_dir else {}
    bronze = run_load_bronze(cfg, spark)
    text = run_etl_text(cfg, spark)
    return {"fetched": fetched, "sst": sst, "bronze": bronze.as_dict(), "etl_text": text}

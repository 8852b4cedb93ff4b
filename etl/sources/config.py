"""Configuration of the source jobs: ``lakedl data fetch`` and ``lakedl data sst``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from etl.core.config import CommonConfig, Section, register_job

FetchSource = Literal["vader", "fashion_mnist", "gcide", "gensim_eval", "minilm", "glove100"]


class FetchSettings(Section):
    sources: list[FetchSource] = Field(
        default_factory=lambda: ["vader", "fashion_mnist", "gcide", "gensim_eval", "minilm"]
    )
    cache_dir: str | None = Field(None, description="default: paths.raw_dir")


class SstSettings(Section):
    dir: str = Field(description="directory holding SST's train.txt, dev.txt and test.txt")
    out_dir: str | None = Field(None, description="default: <paths.raw_dir>/sst")
    phrases: bool = Field(False, description="also write every labelled subtree of train (phrase level)")


class DataFetchConfig(CommonConfig):
    fetch: FetchSettings = FetchSettings()


class DataSstConfig(CommonConfig):
    sst: SstSettings


register_job("data_fetch", DataFetchConfig)
register_job("data_sst", DataSstConfig)

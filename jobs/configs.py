"""Every job's configuration class, registered by importing the module that defines it; ``load_config(job)``
here knows them all (etl.core.config's loader knows only the jobs imported so far)."""

from __future__ import annotations

import dl.train.config  # noqa: F401  train
import dl.tune.study  # noqa: F401  tune
import dl.w2v.train  # noqa: F401  w2v
import etl.bronze  # noqa: F401  load_bronze
import etl.images.config  # noqa: F401  etl_images
import etl.sources.config  # noqa: F401  data_fetch, data_sst
import etl.text.config  # noqa: F401  etl_text
import jobs.flows.demo  # noqa: F401  demo
from etl.core.config import JOBS, ConfigError, dump_config, load_config

__all__ = ["JOBS", "ConfigError", "dump_config", "load_config"]

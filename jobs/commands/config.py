"""``lakedl config show``."""

from __future__ import annotations

from typing import Annotated

import typer

from jobs.commands.common import ConfDir, ConfFiles, Sets, load
from jobs.configs import dump_config


def config_show(job: Annotated[str, typer.Argument(help="job name: common, data_fetch, data_sst, load_bronze, "
                                                     "etl_text, etl_images, train, w2v, demo")],
                conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Print the merged configuration of JOB (base → local → --conf → --set)."""
    typer.echo(dump_config(load(job, conf_dir, conf, set_)), nl=False)

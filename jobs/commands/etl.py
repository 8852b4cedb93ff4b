"""``lakedl etl text|images``: the Spark ETL stages."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from jobs.commands.common import ConfDir, ConfFiles, Sets, echo_json, load, option_overrides


def etl_text(input: Annotated[Optional[list[str]], typer.Option(
                 "--input", help="file, directory or glob; repeatable (default: input.paths)")] = None,
             format: Annotated[Optional[str], typer.Option(help="json, csv, sst or text (default: input.format)")] = None,
             tokenizer: Annotated[Optional[str], typer.Option(
                 help="word, wordpiece, bpe or minilm (default: tokenize.kind)")] = None,
             name: Annotated[Optional[str], typer.Option(help="dataset name (default: output.name)")] = None,
             conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Validate, tokenize and encode review text into the silver table and Parquet shards (incremental)."""
    from etl.text.pipeline import run_etl_text

    extra = [f"input.paths={json.dumps(input)}"] if input else []
    extra += option_overrides({"input.format": format, "tokenize.kind": tokenizer, "output.name": name})
    cfg = load("etl_text", conf_dir, conf, set_, extra)
    echo_json(run_etl_text(cfg))


def etl_images(input: Annotated[Optional[list[str]], typer.Option(
                   "--input", help="idx folder, class-per-folder root(s) or manifest file(s); repeatable "
                                   "(default: input.paths)")] = None,
               format: Annotated[Optional[str], typer.Option(help="idx, folder or manifest (default: input.format)")]
               = None,
               name: Annotated[Optional[str], typer.Option(help="dataset name (default: output.name)")] = None,
               conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Decode and validate images in Spark (bad ones quarantined) into Petastorm datasets, one per split."""
    from etl.images.pipeline import run_etl_images

    extra = [f"input.paths={json.dumps(input)}"] if input else []
    extra += option_overrides({"input.format": format, "output.name": name})
    cfg = load("etl_images", conf_dir, conf, set_, extra)
    echo_json(run_etl_images(cfg))

"""The ``lakedl`` command line: assembles the commands of ``jobs/commands/`` (one module per stage) into one
Typer app. Every command loads its job's layered config, then calls one library function from ``etl``/``dl``;
each is also a spark-submit script under ``jobs/``.

Errors: every failure a user can act on is a ``LakedlError`` (etl/core/errors.py); ``main`` prints it as one
``error:`` line and exits with its code (2 for configuration and usage, 1 otherwise). Anything else is a bug
in lakedl and keeps its traceback."""

from __future__ import annotations

import sys

import typer

from etl.core.errors import LakedlError
from jobs.commands import cluster, config, data, demo, etl, serve, tables, train, viz, w2v


def _group(help: str) -> typer.Typer:
    return typer.Typer(no_args_is_help=True, help=help)


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="lakedl: Spark ETL, distributed PyTorch training and batch scoring.")
groups = {
    "config": _group("Inspect the layered configuration."),
    "data": _group("Acquire and convert raw data."),
    "bronze": _group("Bronze (raw) Delta tables."),
    "etl": _group("Spark ETL into Delta tables and Parquet shards."),
    "bundle": _group("Inference bundles (weights, tokenizer, config; no pickle)."),
    "model": _group("MLflow models: register a trained run's model under a name and alias."),
    "viz": _group("Pictures of trained models."),
    "w2v": _group("Distributed word2vec: corpus, training, queries, evaluation."),
    "tables": _group("Inspect the project's Delta tables; turn on a change data feed."),
    "cluster": _group("A Spark standalone cluster on this machine: on 127.0.0.1, or on separate network hosts."),
}
for name, group in groups.items():
    app.add_typer(group, name=name)

# (group or None for a top-level command, command name, function)
COMMANDS = [
    ("config", "show", config.config_show),
    ("data", "fetch", data.data_fetch),
    ("data", "sst", data.data_sst),
    ("bronze", "load", data.bronze_load),
    ("etl", "text", etl.etl_text),
    ("etl", "images", etl.etl_images),
    (None, "train", train.train),
    (None, "tune", train.tune),
    (None, "report", train.report),
    ("bundle", "export", serve.bundle_export),
    ("model", "register", serve.model_register),
    (None, "score", serve.score),
    (None, "explain", serve.explain),
    (None, "embed", serve.embed),
    (None, "search", serve.search_reviews),
    (None, "sample", serve.sample_text),
    ("viz", "lstm", viz.viz_lstm),
    ("viz", "images", viz.viz_images),
    ("w2v", "corpus", w2v.w2v_corpus),
    ("w2v", "train", w2v.w2v_train),
    ("w2v", "neighbors", w2v.w2v_neighbors),
    ("w2v", "analogy", w2v.w2v_analogy),
    ("w2v", "plot", w2v.w2v_plot),
    ("w2v", "eval", w2v.w2v_eval),
    ("tables", "history", tables.tables_history),
    ("tables", "show", tables.tables_show),
    ("tables", "change-feed", tables.tables_change_feed),
    (None, "demo", demo.demo),
    ("cluster", "up", cluster.cluster_up),
    ("cluster", "status", cluster.cluster_status),
    ("cluster", "down", cluster.cluster_down),
]
for group, name, fn in COMMANDS:
    (groups[group] if group else app).command(name)(fn)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a LakedlError prints one ``error:`` line and exits with its code."""
    try:
        app(args=argv, prog_name="lakedl")
    except LakedlError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()

"""``lakedl tables history|show|change-feed``: inspect the project's Delta tables, turn on a change feed."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from jobs.commands.common import ConfDir, ConfFiles, Sets, echo_json, load


def _store(conf_dir, conf, set_):
    from etl.core.tables import TableStore

    cfg = load("common", conf_dir, conf, set_)
    return TableStore(cfg.paths.tables_dir, backend="delta-rs")


def tables_history(name: Annotated[str, typer.Argument(help="table name, e.g. bronze_reviews")],
                   conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Print a table's versions (operation, time, metrics), newest first."""

    echo_json(_store(conf_dir, conf, set_).history(name))


def tables_show(name: Annotated[str, typer.Argument(help="table name")],
                version: Annotated[Optional[int], typer.Option(help="time travel to this version")] = None,
                limit: Annotated[int, typer.Option(min=1, help="rows to print")] = 10,
                conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Print a table's version, row count, schema and first rows."""

    store = _store(conf_dir, conf, set_)
    data = store.read_arrow(name, version)
    head = _printable_rows(data.slice(0, limit))
    echo_json({"table": name, "version": version if version is not None else store.version(name),
                "rows": data.num_rows, "schema": str(data.schema).splitlines(), "head": head})


def tables_change_feed(name: Annotated[str, typer.Argument(help="table name")],
                       conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Turn on Delta's change data feed for a table lakedl did not create (tables it writes have it), so
    `score --source` reads only its changes from the next version on."""

    store = _store(conf_dir, conf, set_)
    echo_json({"table": name, "change_feed": True, "version": store.enable_change_feed(name)})


def _printable_rows(data) -> list[dict]:
    """Rows as Python values; binary values and strings that are not valid UTF-8 (written by older
    versions into quarantine tables) are shown with their bad bytes escaped (``\\xff``), never refused."""
    import pyarrow as pa

    def show(col):
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            return [None if v is None else v.decode("utf-8", "backslashreplace") for v in col.to_pylist()]
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            binary = pa.large_binary() if pa.types.is_large_string(col.type) else pa.binary()
            return show(col.cast(binary))
        return col.to_pylist()

    columns = {name: show(data.column(name)) for name in data.column_names}
    return [{name: values[i] for name, values in columns.items()} for i in range(data.num_rows)]

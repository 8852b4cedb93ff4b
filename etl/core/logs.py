"""Structured logging: ``key=value`` text or JSON lines, configured once by the entry point."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_RESERVED = set(vars(logging.makeLogRecord({})))


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        if self.json:
            doc: dict[str, Any] = {"ts": ts, "level": record.levelname, "logger": record.name,
                                   "msg": record.getMessage(), **fields}
            if record.exc_info:
                doc["exc"] = self.formatException(record.exc_info)
            return json.dumps(doc, default=str)
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}" + (f" {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def quiet_known_warnings() -> None:
    """Silence the third-party warnings a correct run prints by the dozen, by their text (not by the module
    they are attributed to, which differs between petastorm's reader threads, its ETL helpers and pyarrow):
    petastorm 0.12 on pyarrow 14 (the pins petastorm forces, STACK.md) calls pyarrow's legacy dataset API,
    which warns on every call, and its reader threads leave Parquet files to the garbage collector. Called
    by every entry point (the CLI's logging set-up, each launched worker process) and by the modules that
    use petastorm, so notebooks get it too."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(deprecated as of pyarrow|"
                            r"use_legacy_dataset|ParquetDatasetPiece)")
    warnings.filterwarnings("ignore", category=ResourceWarning,
                            message=r"unclosed file <_io\.BufferedReader name='[^']*\.parquet'>")


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Route the ``etl``/``dl``/``jobs`` loggers to stderr; py4j and friends stay at WARNING."""
    quiet_known_warnings()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    for name in ("etl", "dl", "jobs"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    for noisy in ("py4j", "urllib3", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)

"""Structured logging: ``key=value`` text or JSON lines, configured once by the entry point."""

from __future__ import annotations

import json
import logging
import os
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


# petastorm 0.12 on pyarrow 14 (the pins petastorm forces, STACK.md): its legacy-dataset calls warn on every
# call, and its reader threads leave Parquet files to the garbage collector; neither is actionable for a user.
_KNOWN_WARNINGS = (
    ("FutureWarning", "petastorm.fs_utils"), ("FutureWarning", "petastorm.reader"),
    ("FutureWarning", "petastorm.py_dict_reader_worker"), ("FutureWarning", "petastorm.arrow_reader_worker"),
    ("FutureWarning", "petastorm.etl.dataset_metadata"), ("FutureWarning", "petastorm.unischema"),
    ("FutureWarning", "petastorm.utils"),
    ("ResourceWarning", "petastorm.workers_pool.thread_pool"),
)


def quiet_known_warnings() -> None:
    """Silence the third-party warnings a correct run prints by the dozen (``_KNOWN_WARNINGS``), in this
    process and — through ``PYTHONWARNINGS``, read before anything runs — in every process it starts:
    training workers, Spark's Python workers (they inherit the JVM's environment, which inherits ours).
    The environment route also survives libraries that reset the filter list. Idempotent; called by the CLI's
    logging set-up, each launched worker and dl/data/image_loader.py (so notebooks reading images get it too)."""
    import warnings

    for category, module in _KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", category={"FutureWarning": FutureWarning,
                                                     "ResourceWarning": ResourceWarning}[category],
                                module=module.replace(".", r"\.") + r"\Z")
    ours = [f"ignore::{category}:{module}" for category, module in _KNOWN_WARNINGS]
    given = [w for w in os.environ.get("PYTHONWARNINGS", "").split(",") if w and w not in ours]
    os.environ["PYTHONWARNINGS"] = ",".join([*given, *ours])


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

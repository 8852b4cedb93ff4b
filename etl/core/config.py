"""Layered YAML configuration loaded into typed objects.

Layers, later wins: ``conf/base/common.yml``, ``conf/base/<job>.yml``, ``conf/local/common.yml``,
``conf/local/<job>.yml``, any ``--conf FILE`` given, then ``--set a.b=c`` overrides. Every leaf value
remembers the layer it came from, so an unknown key, a wrong type or a missing required value is
reported with the key and the file that set (or failed to set) it, before any work starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from etl.core.errors import LakedlError

SET_SOURCE = "--set"


class ConfigError(LakedlError, ValueError):
    """A configuration problem the user must fix; the message names the key and the file."""

    exit_code = 2


class Section(BaseModel):
    """Base of every config section: unknown keys and silent type coercion are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ---------------------------------------------------------------------------------------------
# Sections shared by every job
# ---------------------------------------------------------------------------------------------
class SparkSettings(Section):
    master: str = Field("local[*]", description="master for the embedded session; ignored under spark-submit")
    remote: str | None = Field(None, description="sc://host:port: run on this Spark Connect server instead of a "
                               "session in this process (default: $SPARK_REMOTE; `lakedl cluster up --connect`)")
    app_name: str = "lakedl"
    shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions (embedded only)")
    ui_enabled: bool = False
    driver_memory: str = "4g"
    arrow_max_records_per_batch: int = Field(10_000, ge=1)
    conf: dict[str, str] = Field(default_factory=dict, description="extra spark.* settings (embedded only)")


class PathsSettings(Section):
    raw_dir: str = "data/raw"
    tables_dir: str = "data/tables"
    work_dir: str = "data/work"
    runs_dir: str = "runs"


class TablesSettings(Section):
    backend: Literal["auto", "delta-rs", "delta-spark"] = "auto"


class TrackingSettings(Section):
    experiment: str = "lakedl"
    mlflow_uri: str | None = Field(None, description="default: $MLFLOW_TRACKING_URI, else file store under runs_dir")
    registry_uri: str | None = Field(None, description="MLflow Model Registry; default: the tracking store when it "
                                     "is a database or server, else sqlite:///<runs_dir>/mlflow-registry.db")
    tensorboard: bool = True


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class CommonConfig(Section):
    spark: SparkSettings = SparkSettings()
    paths: PathsSettings = PathsSettings()
    tables: TablesSettings = TablesSettings()
    tracking: TrackingSettings = TrackingSettings()
    logging: LoggingSettings = LoggingSettings()


# Job name -> its config class. Each stage registers its own (``register_job`` next to the class);
# ``jobs.configs`` imports them all, so ``jobs.configs.load_config(name)`` knows every job.
JOBS: dict[str, type[CommonConfig]] = {"common": CommonConfig}
# Jobs whose config builds on another job's files: `tune` reads train.yml, then tune.yml (conf/base, then conf/local)
JOB_BASES: dict[str, tuple[str, ...]] = {}


def register_job(name: str, model: type[CommonConfig], bases: Sequence[str] = ()) -> type[CommonConfig]:
    """Make ``name`` a job whose files (conf/base/<name>.yml ...) validate into ``model``."""
    JOBS[name] = model
    if bases:
        JOB_BASES[name] = tuple(bases)
    return model


def job_model(job: str) -> type[CommonConfig]:
    if job not in JOBS:
        raise ConfigError(f"unknown job {job!r}; known jobs: {', '.join(sorted(JOBS))}")
    return JOBS[job]


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
@dataclass
class Layers:
    """The merged raw mapping plus, for every dotted key, the layer that set it."""

    data: dict[str, Any] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def merge(self, mapping: Mapping[str, Any], origin: str, prefix: str = "") -> None:
        _merge_into(self.data, mapping, origin, prefix, self.source)

    def origin_of(self, dotted: str) -> str | None:
        """Layer that set ``dotted`` or, for a section, the last layer that set anything inside it."""
        if dotted in self.source:
            return self.source[dotted]
        inner = [src for key, src in self.source.items() if key.startswith(dotted + ".")]
        return inner[-1] if inner else None


def _merge_into(dst: dict, src: Mapping, origin: str, prefix: str, sources: dict[str, str]) -> None:
    for key, value in src.items():
        if not isinstance(key, str):
            raise ConfigError(f"{origin}: key {key!r} under '{prefix or '<top>'}' is not a string")
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(dst.get(key), dict):
            _merge_into(dst[key], value, origin, dotted + ".", sources)
            continue
        for stale in [k for k in sources if k.startswith(dotted + ".")]:
            del sources[stale]
        dst[key] = _plain(value)
        sources[dotted] = origin
        if isinstance(value, Mapping):
            _record_leaves(value, origin, dotted + ".", sources)


def _record_leaves(mapping: Mapping, origin: str, prefix: str, sources: dict[str, str]) -> None:
    for key, value in mapping.items():
        sources[f"{prefix}{key}"] = origin
        if isinstance(value, Mapping):
            _record_leaves(value, origin, f"{prefix}{key}.", sources)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-6`` and ``3e4`` as floats, as YAML 1.2 and every user do: PyYAML
    follows YAML 1.1, where an exponent needs a dot and a sign (``1.0e-6``), so ``lr: 1e-4`` would be the
    string "1e-4" and a strict config would refuse it as "not a valid number"."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_yaml(text):
    """Parse YAML text or a stream with :class:`YamlLoader` (safe: plain data only)."""
    return yaml.load(text, Loader=YamlLoader)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML layer; an empty file is an empty mapping, anything but a mapping is an error."""
    try:
        with path.open(encoding="utf-8") as fh:
            loaded = load_yaml(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(loaded).__name__}")
    return loaded


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``a.b=c`` into ``{"a": {"b": c}}``; the value is parsed as YAML (``3``, ``true``, ``[x, y]``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set spark.shuffle_partitions=4")
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"--set {text!r}: empty part in key {key!r}")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {exc}") from exc
    nested: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    return nested


def default_conf_dir() -> Path:
    return Path(os.environ.get("LAKEDL_CONF_DIR", "conf"))


def gather_layers(
    job: str,
    conf_dir: str | os.PathLike | None = None,
    conf_files: Sequence[str | os.PathLike] = (),
    overrides: Iterable[str] = (),
) -> Layers:
    """Read and merge every layer for ``job`` in order, remembering where each key came from."""
    if job not in JOBS:
        raise ConfigError(f"unknown job {job!r}; known jobs: {', '.join(sorted(JOBS))}")
    root = Path(conf_dir) if conf_dir is not None else default_conf_dir()
    base = root / "base" / "common.yml"
    if not base.is_file():
        raise ConfigError(
            f"{base} not found: point --conf-dir or LAKEDL_CONF_DIR at the project's conf/ directory"
        )
    layers = Layers()
    jobs = [*JOB_BASES.get(job, ()), job]
    candidates = [base, *(root / "base" / f"{j}.yml" for j in jobs), root / "local" / "common.yml",
                  *(root / "local" / f"{j}.yml" for j in jobs)]
    for path in candidates:
        if path.is_file():
            layers.merge(read_yaml(path), str(path))
            layers.files.append(str(path))
    for extra in conf_files:
        path = Path(extra)
        if not path.is_file():
            raise ConfigError(f"--conf {path}: file not found")
        layers.merge(read_yaml(path), str(path))
        layers.files.append(str(path))
    for text in overrides:
        layers.merge(parse_override(text), SET_SOURCE)
    return layers


def validate(job: str, layers: Layers) -> CommonConfig:
    """Build the typed config for ``job``; every problem is listed with its key and file."""
    model = job_model(job)
    try:
        return model.model_validate(layers.data)
    except ValidationError as exc:
        problems = [_describe(err, layers, model) for err in exc.errors()]
        raise ConfigError(f"invalid configuration for job {job!r}:\n  - " + "\n  - ".join(problems)) from None


def _describe(err: Mapping[str, Any], layers: Layers, model: type[BaseModel]) -> str:
    loc = [str(p) for p in err["loc"]]
    dotted = ".".join(loc)
    kind = err["type"]
    if kind == "missing":
        looked = ", ".join(layers.files) or "no config file"
        return (
            f"missing required value '{dotted}' (not set in {looked}); "
            f"add it to a config file or pass --set {dotted}=..."
        )
    origin = layers.origin_of(dotted) or "defaults"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"unknown key '{dotted}' in {origin}{hint}"
    if not loc:  # a rule across several keys: its message names them
        return str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    return f"'{dotted}' = {value!r} from {origin}: {err['msg']}"


def _allowed_keys(model: type[BaseModel], path: list[str]) -> list[str]:
    current: Any = model
    for part in path:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = fields[part].annotation
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def load_config(
    job: str,
    conf_dir: str | os.PathLike | None = None,
    conf_files: Sequence[str | os.PathLike] = (),
    overrides: Iterable[str] = (),
) -> CommonConfig:
    """Load the merged, validated configuration of ``job``."""
    return validate(job, gather_layers(job, conf_dir, conf_files, overrides))


def dump_config(cfg: BaseModel) -> str:
    """The merged configuration as YAML, in the same shape as the files."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=False)

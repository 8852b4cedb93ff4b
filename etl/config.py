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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SET_SOURCE = "--set"


class ConfigError(ValueError):
    """A configuration problem the user must fix; the message names the key and the file."""


class Section(BaseModel):
    """Base of every config section: unknown keys and silent type coercion are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ---------------------------------------------------------------------------------------------
# Sections shared by every job
# ---------------------------------------------------------------------------------------------
class SparkSettings(Section):
    master: str = Field("local[*]", description="master for the embedded session; ignored under spark-submit")
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


# ---------------------------------------------------------------------------------------------
# Job sections
# ---------------------------------------------------------------------------------------------
FetchSource = Literal["vader", "fashion_mnist", "gcide", "gensim_eval", "minilm", "glove100"]


class FetchSettings(Section):
    sources: list[FetchSource] = Field(
        default_factory=lambda: ["vader", "fashion_mnist", "gcide", "gensim_eval", "minilm"]
    )
    cache_dir: str | None = Field(None, description="default: paths.raw_dir")


class SstSettings(Section):
    dir: str = Field(description="directory holding SST's train.txt, dev.txt and test.txt")
    out_dir: str | None = Field(None, description="default: <paths.raw_dir>/sst")
    phrases: bool = Field(False, description="also write every labelled subtree of train (phrase level)")


class BronzeSettings(Section):
    input: str = Field("data/raw/reviews", description="directory or glob of canonical JSON-lines reviews")
    table: str = "bronze_reviews"


class DataFetchConfig(CommonConfig):
    fetch: FetchSettings = FetchSettings()


class DataSstConfig(CommonConfig):
    sst: SstSettings


class LoadBronzeConfig(CommonConfig):
    bronze: BronzeSettings = BronzeSettings()


class CsvSettings(Section):
    sep: str = ","
    header: bool = True
    escape: str = Field('"', min_length=1, max_length=1,
                        description='escapes a quote inside a quoted field: " (RFC 4180, spreadsheets) or \\')
    multiline: bool = Field(True, description="quoted fields may hold line breaks (one record over several "
                                              "lines); false reads line by line, which splits such records")
    columns: dict[str, str] = Field(default_factory=dict,
                                    description="canonical field -> column in the file, e.g. {text: review}")


class InputSettings(Section):
    paths: list[str] = Field(min_length=1, description="files, directories or globs")
    format: Literal["json", "csv", "sst", "text"] = "json"
    source: str | None = Field(None, description="source name for csv/text/sst rows that carry none")
    csv: CsvSettings = CsvSettings()
    sst_phrases: bool = Field(False, description="SST: also emit every labelled subtree of train")


MAX_CHARS = 20_000  # longer texts are quarantined: the text ETL's and batch scoring's default


class ValidateSettings(Section):
    max_chars: int = Field(MAX_CHARS, ge=1, description="longer texts are quarantined")
    max_quarantine_rate: float = Field(0.05, ge=0.0, le=1.0, description="fail the run above this share")


class NormalizeSettings(Section):
    nfkc: bool = True
    html_unescape: bool = True
    lowercase: bool = True
    url_token: str | None = "<url>"
    number_token: str | None = Field(None, description="e.g. <num>; null keeps numbers")


class VocabSettings(Section):
    min_count: int = Field(2, ge=1)
    max_size: int = Field(30_000, ge=10)


class SubwordSettings(Section):
    vocab_size: int = Field(8_000, ge=100)
    sample_rows: int = Field(200_000, ge=100, description="train rows streamed to the trainer")
    minilm_dir: str = "data/raw/minilm/model"


class TokenizeSettings(Section):
    kind: Literal["word", "wordpiece", "bpe", "minilm"] = "word"
    vocab: VocabSettings = VocabSettings()
    subword: SubwordSettings = SubwordSettings()
    rebuild_vocab: bool = Field(False, description="rebuild the vocabulary even if one exists")


class EncodeSettings(Section):
    max_len: int = Field(128, ge=2)
    fixed: bool = Field(True, description="also write input_ids padded/truncated to max_len (petastorm)")


class SplitSettings(Section):
    mode: Literal["auto", "hash", "given"] = Field(
        "auto", description="auto: the row's own split when it has one, else by hash of review_id")
    train: float = Field(0.8, gt=0, lt=1)
    dev: float = Field(0.1, ge=0, lt=1)
    seed: int = 13


class OutputSettings(Section):
    name: str = Field("reviews", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    shards_dir: str = "data/shards"
    rows_per_file: int = Field(100_000, ge=1)
    row_group_mb: int = Field(8, ge=1)


class TextEtlConfig(CommonConfig):
    input: InputSettings
    validation: ValidateSettings = ValidateSettings()
    normalize: NormalizeSettings = NormalizeSettings()
    tokenize: TokenizeSettings = TokenizeSettings()
    encode: EncodeSettings = EncodeSettings()
    split: SplitSettings = SplitSettings()
    output: OutputSettings = OutputSettings()


class ImageInputSettings(Section):
    paths: list[str] = Field(default_factory=lambda: ["data/raw/fashion_mnist"], min_length=1,
                             description="idx: one folder; folder: class-per-folder roots; manifest: files")
    format: Literal["idx", "folder", "manifest"] = "idx"


class ImageSettings(Section):
    mode: Literal["L", "RGB"] = Field("L", description="every image is converted to this mode")
    height: int | None = Field(None, ge=1, description="resize to height x width (both or neither)")
    width: int | None = Field(None, ge=1)
    max_pixels: int = Field(40_000_000, ge=1, description="larger images are quarantined (too_large)")
    accept_modes: list[str] = Field(default_factory=lambda: ["1", "L", "LA", "P", "RGB", "RGBA"],
                                    description="source modes that convert cleanly; others are wrong_mode")

    @model_validator(mode="after")
    def _both(self):
        if (self.height is None) != (self.width is None):
            raise ValueError("image.height and image.width go together (both or neither)")
        return self


class ImageSplitSettings(Section):
    train: float = Field(0.8, gt=0, lt=1, description="rows without a split of their own: hash fractions")
    dev: float = Field(0.1, ge=0, lt=1)
    dev_from_train: float = Field(0.1, ge=0, lt=1, description="share of a given train split moved to dev")
    seed: int = 13


class ImageValidateSettings(Section):
    max_quarantine_rate: float = Field(0.05, ge=0.0, le=1.0, description="fail the run above this share")


class ImageOutputSettings(Section):
    name: str = Field("fashion_mnist", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    shards_dir: str = "data/shards"
    row_group_mb: int = Field(4, ge=1)
    rows_per_file: int = Field(10_000, ge=1, description="images per Parquet file (a rank reads whole row groups)")


class ImageEtlConfig(CommonConfig):
    input: ImageInputSettings = ImageInputSettings()
    image: ImageSettings = ImageSettings()
    split: ImageSplitSettings = ImageSplitSettings()
    validation: ImageValidateSettings = ImageValidateSettings()
    output: ImageOutputSettings = ImageOutputSettings()


class DemoSettings(Section):
    sst_dir: str | None = Field(None, description="SST trees to convert and load too (make demo passes ../shared/data/sst)")
    train: bool = Field(True, description="after the ETL: train on the shards, export an inference bundle and "
                                          "score silver_<output.name> into the predictions table")
    model: Literal["bow", "rnn", "cnn", "transformer"] = Field("rnn", description="model.name of the demo run "
                                                                                   "(the other train settings: train.yml)")
    epochs: int = Field(2, ge=1)
    processes: int = Field(2, ge=1, description="training processes (local launcher, gloo)")
    retrain: bool = Field(False, description="train anew even if runs/train/demo finished before (a new model version "
                                             "scores every row again)")
    sample: int = Field(5, ge=0, description="predictions printed at the end")
    images: bool = Field(True, description="also the image pipeline: `lakedl etl images` on Fashion-MNIST, then "
                                           "a short image-model run on the same processes")
    image_model: Literal["lenet5", "alexnet_small", "resnet_small"] = "lenet5"
    image_epochs: int = Field(1, ge=1)


class DemoConfig(TextEtlConfig):
    fetch: FetchSettings = FetchSettings()
    bronze: BronzeSettings = BronzeSettings()
    demo: DemoSettings = DemoSettings()


# A job's config class, or "module:Class" for jobs whose config lives with the code that runs them
# (dl/ builds on etl.config, so it is imported only when that job is loaded).
JOBS: dict[str, type[CommonConfig] | str] = {
    "common": CommonConfig,
    "data_fetch": DataFetchConfig,
    "data_sst": DataSstConfig,
    "load_bronze": LoadBronzeConfig,
    "demo": DemoConfig,
    "etl_text": TextEtlConfig,
    "etl_images": ImageEtlConfig,
    "train": "dl.config:TrainConfig",
    "w2v": "dl.w2v.train:W2vConfig",
    "tune": "dl.tune:TuneConfig",
}
# Jobs whose config builds on another job's files: `tune` reads train.yml, then tune.yml (conf/base, then conf/local)
JOB_BASES: dict[str, tuple[str, ...]] = {"tune": ("train",)}


def job_model(job: str) -> type[CommonConfig]:
    model = JOBS[job]
    if isinstance(model, str):
        import importlib

        module, name = model.split(":")
        model = getattr(importlib.import_module(module), name)
    return model


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

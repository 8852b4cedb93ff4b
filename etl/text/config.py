"""Configuration of the text ETL (``lakedl etl text``, conf/base/etl_text.yml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from etl.core import catalog
from etl.core.config import CommonConfig, Section, register_job


class CsvSettings(Section):
    sep: str = ","
    header: bool = True
    escape: str = Field('"', min_length=1, max_length=1,
                        description='escapes a quote inside a quoted field: " (RFC 4180, spreadsheets) or \\')
    multiline: bool = Field(True, description="quoted fields may hold line breaks (one record over several "
                                              "lines); false reads line by line, which splits such records")
    columns: dict[str, str] = Field(default_factory=dict,
                                    description="canonical field -> column in the file, e.g. {text: review}")


class FileInput(Section):
    """Files of one format."""
    paths: list[str] = Field(default_factory=list, description="files, directories or globs (not for bronze)")
    format: Literal["json", "csv", "sst", "text"] = "json"
    source: str | None = Field(None, description="source name for csv/text/sst rows that carry none")
    csv: CsvSettings = CsvSettings()
    sst_phrases: bool = Field(False, description="SST: also emit every labelled subtree of train")

    @model_validator(mode="after")
    def _paths(self):
        if self.format != "bronze" and not self.paths:
            raise ValueError(f"input.paths is empty: input.format={self.format} reads files (or set input.format=bronze)")
        return self


class InputSettings(FileInput):
    format: Literal["json", "csv", "sst", "text", "bronze"] = Field("json", description="bronze: the rows the "
                                                                    "bronze table gained since this dataset's last run")
    table: str = Field(catalog.BRONZE_REVIEWS, description="format=bronze: the bronze table (`lakedl bronze load`)")
    also: list[FileInput] = Field(default_factory=list, description="more files, each list entry with its own "
                                  "paths and format, read into the same dataset (e.g. SST's trees and the VADER "
                                  "JSON lines: conf/recipes/etl/general.yml)")

    @model_validator(mode="after")
    def _also(self):
        if self.also and self.format == "bronze":
            raise ValueError("input.also reads files beside input.paths; with input.format=bronze load those files "
                             "into bronze too (`lakedl bronze load`) instead")
        return self


MAX_CHARS = 20_000  # longer texts are quarantined: the text ETL's and batch scoring's default


class ValidateSettings(Section):
    max_chars: int = Field(MAX_CHARS, ge=1, description="longer texts are quarantined")
    max_quarantine_rate: float = Field(0.05, ge=0.0, le=1.0, description="fail the run above this share")
    held_out_texts: bool = Field(False, description="quarantine (held_out_duplicate) every copy but one of a text "
                                 "(case, spacing and punctuation aside) a dev or test row has: for datasets of "
                                 "several corpora that share texts, so nothing held out is trained on or counted twice")


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


register_job("etl_text", TextEtlConfig)

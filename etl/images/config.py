"""Configuration of the image ETL (``lakedl etl images``, conf/base/etl_images.yml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from etl.core.config import CommonConfig, Section, register_job


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


register_job("etl_images", ImageEtlConfig)

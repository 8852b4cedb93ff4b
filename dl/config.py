"""The ``train`` job's typed configuration (``conf/base/train.yml``) and its mapping onto the worker's
settings. Loaded through ``etl.config.load_config("train")`` like every other job."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dl.optim import OptimSettings, ScheduleSettings
from etl.config import CommonConfig, Section

Task = Literal["sentiment", "rating", "rating_reg"]


class DataSettings(Section):
    shards: str = Field("data/shards/reviews", description="the text ETL's output: manifest.json, train/, dev/")


class BowOptions(Section):
    embed_dim: int = Field(64, ge=1)
    hidden: int = Field(64, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    batch_norm: bool = False


class RnnOptions(Section):
    cell: Literal["rnn", "gru", "lstm"] = "lstm"
    embed_dim: int = Field(128, ge=1)
    hidden: int = Field(128, ge=1)
    layers: int = Field(1, ge=1)
    bidirectional: bool = True
    dropout: float = Field(0.3, ge=0, lt=1)
    pooling: Literal["last", "mean", "max"] = "max"
    freeze_embeddings: bool = False


class CnnOptions(Section):
    embed_dim: int = Field(128, ge=1)
    filters: int = Field(100, ge=1)
    widths: list[int] = Field(default_factory=lambda: [3, 4, 5], min_length=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    freeze_embeddings: bool = False


class TransformerOptions(Section):
    d_model: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)
    ff: int = Field(256, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    positions: Literal["learned", "sinusoidal"] = "learned"
    pooling: Literal["cls", "mean"] = "cls"
    max_len: int = Field(512, ge=1)
    freeze_embeddings: bool = False


class ModelSettings(Section):
    name: Literal["bow", "rnn", "cnn", "transformer"] = "bow"
    bow: BowOptions = BowOptions()
    rnn: RnnOptions = RnnOptions()
    cnn: CnnOptions = CnnOptions()
    transformer: TransformerOptions = TransformerOptions()
    embeddings: str | None = Field(None, description="word2vec text/binary vectors for the embedding table, "
                                   "e.g. data/raw/glove100/vectors.bin (`lakedl data fetch --source glove100`)")

    def options(self) -> dict:
        """The options of the chosen family, as its config dataclass takes them."""
        return getattr(self, self.name).model_dump()


class TrainSettings(Section):
    task: Literal["sentiment", "rating", "rating_reg", "multitask"] = "sentiment"
    task_weights: dict[Task, float] = Field(default_factory=lambda: {"sentiment": 1.0, "rating": 1.0,
                                                                     "rating_reg": 1.0})
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    seed: int = 0
    l1: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)
    clip_norm: float | None = Field(None, gt=0)
    clip_value: float | None = Field(None, gt=0)
    patience: int | None = Field(None, ge=0, description="early stopping: epochs without dev improvement")
    optimal_error: float = Field(0.0, ge=0, le=1, description="Bayes/human error for the bias/variance verdict")
    amp: Literal["none", "bf16", "fp16"] = "none"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint_every: int | None = Field(None, ge=1, description="also checkpoint every N steps mid-epoch")
    log_every: int = Field(50, ge=1)
    progress: bool = True


class LauncherSettings(Section):
    kind: Literal["local", "torch_distributor", "horovod"] = "local"
    num_processes: int = Field(2, ge=1)
    use_gpu: bool = False


class RunSettings(Section):
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", description="default: train-<time>-<id>")
    dir: str | None = Field(None, description="checkpoint and reports; default <runs_dir>/train/<name>")
    resume: bool = False


class TrainConfig(CommonConfig):
    data: DataSettings = DataSettings()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    optim: OptimSettings = OptimSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    launcher: LauncherSettings = LauncherSettings()
    run: RunSettings = RunSettings()

    @model_validator(mode="after")
    def _checks(self):
        if self.run.resume and not self.run.name and not self.run.dir:
            raise ValueError("run.resume=true needs run.name (or run.dir) of the run to continue")
        if self.model.embeddings and self.model.name == "bow":
            raise ValueError("model.embeddings initializes rnn, cnn or transformer embeddings, not bow")
        t = self.model.transformer
        if t.d_model % t.heads:
            raise ValueError(f"model.transformer.d_model={t.d_model} is not divisible by model.transformer.heads={t.heads}")
        if self.optim.nesterov and self.optim.momentum <= 0:
            raise ValueError("optim.nesterov=true needs optim.momentum > 0")
        return self

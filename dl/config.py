"""The ``train`` job's typed configuration (``conf/base/train.yml``) and its mapping onto the worker's
settings. Loaded through ``etl.config.load_config("train")`` like every other job."""

from __future__ import annotations

from pathlib import Path
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


class BertOptions(Section):
    pretrained: str | None = Field(None, description="encoder directory (config.json + model.safetensors); "
                                   "default <paths.raw_dir>/minilm/model (`lakedl data fetch --source minilm`)")
    pooling: Literal["mean", "cls"] = "mean"
    dropout: float = Field(0.1, ge=0, lt=1)
    freeze_layers: int = Field(0, ge=-1, description="freeze the embeddings and the first N layers (-1: all)")


class GptOptions(Section):
    d_model: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)
    ff: int = Field(512, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    max_len: int = Field(128, ge=1, description="longest text in tokens (the ETL's encode.max_len)")
    tie_weights: bool = True


class ModelSettings(Section):
    name: Literal["bow", "rnn", "cnn", "transformer", "bert", "gpt"] = "bow"
    bow: BowOptions = BowOptions()
    rnn: RnnOptions = RnnOptions()
    cnn: CnnOptions = CnnOptions()
    transformer: TransformerOptions = TransformerOptions()
    bert: BertOptions = BertOptions()
    gpt: GptOptions = GptOptions()
    embeddings: str | None = Field(None, description="word2vec text/binary vectors for the embedding table, "
                                   "e.g. data/raw/glove100/vectors.bin (`lakedl data fetch --source glove100`)")

    def options(self, raw_dir: str = "data/raw") -> dict:
        """The options of the chosen family, as its config dataclass takes them (file paths absolute: the
        workers may not share the driver's working directory)."""
        options = getattr(self, self.name).model_dump()
        if self.name == "bert":
            options["pretrained"] = str(Path(options["pretrained"] or Path(raw_dir) / "minilm" / "model").absolute())
        return options


class TrainSettings(Section):
    task: Literal["sentiment", "rating", "rating_reg", "multitask", "lm"] = "sentiment"
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
        if (self.model.name == "gpt") != (self.train.task == "lm"):
            raise ValueError("train.task=lm (language modelling) goes with model.name=gpt and only with it; "
                             f"got model.name={self.model.name}, train.task={self.train.task}")
        if self.model.embeddings and self.model.name in ("bow", "bert", "gpt"):
            raise ValueError(f"model.embeddings initializes rnn, cnn or transformer embeddings, not {self.model.name}")
        for family in ("transformer", "gpt"):
            t = getattr(self.model, family)
            if t.d_model % t.heads:
                raise ValueError(f"model.{family}.d_model={t.d_model} is not divisible by model.{family}.heads={t.heads}")
        if self.optim.nesterov and self.optim.momentum <= 0:
            raise ValueError("optim.nesterov=true needs optim.momentum > 0")
        return self

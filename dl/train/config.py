"""The ``train`` job's typed configuration (``conf/base/train.yml``), registered as job ``train``
(``jobs.configs.load_config("train")``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, create_model, model_validator

from dl.engine.distributed import SyncSettings
from dl.engine.optim import OptimSettings, ScheduleSettings
from dl.models import FAMILIES, IMAGE_MODELS
from etl.core.config import CommonConfig, Section, register_job

Task = Literal["sentiment", "rating", "rating_reg"]


class AugmentSettings(Section):
    """Image datasets: load-time augmentation of training images and normalisation of all of them."""
    crop_padding: int = Field(0, ge=0, description="pad by N zero pixels, crop back at a random offset")
    flip: bool = Field(False, description="horizontal flip with probability 1/2")
    mean: float = Field(0.0, description="after scaling pixels to [0, 1]: (x - mean) / std")
    std: float = Field(1.0, gt=0)


class DataSettings(Section):
    shards: str = Field("data/shards/reviews", description="the text or image ETL's output: manifest.json, "
                        "train/, dev/ (and test/)")
    eval_train_rows: int | None = Field(None, ge=1, description="the per-epoch train-set evaluation (the "
                                        "bias/variance verdict) reads only the first N rows; default all")
    length_buckets: int = Field(0, ge=0, description="text: sort each run of N training batches' rows by "
                                "length before batching (less padding; batches still come in random order); 0 = off")
    augment: AugmentSettings = AugmentSettings()
    loader_workers: int = Field(2, ge=1, description="image datasets: petastorm decode threads per process")
    image_loader: Literal["petastorm", "native"] = Field("petastorm", description="image datasets: petastorm "
                                                         "make_reader, or pyarrow + OpenCV (dl/data/image_loader.py)")


class _ModelSettings(Section):
    def options(self, raw_dir: str = "data/raw") -> dict:
        """The options of the chosen family, as its config class takes them (file paths absolute: the
        workers may not share the driver's working directory)."""
        options = getattr(self, self.name).model_dump()
        if self.name == "bert":
            options["pretrained"] = str(Path(options["pretrained"] or Path(raw_dir) / "minilm" / "model").absolute())
        return options


# model.name is one of the registry's families; model.<family> is that family's hyper-parameters, made from
# its config class (dl/models/<family>.py), where each is declared once with its default and check
ModelSettings = create_model(
    "ModelSettings", __base__=_ModelSettings,
    name=(Literal[tuple(FAMILIES)], "bow"),
    **{name: (section, section()) for name, section in
       ((name, family.config.options_section(Section)) for name, family in FAMILIES.items())},
    embeddings=(str | None, Field(None, description="word2vec text/binary vectors for the embedding table, e.g. "
                "data/raw/glove100/vectors.bin (`lakedl data fetch --source glove100`)")),
)


class TrainSettings(Section):
    task: Literal["sentiment", "rating", "rating_reg", "multitask", "lm", "class", "reconstruct"] = Field(
        "sentiment", description="text: sentiment | rating | rating_reg | multitask | lm (gpt); images: class | "
        "reconstruct (autoencoder)")
    task_weights: dict[Task, float] = Field(default_factory=lambda: {"sentiment": 1.0, "rating": 1.0,
                                                                     "rating_reg": 1.0})
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    seed: int = 0
    l1: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)
    clip_norm: float | None = Field(None, gt=0)
    clip_value: float | None = Field(None, gt=0)
    max_norm: float | None = Field(None, gt=0, description="max-norm regularisation: after each step, every row of "
                                   "every linear layer's weight (a unit's incoming weights) to L2 norm <= this; "
                                   "Kim 2014 uses 3")
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
    max_restarts: int = Field(2, ge=0, description="when a training process dies (killed, out of memory, its "
                              "executor lost) the job restarts from the newest checkpoint (every epoch, and every "
                              "train.checkpoint_every steps) by itself, at most this often; then it fails with "
                              "the first error")


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
    sync: SyncSettings = SyncSettings()
    run: RunSettings = RunSettings()

    @model_validator(mode="after")
    def _checks(self):
        if self.run.resume and not self.run.name and not self.run.dir:
            raise ValueError("run.resume=true needs run.name (or run.dir) of the run to continue")
        if (self.model.name == "gpt") != (self.train.task == "lm"):
            raise ValueError("train.task=lm (language modelling) goes with model.name=gpt and only with it; "
                             f"got model.name={self.model.name}, train.task={self.train.task}")
        name, task = self.model.name, self.train.task
        family = FAMILIES[name]
        if task not in family.tasks and family.kind == "image":
            raise ValueError(f"model.name={name} is an image model: set train.task={family.tasks[0]} (got {task}); "
                             "data.shards must be `lakedl etl images` output")
        if task not in family.tasks:
            raise ValueError(f"train.task={task} is for image models ({', '.join(IMAGE_MODELS)}), not {name}")
        if name == "autoencoder" and (self.data.augment.mean, self.data.augment.std) != (0.0, 1.0):
            raise ValueError("the autoencoder reconstructs pixels in [0, 1]: set data.augment.mean=0 and "
                             "data.augment.std=1")
        if family.kind == "image" and self.data.length_buckets:
            raise ValueError(f"data.length_buckets={self.data.length_buckets} sorts text rows by token count; "
                             f"{name} is an image model: drop the setting")
        if self.model.embeddings and "freeze_embeddings" not in family.config.model_fields:  # no embedding table to fill
            raise ValueError(f"model.embeddings initializes rnn, cnn or transformer embeddings, not {self.model.name}")
        return self


register_job("train", TrainConfig)

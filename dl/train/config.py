"""The ``train`` job's typed configuration (``conf/base/train.yml``), registered as job ``train``
(``jobs.configs.load_config("train")``). The sections a worker receives (data, model, train, optim, schedule,
sync) are declared in the engine (dl/engine/settings.py and beside the optimizer and the gradient exchange);
this file adds the job's own (launcher, run) and the checks that span sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dl.engine.distributed import SyncSettings
from dl.engine.optim import OptimSettings, ScheduleSettings
from dl.engine.settings import DataSettings, ModelSettings, TrainSettings
from dl.models import FAMILIES, IMAGE_MODELS
from etl.core.config import CommonConfig, Section, register_job


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
        if name in ("autoencoder", "dcgan") and (self.data.augment.mean, self.data.augment.std) != (0.0, 1.0):
            raise ValueError(f"{'the autoencoder reconstructs' if name == 'autoencoder' else 'the GAN generates'} "
                             "pixels in [0, 1]: set data.augment.mean=0 and data.augment.std=1")
        if self.data.judge and task != "generate":
            raise ValueError("data.judge scores a GAN's samples (train.task=generate); drop it for other tasks")
        if task == "generate" and self.train.amp == "fp16":
            raise ValueError("train.amp=fp16 is not supported for the GAN (two optimizers share no gradient "
                             "scaler yet): use amp=bf16 or none")
        if family.kind == "image" and self.data.length_buckets:
            raise ValueError(f"data.length_buckets={self.data.length_buckets} sorts text rows by token count; "
                             f"{name} is an image model: drop the setting")
        if self.model.embeddings and "freeze_embeddings" not in family.config.model_fields:  # no embedding table to fill
            raise ValueError(f"model.embeddings initializes rnn, cnn or transformer embeddings, not {self.model.name}")
        return self


register_job("train", TrainConfig)

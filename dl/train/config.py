"""The ``train`` job's typed configuration (``conf/base/train.yml``), registered as job ``train``
(``jobs.configs.load_config("train")``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from dl.engine.optim import OptimSettings, ScheduleSettings
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
    edge_padding: bool = Field(False, description="pad each text with width-1 zero vectors on both sides "
                               "(wide convolution, as in Kim's code)")


class TransformerOptions(Section):
    d_model: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)
    ff: int = Field(256, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    positions: Literal["learned", "sinusoidal"] = "learned"
    pooling: Literal["cls", "mean", "max"] = "cls"
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


class LeNetOptions(Section):
    activation: Literal["relu", "tanh"] = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)


class AlexNetOptions(Section):
    width: int = Field(32, ge=1, description="channels of the first convolution (then 2x, 4x, 4x, 2x)")
    hidden: int = Field(512, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)


class ResNetOptions(Section):
    widths: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1,
                              description="channels per stage; stride 2 after the first")
    blocks: int = Field(2, ge=1, description="residual blocks per stage")
    dropout: float = Field(0.0, ge=0, lt=1)


class AutoencoderOptions(Section):
    width: int = Field(32, ge=1)
    code: int = Field(64, ge=1, description="the code (feature) vector's size")
    noise_std: float = Field(0.0, ge=0, description="> 0: denoising (Gaussian noise on training inputs)")


TEXT_MODELS = ("bow", "rnn", "cnn", "transformer", "bert", "gpt")
IMAGE_MODELS = ("lenet5", "alexnet_small", "resnet_small", "autoencoder")


class ModelSettings(Section):
    name: Literal["bow", "rnn", "cnn", "transformer", "bert", "gpt",
                  "lenet5", "alexnet_small", "resnet_small", "autoencoder"] = "bow"
    bow: BowOptions = BowOptions()
    rnn: RnnOptions = RnnOptions()
    cnn: CnnOptions = CnnOptions()
    transformer: TransformerOptions = TransformerOptions()
    bert: BertOptions = BertOptions()
    gpt: GptOptions = GptOptions()
    lenet5: LeNetOptions = LeNetOptions()
    alexnet_small: AlexNetOptions = AlexNetOptions()
    resnet_small: ResNetOptions = ResNetOptions()
    autoencoder: AutoencoderOptions = AutoencoderOptions()
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
        name, task = self.model.name, self.train.task
        image_task = {"autoencoder": "reconstruct"}.get(name, "class") if name in IMAGE_MODELS else None
        if image_task and task != image_task:
            raise ValueError(f"model.name={name} is an image model: set train.task={image_task} (got {task}); "
                             "data.shards must be `lakedl etl images` output")
        if not image_task and task in ("class", "reconstruct"):
            raise ValueError(f"train.task={task} is for image models ({', '.join(IMAGE_MODELS)}), not {name}")
        if name == "autoencoder" and (self.data.augment.mean, self.data.augment.std) != (0.0, 1.0):
            raise ValueError("the autoencoder reconstructs pixels in [0, 1]: set data.augment.mean=0 and "
                             "data.augment.std=1")
        if image_task and self.data.length_buckets:
            raise ValueError(f"data.length_buckets={self.data.length_buckets} sorts text rows by token count; "
                             f"{name} is an image model: drop the setting")
        if self.model.embeddings and self.model.name in ("bow", "bert", "gpt", *IMAGE_MODELS):
            raise ValueError(f"model.embeddings initializes rnn, cnn or transformer embeddings, not {self.model.name}")
        for family in ("transformer", "gpt"):
            t = getattr(self.model, family)
            if t.d_model % t.heads:
                raise ValueError(f"model.{family}.d_model={t.d_model} is not divisible by model.{family}.heads={t.heads}")
        if self.optim.nesterov and self.optim.momentum <= 0:
            raise ValueError("optim.nesterov=true needs optim.momentum > 0")
        return self


register_job("train", TrainConfig)

"""What every training rank receives: the validated sections of the train config (conf/base/train.yml) as they
are — ``data``, ``model``, ``train``, ``optim``, ``schedule``, ``sync`` — and this launch's context (``run``:
where to checkpoint, MLflow/TensorBoard targets, restart bookkeeping) and its epoch-end callbacks.

The sections are declared here, once, with their defaults and checks; dl/train/config.py assembles them into
the ``train`` job's config and adds the checks that span sections. The job (dl/train/job.py) makes file paths
absolute (the workers may not share the driver's working directory) and hands the sections on unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, create_model

from dl.engine.distributed import SyncSettings
from dl.engine.optim import OptimSettings, ScheduleSettings
from dl.models import FAMILIES
from etl.core.config import Section

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
    judge: str | None = Field(None, description="generate (dcgan): a `lakedl train` run directory of an image "
                              "classifier on the same classes (e.g. runs/train/resnet_small); each epoch its "
                              "penultimate features score dev samples (FID) and it names their class; without "
                              "one the last epoch is kept")
    image_loader: Literal["petastorm", "native"] = Field("petastorm", description="image datasets: petastorm "
                                                         "make_reader, or pyarrow + OpenCV (dl/data/image_loader.py)")


class _ModelSettings(Section):
    def options(self) -> dict:
        """The options of the chosen family, as its config class takes them."""
        return getattr(self, self.name).model_dump()

    def resolved(self, raw_dir: str = "data/raw") -> _ModelSettings:
        """This section with its file paths absolute (MiniLM's default: ``<raw_dir>/minilm/model``)."""
        update: dict = {"embeddings": str(Path(self.embeddings).absolute())} if self.embeddings else {}
        if self.name == "bert":
            update["bert"] = self.bert.model_copy(update={"pretrained": str(Path(
                self.bert.pretrained or Path(raw_dir) / "minilm" / "model").absolute())})
        return self.model_copy(update=update)


# model.name is one of the registry's families; model.<family> is that family's hyper-parameters, made from
# its config class (dl/models/<family>.py), where each is declared once with its default and check
_FAMILY_SECTIONS = {name: family.config.options_section(Section) for name, family in FAMILIES.items()}
for _section in _FAMILY_SECTIONS.values():  # importable by name: the section crosses to worker processes pickled
    _section.__module__ = __name__
    globals()[_section.__name__] = _section
ModelSettings = create_model(
    "ModelSettings", __base__=_ModelSettings, __module__=__name__,
    name=(Literal[tuple(FAMILIES)], "bow"),
    **{name: (section, section()) for name, section in _FAMILY_SECTIONS.items()},
    embeddings=(str | None, Field(None, description="word2vec text/binary vectors for the embedding table, e.g. "
                "data/raw/glove100/vectors.bin (`lakedl data fetch --source glove100`)")),
)


class TrainSettings(Section):
    task: Literal["sentiment", "rating", "rating_reg", "multitask", "lm", "class", "reconstruct", "generate"] = Field(
        "sentiment", description="text: sentiment | rating | rating_reg | multitask | lm (gpt); images: class | "
        "reconstruct (autoencoder) | generate (dcgan)")
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
    stop_at: float | None = Field(None, description="stop after the first epoch whose dev metric reaches this value "
                                  "(e.g. 0.84 for a dev accuracy: time to accuracy, bench/time_to_accuracy.py)")
    optimal_error: float = Field(0.0, ge=0, le=1, description="Bayes/human error for the bias/variance verdict")
    amp: Literal["none", "bf16", "fp16"] = "none"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint_every: int | None = Field(None, ge=1, description="also checkpoint every N steps mid-epoch")
    log_every: int = Field(50, ge=1)
    progress: bool = True


@dataclass
class RunContext:
    """This launch of the ranks (set by the job, not configured)."""
    checkpoint_dir: str | None = None  # last.pt, best.pt and the ranks' heartbeats
    resume: bool = False
    # a last.pt found at start is this run's own (the job refused to start over a foreign one): resume from it.
    # Set by `lakedl train`, so that a restart (the launcher's, or Spark retrying a failed barrier stage)
    # continues from the newest checkpoint instead of starting over
    restartable: bool = False
    launch_id: str | None = None  # this `lakedl train` call, and the launcher's attempt in it: rank 0 records each
    attempt: int = 0              # start of the ranks in ranks/starts.jsonl (a second start in one attempt: Spark's)
    tracking_uri: str | None = None  # rank 0 logs metrics to this MLflow run as it trains
    run_id: str | None = None
    tensorboard_dir: str | None = None  # rank 0 writes TensorBoard scalars here
    max_epochs_this_call: int | None = None  # stop after this many epochs (to simulate an interruption)
    stop_after_steps: int | None = None  # stop after this many steps of this call, mid-epoch (ditto)


@dataclass
class WorkerSettings:
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)  # paths absolute: ModelSettings.resolved
    train: TrainSettings = field(default_factory=TrainSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)  # how ranks exchange gradients
    run: RunContext = field(default_factory=RunContext)
    callbacks: list = field(default_factory=list)  # epoch-end callbacks (dl/engine/callbacks.py): early stopping, pruning

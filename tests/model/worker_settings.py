"""``WorkerSettings`` for tests that start a worker directly, from flat field names: each goes to the one
section that declares it (data, train, or the run context); ``optim``/``schedule``/``sync``/``callbacks`` are
given whole, ``model`` is the family and ``model_options`` its section. `lakedl train` passes the validated
config's sections as they are (dl/train/job.py); this only spares the tests the nesting."""

from __future__ import annotations

from dataclasses import fields

from dl.engine.settings import DataSettings, ModelSettings, RunContext, TrainSettings, WorkerSettings

WHOLE = ("optim", "schedule", "sync", "callbacks")


def worker_settings(shards, model: str = "bow", model_options: dict | None = None, **flat) -> WorkerSettings:
    homes = {"data": set(DataSettings.model_fields), "train": set(TrainSettings.model_fields),
             "run": {f.name for f in fields(RunContext)}}
    given: dict[str, dict] = {"data": {"shards": str(shards)}, "train": {"progress": False}, "run": {}}
    whole = {key: flat.pop(key) for key in WHOLE if key in flat}
    for key, value in flat.items():
        home = [name for name, declared in homes.items() if key in declared]
        if len(home) != 1:
            raise TypeError(f"{key}: declared by {home or 'no section'}")
        given[home[0]][key] = value
    return WorkerSettings(data=DataSettings(**given["data"]),
                          model=ModelSettings(name=model, **({model: model_options} if model_options else {})),
                          train=TrainSettings(**given["train"]), run=RunContext(**given["run"]), **whole)

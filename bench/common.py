"""Shared helpers for benchmarks: the bench/results JSON format (../shared/BENCH.md), timing, peak RSS."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results"
RECIPES = Path(__file__).resolve().parents[1] / "conf" / "recipes"


def recipe(name: str) -> Path:
    """conf/recipes/<name>.yml: the configuration a quality row runs (`lakedl train --conf` it)."""
    path = RECIPES / f"{name}.yml"
    if not path.is_file():
        raise SystemExit(f"{path} missing: every quality row is a recipe file under conf/recipes/")
    return path


def recipe_settings(name: str) -> list[str]:
    """The recipe as ``--set``-style overrides, for the row's record (what it ran with)."""
    import yaml

    def flat(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict) and key not in ("task_weights", "columns", "conf"):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}={json.dumps(value) if not isinstance(value, str) else value}"

    return list(flat(yaml.safe_load(recipe(name).read_text()) or {}))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    gpu = None
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return {"cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30), "gpu": gpu}


def write_result(name: str, command: str, results: list[dict]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"name": name, "command": command, "git_commit": git_commit(), "machine": machine(),
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "results": results}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


class PeakRss:
    """Samples the summed RSS of a process and all its descendants (Spark's JVM and Python workers)."""

    def __init__(self, pid: int | None = None, interval: float = 0.05) -> None:
        try:
            self.proc: psutil.Process | None = psutil.Process(pid or os.getpid())
        except psutil.NoSuchProcess:  # it finished before we could look
            self.proc = None
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        try:
            tree = [self.proc, *self.proc.children(recursive=True)] if self.proc else []
        except psutil.Error:
            return 0
        for p in tree:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


_WORK: dict = {}  # timed_passes: the loaded work of this process, inherited by its Pool workers through fork


def _work_item(index: int):
    return _WORK["fn"](index)


def timed_passes(fn: Callable[[int], int], items: int, processes: int, repeats: int) -> tuple[float, int]:
    """A bare-loop baseline's timing, after its caller loaded everything: ``fn(i)`` for every ``i < items`` —
    in this process, or (``processes`` > 1) in a ``multiprocessing.Pool`` forked now, so the workers inherit
    what is loaded and get only the indices. One warm-up pass (every worker's imports, JIT, caches), then
    the median seconds of ``repeats`` passes and the sum of ``fn``'s results."""
    import multiprocessing as mp

    _WORK["fn"] = fn
    pool = mp.get_context("fork").Pool(processes) if processes > 1 else None

    def one_pass() -> int:
        return sum(pool.map(_work_item, range(items), chunksize=1)) if pool else sum(map(fn, range(items)))

    try:
        total = one_pass()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            total = one_pass()
            times.append(time.perf_counter() - start)
    finally:
        if pool:
            pool.close()
    return statistics.median(times), total


def write_merged(name: str, rows: list[dict]) -> Path:
    """``write_result`` of ``rows`` into bench/results/<name>.json, keeping the rows already there whose
    (case, scale) none of ``rows`` measures again (each row records its own commit)."""
    path = RESULTS / f"{name}.json"
    measured = {(r["case"], r.get("scale")) for r in rows}
    kept = [r for r in (json.loads(path.read_text())["results"] if path.is_file() else [])
            if (r["case"], r.get("scale")) not in measured]
    return write_result(name, command_line(), kept + rows)


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


def _child(fn, args, queue) -> None:
    start = time.perf_counter()
    result = fn(*args)
    queue.put((result, time.perf_counter() - start))


def run_in_child(fn: Callable, args: tuple, repeats: int, warmup: int = 0) -> tuple[float, object, float]:
    """Run ``fn(*args)`` in a fresh spawned process ``warmup + repeats`` times: median seconds of the
    timed runs, the last result and the peak RSS (MB) of the timed runs. ``fn`` must be importable."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    times, peak, result = [], 0.0, None
    for i in range(warmup + repeats):
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(fn, args, queue))
        proc.start()
        with PeakRss(proc.pid) as rss:
            result, seconds = queue.get()
            proc.join()
        if i >= warmup:
            times.append(seconds)
            peak = max(peak, rss.peak_mb)
    return statistics.median(times), result, peak

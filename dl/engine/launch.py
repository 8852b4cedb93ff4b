"""Launchers: start a worker function (``dl.train.worker.train_worker``, word2vec's ``w2v_worker``, ...) on N
processes. They differ only in how processes are started.

* ``local``             one process, or N processes on this machine (torch.multiprocessing, gloo/NCCL)
* ``torch_distributor`` PySpark's TorchDistributor (DDP; ``local_mode`` on the driver's machine when the
                        master is local, barrier-mode Spark tasks on the executors when it is a cluster)
* ``horovod``           ``horovod.spark.run``: one Spark task per process, gloo on CPU (NCCL on GPU),
                        ``hvd.DistributedOptimizer``; equal step counts per rank (see dl/engine/distributed.py)

Misconfiguration is refused before anything starts; a failed worker raises LaunchError with the tail of
what it printed.
"""

from __future__ import annotations

import atexit
import faulthandler
import logging
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from etl.core.errors import LakedlError
from etl.core.logs import quiet_known_warnings

KINDS = ("local", "torch_distributor", "horovod")
RANK_SPECIFIC = ("model", "weights_sha256")  # not returned through TorchDistributor's one return file


class LaunchError(LakedlError, RuntimeError):
    """The launch was refused or a worker failed; the message says which and why."""


class WorkerFailed(LaunchError):
    """A worker process failed or died after the launch started (what a restart can recover from; a refused
    launch cannot)."""


def check_launch(kind: str, num_processes: int, use_gpu: bool = False, slots: int | None = None) -> None:
    """Refuse before launching: unknown launcher, bad process count, more processes than slots, GPU asked
    with none present."""
    if kind not in KINDS:
        raise LaunchError(f"launcher {kind!r} is not one of {', '.join(KINDS)}")
    if num_processes < 1:
        raise LaunchError(f"num_processes={num_processes}: need at least 1")
    if use_gpu and not torch.cuda.is_available():
        raise LaunchError("use_gpu=true but this machine has no CUDA device: set use_gpu=false or run on a GPU node")
    if use_gpu and num_processes > torch.cuda.device_count():
        raise LaunchError(f"{num_processes} GPU processes asked, {torch.cuda.device_count()} GPUs present "
                          "(one process per GPU)")
    available = slots if slots is not None else os.cpu_count() or 1
    if num_processes > available:
        raise LaunchError(f"{num_processes} processes asked but only {available} slots are available "
                          f"({'Spark task slots' if kind != 'local' else 'CPU cores'}); lower num_processes")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the launching process dies (killed by a scheduler, a cron
    timeout, Ctrl-C twice), so no orphaned worker keeps training and holding memory."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _worker_process() -> None:
    """Set up a worker process: one intra-op thread (the ranks share the cores), and a native crash
    (SIGABRT from a C++ exception in gloo, SIGSEGV) prints every thread's Python stack to stderr."""
    torch.set_num_threads(1)
    faulthandler.enable()
    quiet_known_warnings()


def _exit_before_finalizing() -> None:
    """The last exit handler a successful DDP worker runs: flush, then leave with ``os._exit`` before the
    interpreter starts finalizing.

    Why: once a DDP model has been built, ``destroy_process_group`` no longer frees the gloo process
    group (torch 2.13: something DDP sets up keeps it), so the group's worker threads live to the end of
    the process. A worker thread that finishes a collective still destroys the collective's tensors
    afterwards, which needs the GIL when Python owned them (``all_gather_object``'s, DDP Join's). If that
    happens after the main thread began finalizing, CPython ends the thread from inside a C++ destructor
    and the process dies with SIGABRT ("terminate called without an active exception") although training
    finished: 2 of ~45 toy LM runs here. Exit handlers run while the interpreter is still whole, so
    exiting here leaves no point at which a thread can meet a finalizing interpreter. An uncaught
    exception after the worker returned (e.g. TorchDistributor failing to write its output file) still
    exits 1."""
    code = 1 if getattr(sys, "last_value", None) is not None else 0
    try:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _succeeded() -> None:
    """Call when this worker process's work is done and saved: registered last, the handler runs first."""
    atexit.register(_exit_before_finalizing)


def _local_entry(rank: int, world: int, port: int, worker, settings, out_dir: str) -> None:
    _die_with_parent()
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    _worker_process()
    result = worker(settings, "torch")
    torch.save({k: v for k, v in result.items() if k != "model"}, Path(out_dir) / f"rank{rank}.pt")
    _succeeded()


def _td_entry(worker, settings) -> dict:
    _worker_process()
    result = worker(settings, "torch")
    _succeeded()  # TorchDistributor writes the returned value before the process exits
    # its local mode has every rank write the same return file: return only what all ranks agree on
    agreed = {k: v for k, v in result.items() if k not in RANK_SPECIFIC}
    if "steps_by_rank" in result:
        agreed["steps"] = max(result["steps_by_rank"])
    return agreed


def _hvd_entry(worker, settings) -> dict:
    _worker_process()
    result = worker(settings, "horovod")
    return {k: v for k, v in result.items() if k != "model"}


def launch(worker, settings, kind: str = "local", num_processes: int = 1, use_gpu: bool = False,
           spark=None) -> dict:
    """Run ``worker(settings, backend)`` (a module-level function, so that it pickles) on every process;
    returns rank 0's result (``weights_sha256_by_rank`` shows every rank's weights)."""
    slots = None
    if kind != "local":
        if spark is None:
            raise LaunchError(f"launcher {kind!r} needs a SparkSession (etl.core.spark.get_spark)")
        if kind == "horovod":
            from etl.core.spark import require_classic

            require_classic(spark, "Horovod on Spark (horovod.spark.run)",
                            "use --launcher torch_distributor (TorchDistributor runs through Spark Connect), "
                            "or submit the job with spark-submit to a classic session")
        slots = _task_slots(spark)
    check_launch(kind, num_processes, use_gpu, slots)
    if kind == "local" and num_processes == 1:
        return worker(settings, "none")
    try:
        if kind == "local":
            return _spawn_local(worker, settings, num_processes)
        if kind == "horovod":
            import horovod.spark

            return horovod.spark.run(_hvd_entry, args=(worker, settings), num_proc=num_processes, use_gloo=True,
                                     verbose=0, start_timeout=120)[0]
        from pyspark.ml.torch.distributor import TorchDistributor

        local_mode = _master(spark).startswith("local")
        return TorchDistributor(num_processes=num_processes, local_mode=local_mode, use_gpu=use_gpu).run(
            _td_entry, worker, settings)
    except LaunchError:
        raise
    except Exception as exc:  # a worker failed: keep the tail of what it said
        raise WorkerFailed(f"{kind} launch with {num_processes} processes failed:\n{_tail(exc)}") from exc


def _master(spark) -> str:
    from etl.core.spark import is_connect

    return spark.conf.get("spark.master", "") if is_connect(spark) else spark.sparkContext.master


def _task_slots(spark) -> int:
    """How many tasks the session runs at once. A Connect client cannot ask the scheduler: it reads a
    ``local[N]`` master, else ``spark.default.parallelism`` if the server sets it, else it does not limit (a
    barrier stage with too few slots then fails on the server, saying so)."""
    from etl.core.spark import is_connect

    if not is_connect(spark):
        return spark.sparkContext.defaultParallelism
    master = _master(spark)
    if master.startswith("local"):
        inside = master[len("local"):].strip("[]").split(",")[0]
        return (os.cpu_count() or 1) if inside in ("", "*") else int(inside)
    configured = spark.conf.get("spark.default.parallelism", None)
    return int(configured) if configured else sys.maxsize


def _spawn_local(worker, settings, n: int) -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="lakedl-launch-") as out:
        context = mp.start_processes(_local_entry, args=(n, _free_port(), worker, settings, out), nprocs=n,
                                     join=False, start_method="spawn")
        statuses = _wait_for_first_failure(context.processes)
        try:
            while not context.join():  # raises for the first process that failed, after stopping the rest
                pass
        except Exception as exc:
            raise WorkerFailed(f"local launch with {n} processes failed ({statuses}):\n{_tail(exc)}") from exc
        return torch.load(Path(out) / "rank0.pt", weights_only=False)


def _wait_for_first_failure(processes, grace: float = 5.0) -> str:
    """Wait until every process has ended or one has failed; then give the others ``grace`` seconds to go
    down on their own (a rank that loses its peer aborts within moments) and describe how each ended, so
    that "process 1 killed by SIGKILL" is reported even when its peer's abort is noticed first."""
    from multiprocessing.connection import wait

    deadline = None
    while running := [p.sentinel for p in processes if p.exitcode is None]:
        if deadline is None and any(p.exitcode for p in processes):
            deadline = time.monotonic() + grace
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        wait(running, left)
    return "; ".join(f"process {rank} {_ended(p.exitcode)}" for rank, p in enumerate(processes))


def _ended(code: int | None) -> str:
    if code is None:
        return "still running (stopped by the launcher)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return "exited 0" if code == 0 else f"failed (exit code {code})"


def _tail(exc: BaseException) -> str:
    """The last lines of a worker's failure (its traceback's end, or the signal that ended it)."""
    return "\n".join(traceback.format_exception(exc)[-1:] + str(exc).splitlines()[-15:])

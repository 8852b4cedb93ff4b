"""A real Spark standalone cluster on loopback (one master, N workers) from the installed pyspark.

Used by the test suite and by ``make cluster-up`` / ``make cluster-down`` so that jobs are exercised
with separate executor JVMs and ``spark-submit --master spark://...``, not only in local mode. Every
process binds to 127.0.0.1 and is stopped by the pid recorded in ``<state_dir>/cluster.json``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from etl.core.errors import LakedlError

STATE = "cluster.json"


class ClusterError(LakedlError, RuntimeError):
    """The cluster did not come up; the message carries the tail of the failing process's log."""


@dataclass
class Cluster:
    master_url: str
    pids: list[int]
    state_dir: str
    logs: list[str]


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOCAL_DIRS": str(state_dir / "local"),
        "SPARK_LOG_DIR": str(state_dir / "logs"),
        "PYSPARK_PYTHON": env.get("PYSPARK_PYTHON", sys.executable),
    })
    return env


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _wait_for(log: Path, needle: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and needle in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise ClusterError(f"{what} exited with code {proc.returncode}; log tail:\n{_tail(log)}")
        time.sleep(0.3)
    raise ClusterError(f"{what} not ready after {timeout:.0f}s; log tail:\n{_tail(log)}")


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    cmd = [str(spark_home() / "bin" / "spark-class"), *args]
    with log.open("w") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def start_cluster(state_dir: str | os.PathLike, workers: int = 2, cores: int = 1, memory: str = "2g",
                  timeout: float = 120.0) -> Cluster:
    """Start a master and ``workers`` workers (``cores`` and ``memory`` each) on 127.0.0.1."""
    state = Path(state_dir).absolute()
    if (state / STATE).exists():
        raise ClusterError(f"a cluster is already recorded in {state / STATE}; stop it first (make cluster-down)")
    (state / "logs").mkdir(parents=True, exist_ok=True)
    (state / "local").mkdir(exist_ok=True)
    env = _env(state)
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    try:
        log = state / "logs" / "master.log"
        procs.append(_spawn(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                             "--webui-port", str(_free_port())], log, env))
        logs.append(log)
        _wait_for(log, "I have been elected leader", procs[-1], timeout, "Spark master")
        for i in range(workers):
            log = state / "logs" / f"worker-{i}.log"
            procs.append(_spawn(["org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                                 "--cores", str(cores), "--memory", memory, "--webui-port", str(_free_port()),
                                 "--work-dir", str(state / f"work-{i}")], log, env))
            logs.append(log)
        for proc, log in zip(procs[1:], logs[1:]):
            _wait_for(log, "Successfully registered with master", proc, timeout, f"Spark worker ({log.name})")
    except BaseException:
        for proc in procs:
            _terminate(proc.pid)
        raise
    cluster = Cluster(url, [p.pid for p in procs], str(state), [str(p) for p in logs])
    (state / STATE).write_text(json.dumps(asdict(cluster), indent=2))
    return cluster


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # reap if it is our child
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _terminate(pid: int, grace: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_cluster(state_dir: str | os.PathLike) -> list[int]:
    """Stop the processes recorded in ``state_dir`` (workers first); returns the pids stopped."""
    state = Path(state_dir).absolute() / STATE
    if not state.exists():
        return []
    cluster = Cluster(**json.loads(state.read_text()))
    for pid in reversed(cluster.pids):
        _terminate(pid)
    state.unlink()
    return cluster.pids


def read_cluster(state_dir: str | os.PathLike) -> Cluster | None:
    state = Path(state_dir).absolute() / STATE
    return Cluster(**json.loads(state.read_text())) if state.exists() else None

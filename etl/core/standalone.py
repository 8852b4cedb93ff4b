"""A real Spark standalone cluster on one machine (one master, N workers) from the installed pyspark.

Used by the test suite and by ``make cluster-up`` / ``make cluster-down`` so that jobs are exercised
with separate executor JVMs and ``spark-submit --master spark://...``, not only in local mode.

Two shapes: every process on 127.0.0.1 (``hosts=0``), or ``hosts=N`` separate network hosts (etl.core.netns:
a namespace per worker with its own address on a private bridge, links optionally rate-limited) and a head
namespace for the master, where drivers run too (``ip netns exec <head> spark-submit ...``). Every process is stopped by the pid
recorded in ``<state_dir>/cluster.json``, and the namespaces and links by the names recorded there.
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

from etl.core import netns
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
    driver_host: str = "127.0.0.1"      # the address a driver binds to so that every executor reaches it
    driver_namespace: str | None = None  # with separate hosts: run drivers here (the head host)
    network: dict | None = None         # netns.HostNet.to_dict() when the workers are separate hosts
    worker_hosts: list[str] | None = None  # the address of each worker, in worker order
    connect_url: str | None = None      # sc://host:port of the Spark Connect server, when started with connect

    @property
    def hostnet(self) -> netns.HostNet | None:
        return netns.HostNet.from_dict(self.network) if self.network else None


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(state_dir: Path, address: str = "127.0.0.1") -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": address,
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


def _spawn(args: list[str], log: Path, env: dict[str, str], host: netns.Host | None = None,
           program: str = "spark-class") -> subprocess.Popen:
    """``program`` (a script in pyspark's bin/) with ``args``, in its own session, on ``host`` if given."""
    cmd = [str(spark_home() / "bin" / program), *args]
    if host is not None:
        cmd = netns.in_host(host, cmd)
    with log.open("w") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def start_cluster(state_dir: str | os.PathLike, workers: int = 2, cores: int = 1, memory: str = "2g",
                  timeout: float = 120.0, hosts: int = 0, bandwidth: str | None = None,
                  connect: bool = False, connect_memory: str = "2g") -> Cluster:
    """Start a master and ``workers`` workers (``cores`` and ``memory`` each): on 127.0.0.1, or with
    ``hosts`` > 0 one worker on each of ``hosts`` network namespaces (then ``workers`` is ``hosts``),
    their links shaped to ``bandwidth`` (a tc rate, e.g. ``1gbit``) if given. With ``connect``, also a Spark
    Connect server (``connect_memory`` of driver heap), the cluster's driver, on the head host."""
    state = Path(state_dir).absolute()
    if (state / STATE).exists():
        raise ClusterError(f"a cluster is already recorded in {state / STATE}; stop it first (make cluster-down)")
    if bandwidth and not hosts:
        raise ClusterError("--bandwidth shapes the links between hosts: give --hosts N as well")
    (state / "logs").mkdir(parents=True, exist_ok=True)
    (state / "local").mkdir(exist_ok=True)
    net = netns.make_hosts(hosts, _tag(state), bandwidth) if hosts else None
    head = net.head_address if net else "127.0.0.1"
    places = net.hosts if net else [None] * workers
    port = 7077 if net else _free_port()  # a fresh namespace has every port free
    url = f"spark://{head}:{port}"
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    try:
        log = state / "logs" / "master.log"
        procs.append(_spawn(["org.apache.spark.deploy.master.Master", "--host", head, "--port", str(port),
                             "--webui-port", "8080" if net else str(_free_port())], log, _env(state, head),
                            net.head if net else None))
        logs.append(log)
        _wait_for(log, "I have been elected leader", procs[-1], timeout, "Spark master")
        for i, place in enumerate(places):
            address = place.address if place else "127.0.0.1"
            log = state / "logs" / f"worker-{i}.log"
            webui = "8081" if place else str(_free_port())
            procs.append(_spawn(["org.apache.spark.deploy.worker.Worker", url, "--host", address,
                                 "--cores", str(cores), "--memory", memory, "--webui-port", webui,
                                 "--work-dir", str(state / f"work-{i}")], log, _env(state, address), place))
            logs.append(log)
        for proc, log in zip(procs[1:], logs[1:]):
            _wait_for(log, "Successfully registered with master", proc, timeout, f"Spark worker ({log.name})")
        connect_url = None
        if connect:
            connect_port = 15002 if net else _free_port()
            log = state / "logs" / "connect.log"
            procs.append(_spawn_connect(url, head, connect_port, connect_memory, log, _env(state, head),
                                        net.head if net else None))
            logs.append(log)
            _wait_for(log, "Spark Connect server started at", procs[-1], timeout, "Spark Connect server")
            connect_url = f"sc://{head}:{connect_port}"
    except BaseException:
        for proc in procs:
            _terminate(proc.pid)
        if net:
            netns.remove_hosts(net)
        raise
    cluster = Cluster(url, [p.pid for p in procs], str(state), [str(p) for p in logs], driver_host=head,
                      driver_namespace=net.head.name if net else None, network=net.to_dict() if net else None,
                      worker_hosts=[p.address if p else "127.0.0.1" for p in places], connect_url=connect_url)
    (state / STATE).write_text(json.dumps(asdict(cluster), indent=2))
    return cluster


CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def _spawn_connect(master_url: str, address: str, port: int, memory: str, log: Path, env: dict[str, str],
                   host: netns.Host | None) -> subprocess.Popen:
    """The Spark Connect server from pyspark's own jars (spark-connect_2.13), as ``start-connect-server.sh``
    runs it: a long-lived driver of ``master_url`` serving gRPC on ``address:port``. Its Python workers run this
    interpreter, so lakedl's UDFs import on the executors as they do for spark-submit jobs."""
    python = env["PYSPARK_PYTHON"]
    args = ["--class", CONNECT_SERVER_CLASS, "--master", master_url,
            "--name", "lakedl Spark Connect server", "--driver-memory", memory,
            "--conf", f"spark.connect.grpc.binding.address={address}",
            "--conf", f"spark.connect.grpc.binding.port={port}",
            "--conf", f"spark.driver.host={address}", "--conf", f"spark.driver.bindAddress={address}",
            "--conf", "spark.ui.enabled=false", "--conf", f"spark.pyspark.python={python}",
            "--conf", "spark.sql.execution.arrow.pyspark.enabled=true"]
    return _spawn(args, log, env, host, program="spark-submit")


def _tag(state: Path) -> str:
    """A short name for this cluster's namespaces and links, unique per state directory."""
    import hashlib

    return "ldl" + hashlib.sha1(str(state).encode()).hexdigest()[:6]


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
    if cluster.hostnet:
        netns.remove_hosts(cluster.hostnet)
    state.unlink()
    return cluster.pids


def read_cluster(state_dir: str | os.PathLike) -> Cluster | None:
    state = Path(state_dir).absolute() / STATE
    return Cluster(**json.loads(state.read_text())) if state.exists() else None


def driver_command(cluster: Cluster, cmd: list[str]) -> list[str]:
    """``cmd`` (spark-submit, python, a notebook server) as it must run to be this cluster's driver: inside the
    head host when the workers are separate hosts, as is otherwise."""
    return netns.in_host(cluster.driver_namespace, cmd) if cluster.driver_namespace else cmd


def cluster_health(state_dir: str | os.PathLike) -> dict | None:
    """What ``cluster status`` shows: each recorded process, where it runs and whether it is alive."""
    cluster = read_cluster(state_dir)
    if cluster is None:
        return None
    net = cluster.hostnet
    workers = len(cluster.pids) - 1 - bool(cluster.connect_url)  # master, workers, then the Connect server
    names = [h.name for h in net.hosts] if net else ["127.0.0.1"] * workers
    addresses = cluster.worker_hosts or ["127.0.0.1"] * workers
    return {"master_url": cluster.master_url, "master_alive": _alive(cluster.pids[0]),
            "network": cluster.network, "connect_url": cluster.connect_url,
            "connect_alive": bool(cluster.connect_url) and _alive(cluster.pids[-1]),
            "workers": [{"host": name, "address": address, "pid": pid, "alive": _alive(pid)}
                        for name, address, pid in zip(names, addresses, cluster.pids[1:1 + workers])]}

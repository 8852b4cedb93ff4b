"""A Spark cluster of separate network hosts on this machine (`lakedl cluster up --hosts 2`): each worker in its
own network namespace with its own address on a private bridge, the master and the drivers on a head host. Jobs go through spark-submit as on a real cluster: ETL, training under both launchers (gloo binds the
interface each host routes the rendezvous through, found on that host), scoring. Needs root (CI runs as root)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from etl.core import netns
from etl.core.standalone import cluster_health, driver_command, spark_home, start_cluster, stop_cluster
from etl.core.tables import TableStore

pytestmark = [pytest.mark.distributed, pytest.mark.spark]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    state = tmp_path_factory.mktemp("hosts")
    cluster = start_cluster(state, cores=1, memory="1g", hosts=2)
    yield cluster
    stop_cluster(state)


def submit(cluster, script: Path, *args: str) -> subprocess.CompletedProcess:
    """spark-submit on the head host, as a user of that cluster would."""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP=cluster.driver_host)
    cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", cluster.master_url,
           "--conf", "spark.executor.memory=512m", "--conf", f"spark.driver.host={cluster.driver_host}",
           "--conf", "spark.ui.enabled=false", str(script), *args]
    out = subprocess.run(driver_command(cluster, cmd), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return out


def report_of(out: subprocess.CompletedProcess) -> dict:
    lines = out.stdout.splitlines()
    return json.loads("\n".join(lines[lines.index("{"):]))


def executor_hosts(cluster, since: set[Path]) -> set[str]:
    """The addresses executors of applications started after ``since`` were launched with and ran tasks on."""
    found = set()
    for log in Path(cluster.state_dir).glob("work-*/app-*/*/stderr"):
        if log.parent.parent in since or "Running task" not in log.read_text(errors="replace"):
            continue
        worker = int(log.parts[-4].split("-")[1])
        found.add(cluster.worker_hosts[worker])
    return found


def test_each_worker_is_its_own_network_host(hosts):
    net = hosts.hostnet
    assert len(net.hosts) == 2 and hosts.master_url.startswith(f"spark://{net.head_address}:")
    assert len({net.head_address, *hosts.worker_hosts}) == 3 and "127.0.0.1" not in hosts.worker_hosts
    assert hosts.driver_namespace == net.head.name
    for host in [net.head, *net.hosts]:
        assert host.name in netns.namespaces()
        addrs = subprocess.run(netns.in_host(host, ["ip", "-o", "-4", "addr"]), capture_output=True, text=True).stdout
        assert sorted(re.findall(r"inet (\S+)/", addrs)) == sorted(["127.0.0.1", host.address])  # its own only
        routes = subprocess.run(netns.in_host(host, ["ip", "route"]), capture_output=True, text=True).stdout
        assert "default" not in routes  # the hosts reach each other over the bridge, and nothing off it
    here = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    assert not any(h.address in here for h in [net.head, *net.hosts])  # this namespace holds none of it
    health = cluster_health(hosts.state_dir)
    assert health["master_alive"] and [w["alive"] for w in health["workers"]] == [True, True]
    assert [w["address"] for w in health["workers"]] == hosts.worker_hosts


def test_etl_train_and_score_across_hosts(hosts, raw_data, tmp_path):
    """Text ETL → training with TorchDistributor and with Horovod, one rank on each host → scoring, all with
    executors on both hosts; counts reconcile and every rank ends with the same weights."""
    tables, shards = tmp_path / "tables", tmp_path / "shards"
    before = set(Path(hosts.state_dir).glob("work-*/app-*"))
    report = report_of(submit(hosts, REPO / "jobs" / "etl_text.py",
                              "--input", str(raw_data / "reviews" / "vader_tweets.jsonl"),
                              "--set", f"paths.tables_dir={tables}", "--set", f"output.shards_dir={shards}"))
    assert report["rows_read"] == report["rows_kept"] + report["rows_quarantined"] == 4200
    assert TableStore(tables).count("silver_reviews") == report["rows_kept"]
    assert executor_hosts(hosts, before) == set(hosts.worker_hosts)

    for launcher in ("torch_distributor", "horovod"):
        before = set(Path(hosts.state_dir).glob("work-*/app-*"))
        submit(hosts, REPO / "jobs" / "train.py", "--shards", str(shards / "reviews"), "--launcher", launcher,
               "--processes", "2", "--run-name", launcher, "--set", f"paths.runs_dir={tmp_path / 'runs'}",
               "--set", "model.name=bow", "--set", "train.epochs=1", "--set", "train.progress=false")
        result = json.loads((tmp_path / "runs" / "train" / launcher / "result.json").read_text())
        assert result["processes"] == 2 and result["weights_identical_across_ranks"], result
        assert sorted(result["address_by_rank"]) == sorted(hosts.worker_hosts), result  # one rank per host
        assert executor_hosts(hosts, before) == set(hosts.worker_hosts)

    bundle = tmp_path / "bundle"
    subprocess.run([sys.executable, "-m", "jobs.cli", "bundle", "export", "--run",
                    str(tmp_path / "runs" / "train" / "torch_distributor"), "--out", str(bundle)],
                   cwd=REPO, check=True, capture_output=True)
    before = set(Path(hosts.state_dir).glob("work-*/app-*"))
    scored = report_of(submit(hosts, REPO / "jobs" / "score.py", "--bundle", str(bundle),
                              "--input", str(raw_data / "reviews" / "vader_tweets.jsonl"),
                              "--set", f"paths.tables_dir={tables}"))
    assert scored["rows_read"] == scored["rows_scored"] + scored["rows_quarantined"] == 4200, scored
    assert TableStore(tables).count("predictions") == scored["rows_scored"]
    assert executor_hosts(hosts, before) == set(hosts.worker_hosts)


def test_shaped_links_and_down_leaves_nothing_behind(tmp_path):
    cluster = start_cluster(tmp_path / "c", cores=1, memory="512m", hosts=2, bandwidth="100mbit")
    net = cluster.hostnet
    for host in net.hosts:
        head_side = subprocess.run(["tc", "qdisc", "show", "dev", host.veth], capture_output=True, text=True).stdout
        host_side = subprocess.run(netns.in_host(host, ["tc", "qdisc", "show", "dev", "eth0"]),
                                   capture_output=True, text=True).stdout
        assert "tbf" in head_side and "rate 100Mbit" in head_side, head_side
        assert "tbf" in host_side and "rate 100Mbit" in host_side, host_side
    stop_cluster(tmp_path / "c")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    made = [net.head, *net.hosts]
    assert not any(h.name in netns.namespaces() for h in made)
    assert net.bridge not in links and not any(h.veth in links for h in made)
    for pid in cluster.pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert cluster_health(tmp_path / "c") is None


def test_a_second_start_with_the_same_names_removes_nothing_of_the_first(tmp_path):
    """Two `cluster up` on one state directory at once pass the recorded-cluster check together; the second
    meets the first's bridge and must fail without deleting the first's hosts."""
    first = netns.make_hosts(1, "ldltwin")
    try:
        with pytest.raises(netns.NetnsError, match="ldltwinbr"):
            netns.make_hosts(1, "ldltwin")
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert first.bridge in links and first.hosts[0].name in netns.namespaces()
    finally:
        netns.remove_hosts(first)
    assert first.hosts[0].name not in netns.namespaces()


def test_hosts_refuse_without_root_or_with_a_bad_rate(tmp_path):
    with pytest.raises(netns.NetnsError, match="not a tc rate"):
        start_cluster(tmp_path / "r", hosts=2, bandwidth="fast")
    with pytest.raises(Exception, match="give --hosts"):
        start_cluster(tmp_path / "b", bandwidth="1gbit")
    if os.geteuid() == 0:  # the refusal itself, as a non-root user meets it
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                              "-c", "from etl.core.netns import check_root; check_root()"],
                             cwd=REPO, capture_output=True, text=True)
        assert out.returncode != 0 and "need root" in out.stderr, out.stderr

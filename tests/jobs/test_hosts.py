"""A Spark cluster of separate network hosts on this machine (`lakedl cluster up --hosts 2`): each worker in its
own network namespace with its own address on a private bridge, the master and the drivers on a head host. Jobs go through spark-submit as on a real cluster: ETL, training under both launchers (gloo binds the
interface each host routes the rendezvous through, found on that host), scoring. Needs root (CI runs as root)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
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


def spawn_args(cluster, args: list[str]) -> tuple[list[str], dict]:
    """(command, Popen keywords) for spark-submit of ``args`` on the head host, as :func:`submit` runs it."""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP=cluster.driver_host)
    cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", cluster.master_url,
           "--conf", "spark.executor.memory=512m", "--conf", f"spark.driver.host={cluster.driver_host}",
           "--conf", "spark.ui.enabled=false", *args]
    return driver_command(cluster, cmd), {"cwd": REPO, "env": env}


def submit(cluster, *args: str | Path) -> subprocess.CompletedProcess:
    """spark-submit on the head host, as a user of that cluster would."""
    cmd, kw = spawn_args(cluster, [str(a) for a in args])
    out = subprocess.run(cmd, **kw, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return out


def start(cluster, *args: str | Path) -> subprocess.Popen:
    cmd, kw = spawn_args(cluster, [str(a) for a in args])
    return subprocess.Popen(cmd, **kw, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def report_of(out: subprocess.CompletedProcess | str) -> dict:
    lines = (out if isinstance(out, str) else out.stdout).splitlines()
    return json.loads("\n".join(lines[lines.index("{"):]))


def running_on(cluster, since: set[Path], worker: int) -> bool:
    """Whether an executor of an application started after ``since`` runs tasks on ``worker``."""
    return any(log.parent.parent not in since and "Running task" in log.read_text(errors="replace")
               for log in Path(cluster.state_dir).glob(f"work-{worker}/app-*/*/stderr"))


def kill_rank_at(proc: subprocess.Popen, run: Path, rank: int, step: int) -> dict:
    """SIGKILL ``rank``'s process (pid from its heartbeat, whichever host it runs on: one pid space) once it has
    reached ``step``; returns that heartbeat."""
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            beat = json.loads((run / "ranks" / f"rank{rank}.json").read_text())
        except (OSError, ValueError):  # not written yet
            beat = None
        if beat and beat["step"] >= step:
            os.kill(beat["pid"], signal.SIGKILL)
            return beat
        time.sleep(0.01)
    raise AssertionError(f"rank {rank} never reached step {step} (exit {proc.poll()})")


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


@pytest.fixture(scope="module")
def text_etl(hosts, raw_data, tmp_path_factory):
    """Bronze load, then the text ETL of what bronze gained, each through spark-submit on the head host: their
    reports, tables, shards and executor hosts."""
    tmp = tmp_path_factory.mktemp("text")
    tables, raw = ["--set", f"paths.tables_dir={tmp / 'tables'}"], tmp / "raw"
    raw.mkdir()
    lines = (raw_data / "reviews" / "vader_tweets.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    for part in range(4):  # four files: tasks for both hosts (one small file is one task)
        (raw / f"vader_tweets-{part}.jsonl").write_text("".join(lines[part::4]), encoding="utf-8")
    before = set(Path(hosts.state_dir).glob("work-*/app-*"))
    bronze = report_of(submit(hosts, REPO / "jobs" / "load_bronze.py", "--input", str(raw), *tables))
    bronze_hosts = executor_hosts(hosts, before)
    before = set(Path(hosts.state_dir).glob("work-*/app-*"))
    report = report_of(submit(hosts, REPO / "jobs" / "etl_text.py", "--set", "input.format=bronze",
                              "--set", "input.table=bronze_reviews", *tables, "--set", f"output.shards_dir={tmp}"))
    return {"bronze": bronze, "report": report, "tables": tmp / "tables", "shards": tmp / "reviews",
            "executors": executor_hosts(hosts, before), "bronze_executors": bronze_hosts}


TRAIN = ["--set", "model.name=bow", "--set", "train.epochs=1", "--set", "train.progress=false"]


def train_on(hosts, shards: Path, runs: Path, launcher: str, name: str, *more: str) -> list[str]:
    return [str(REPO / "jobs" / "train.py"), "--shards", str(shards), "--launcher", launcher, "--processes", "2",
            "--run-name", name, "--set", f"paths.runs_dir={runs}", *TRAIN, *more]


def test_etl_train_and_score_across_hosts(hosts, text_etl, raw_data, tmp_path):
    """Bronze → text ETL → training with TorchDistributor and with Horovod, one rank on each host → scoring, all
    with executors on both hosts; counts reconcile and every rank ends with the same weights."""
    bronze, report = text_etl["bronze"], text_etl["report"]
    assert bronze["rows_read"] == bronze["rows_inserted"] == 4200 and bronze["rows_corrupt"] == 0, bronze
    assert report["rows_read"] == report["rows_kept"] + report["rows_quarantined"] == 4200
    assert TableStore(text_etl["tables"]).count("silver_reviews") == report["rows_kept"]
    assert text_etl["executors"] == text_etl["bronze_executors"] == set(hosts.worker_hosts)

    for launcher in ("torch_distributor", "horovod"):
        before = set(Path(hosts.state_dir).glob("work-*/app-*"))
        submit(hosts, *train_on(hosts, text_etl["shards"], tmp_path / "runs", launcher, launcher))
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
                              "--set", f"paths.tables_dir={text_etl['tables']}"))
    assert scored["rows_read"] == scored["rows_scored"] + scored["rows_quarantined"] == 4200, scored
    assert TableStore(text_etl["tables"]).count("predictions") == scored["rows_scored"]
    assert executor_hosts(hosts, before) == set(hosts.worker_hosts)


def test_image_etl_across_hosts(hosts, raw_data, tmp_path):
    """Image ETL of a class-per-folder tree of 600 real Fashion-MNIST images and one corrupt file, executors on
    both hosts: the bad one quarantined with its reason, the counts reconciled."""
    from PIL import Image

    from etl.images.pipeline import idx_array

    images = idx_array(raw_data / "fashion_mnist" / "train-images-idx3-ubyte.gz")[:600]
    labels = idx_array(raw_data / "fashion_mnist" / "train-labels-idx1-ubyte.gz")[:600]
    root = tmp_path / "images"
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / f"class{label}" / f"{i}.png")
    (root / "class0" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    before = set(Path(hosts.state_dir).glob("work-*/app-*"))
    report = report_of(submit(hosts, REPO / "jobs" / "etl_images.py", "--input", root, "--format", "folder",
                              "--name", "hosts", "--set", f"paths.tables_dir={tmp_path / 'tables'}",
                              "--set", f"output.shards_dir={tmp_path / 'shards'}"))
    assert report["rows_read"] == report["rows_kept"] + report["rows_quarantined"] == 601, report
    assert report["rows_quarantined"] == 1 and report["reasons"] == {"undecodable": 1}, report
    assert sum(report["rows_per_split"].values()) == 600
    assert executor_hosts(hosts, before) == set(hosts.worker_hosts)


@pytest.mark.parametrize("launcher", ["torch_distributor", "horovod"])
def test_a_rank_killed_on_one_host_restarts_by_itself(hosts, text_etl, tmp_path, launcher):
    """Rank 1 (on the second host) SIGKILLed mid-epoch: the run completes without a person, from the checkpoint,
    with the optimizer steps and dev accuracy of an uninterrupted run; result.json records the restart."""
    runs, more = tmp_path / "runs", ("--set", "train.batch_size=16", "--set", "train.checkpoint_every=10")
    proc = start(hosts, *train_on(hosts, text_etl["shards"], runs, launcher, "killed", *more))
    killed = kill_rank_at(proc, runs / "train" / "killed", 1, 25)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, (out + err)[-4000:]
    result = json.loads((runs / "train" / "killed" / "result.json").read_text())
    [restart] = result["restarts"]
    assert restart["resumed_from_step"] >= 20 and restart["resumed_from_step"] % 10 == 0, restart
    assert restart["steps_lost"] == restart["reached_step"] - restart["resumed_from_step"], restart
    assert killed["address"] in hosts.worker_hosts
    assert sorted(result["address_by_rank"]) == sorted(hosts.worker_hosts) and result["weights_identical_across_ranks"]
    submit(hosts, *train_on(hosts, text_etl["shards"], runs, launcher, "clean", *more))
    clean = json.loads((runs / "train" / "clean" / "result.json").read_text())
    assert clean["restarts"] == [] and result["steps"] == clean["steps"]
    assert abs(result["final"]["dev_sentiment_accuracy"] - clean["final"]["dev_sentiment_accuracy"]) <= 0.01


def test_a_worker_killed_mid_etl_loses_and_repeats_nothing(hosts, raw_data, tmp_path):
    """The Spark worker of the second host SIGKILLed (its executor goes with it) while the text ETL runs: the
    job completes through Spark's retries on the first host; silver commits once, read = kept + quarantined,
    no id twice. Last in this module: the cluster has one worker afterwards."""
    tables, corpus = tmp_path / "tables", tmp_path / "vader"
    corpus.mkdir()
    for source in sorted((raw_data / "reviews").glob("vader_*.jsonl")):  # the four VADER corpora, 23,703 rows
        shutil.copy(source, corpus)
    lines = sum(len(p.read_bytes().splitlines()) for p in corpus.iterdir())
    before = set(Path(hosts.state_dir).glob("work-*/app-*"))
    proc = start(hosts, REPO / "jobs" / "etl_text.py", "--input", corpus,
                 "--set", f"paths.tables_dir={tables}", "--set", f"output.shards_dir={tmp_path / 'shards'}")
    worker = hosts.pids[2]  # master, worker 0, worker 1 (recorded by start_cluster)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not running_on(hosts, before, 1):
        time.sleep(0.2)
    assert proc.poll() is None, "the ETL ended before the second host ran a task"
    os.kill(worker, signal.SIGKILL)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, (out + err)[-4000:]
    master = Path(hosts.state_dir, "logs", "master.log").read_text()
    assert "Telling app of lost executor" in master  # the running application lost the second host's executor
    report = report_of(out)
    assert report["rows_read"] == report["rows_kept"] + report["rows_quarantined"] == lines == 23703, report
    store = TableStore(tables)
    assert store.version("silver_reviews") == 0  # one commit: the table's creation
    ids = store.read_arrow("silver_reviews", columns=["review_id"]).column("review_id").to_pylist()
    assert len(ids) == len(set(ids)) == report["rows_kept"]


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

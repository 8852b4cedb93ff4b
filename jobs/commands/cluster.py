"""``lakedl cluster up|down|status``: a Spark standalone cluster on this machine, on 127.0.0.1 or on separate
network hosts (namespaces on a private bridge, optionally rate-limited links)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

StateDir = Annotated[Path, typer.Option(help="pids, logs, work dirs and the hosts made (as given to `cluster up`)")]


def cluster_up(state_dir: StateDir = Path(".cluster"),
               workers: Annotated[int, typer.Option(min=1, help="number of workers on 127.0.0.1 (without --hosts)")] = 2,
               hosts: Annotated[int, typer.Option(min=0, help="separate network hosts, one worker each (needs root)")] = 0,
               bandwidth: Annotated[str | None, typer.Option(help="with --hosts: each host's link rate, e.g. 1gbit")] = None,
               cores: Annotated[int, typer.Option(min=1, help="cores per worker")] = 1,
               memory: Annotated[str, typer.Option(help="memory per worker")] = "2g",
               connect: Annotated[bool, typer.Option(help="also start a Spark Connect server as the cluster's "
                                                     "driver; prints its sc:// URL")] = False) -> None:
    """Start a Spark standalone master and workers; prints the master URL and how a driver reaches it.

    With --hosts N each worker runs in its own network namespace with its own address on a private bridge
    (no route leads off it), and the master in a head namespace where drivers run too (see docs/cluster.md).
    With --connect, jobs reach the cluster as Spark Connect clients: SPARK_REMOTE=sc://... lakedl ... (or
    --set spark.remote=sc://...), see docs/connect.md."""
    from etl.core.standalone import start_cluster

    cluster = start_cluster(state_dir, hosts or workers, cores, memory, hosts=hosts, bandwidth=bandwidth,
                            connect=connect)
    typer.echo(cluster.master_url)
    if cluster.connect_url:
        typer.echo(cluster.connect_url)
        typer.echo(f"# run jobs through it: SPARK_REMOTE={cluster.connect_url} lakedl ...", err=True)
    if cluster.driver_namespace:
        typer.echo(f"# run drivers on the head host: ip netns exec {cluster.driver_namespace} env "
                   f"SPARK_LOCAL_IP={cluster.driver_host} spark-submit --master {cluster.master_url} ...", err=True)


def cluster_status(state_dir: StateDir = Path(".cluster")) -> None:
    """The recorded cluster: master URL, each worker's host, address and whether its process is alive."""
    from etl.core.standalone import cluster_health

    health = cluster_health(state_dir)
    if health is None:
        typer.echo("no cluster recorded")
        raise typer.Exit(1)
    typer.echo(f"master   {health['master_url']}  ({'up' if health['master_alive'] else 'DOWN'})")
    if health["network"]:
        net = health["network"]
        typer.echo(f"head     {net['head']['name']:<14} {net['head']['address']:<15} (master, drivers)  bridge "
                   f"{net['bridge']} /{net['prefix']}, links {net['bandwidth'] or 'unshaped'}")
    for w in health["workers"]:
        typer.echo(f"worker   {w['host']:<14} {w['address']:<15} pid {w['pid']:<8} {'up' if w['alive'] else 'DOWN'}")
    if health["connect_url"]:
        typer.echo(f"connect  {health['connect_url']}  ({'up' if health['connect_alive'] else 'DOWN'})")


def cluster_down(state_dir: StateDir = Path(".cluster")) -> None:
    """Stop the cluster started by `lakedl cluster up` (by its recorded pids) and remove the hosts it made."""
    from etl.core.standalone import stop_cluster

    pids = stop_cluster(state_dir)
    typer.echo(f"stopped {len(pids)} processes" if pids else "no cluster recorded")

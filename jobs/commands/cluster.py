"""``lakedl cluster up|down``: a Spark standalone cluster on 127.0.0.1 (for testing)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def cluster_up(state_dir: Annotated[Path, typer.Option(help="pids, logs and work dirs")] = Path(".cluster"),
               workers: Annotated[int, typer.Option(min=1, help="number of workers")] = 2,
               cores: Annotated[int, typer.Option(min=1, help="cores per worker")] = 1,
               memory: Annotated[str, typer.Option(help="memory per worker")] = "2g") -> None:
    """Start a Spark standalone master and workers on 127.0.0.1; prints the master URL."""
    from etl.core.standalone import start_cluster

    cluster = start_cluster(state_dir, workers, cores, memory)
    typer.echo(cluster.master_url)


def cluster_down(state_dir: Annotated[Path, typer.Option(help="as given to `cluster up`")] = Path(".cluster")) -> None:
    """Stop the cluster started by `lakedl cluster up` (by its recorded pids)."""
    from etl.core.standalone import stop_cluster

    pids = stop_cluster(state_dir)
    typer.echo(f"stopped {len(pids)} processes" if pids else "no cluster recorded")

"""A lease file so two scheduled runs of the same job never work on the same table at once.

The lease is a JSON file created with O_EXCL (atomic on a local or POSIX shared filesystem): owner,
host, pid, expiry. A second run finds it and stops with a message naming the holder. A lease is stale,
and taken over, when it has expired or when its holder was on this host and its process is gone (a
crashed or killed run), so a crash never blocks the next scheduled run for longer than it must.
On object storage without atomic create-if-absent, run scheduled jobs from one scheduler (Airflow's
``max_active_runs=1``) instead."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from etl.core.errors import LakedlError


class LeaseHeld(LakedlError, RuntimeError):
    """Another live run holds the lease; the message names it and when it expires."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    def __init__(self, path: str | os.PathLike, seconds: float = 3600, owner: str | None = None) -> None:
        self.path = Path(path)
        self.seconds = seconds
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.held = False

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, OSError):
            return {"owner": "unreadable", "expires": 0}  # a half-written lease file: treat as stale

    def _stale(self, holder: dict) -> bool:
        if holder.get("expires", 0) < time.time():
            return True
        return holder.get("host") == socket.gethostname() and not pid_alive(int(holder.get("pid", -1)))

    def acquire(self) -> Lease:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # at most one takeover of a stale lease
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue
                if not self._stale(holder):
                    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(holder.get("expires", 0)))
                    raise LeaseHeld(f"another run holds {self.path.name} ({holder.get('owner')}) until {until}; "
                                    "it is still working, or delete the lease file if you are sure it is not")
                self.path.unlink(missing_ok=True)  # stale: take it over (O_EXCL decides between two takers)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "acquired": time.time(), "expires": time.time() + self.seconds}, fh)
            self.held = True
            return self
        raise LeaseHeld(f"could not take over the stale lease {self.path}: another run took it first")

    def release(self) -> None:
        if self.held and (self._holder() or {}).get("owner") == self.owner:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def file_lock(path: str | os.PathLike, timeout: float = 3600) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for a short critical section shared by
    concurrent runs on one host or a POSIX shared filesystem: the second run waits, never fails. The
    kernel releases the lock when its holder dies, so a killed run never leaves it held."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LeaseHeld(f"{path} stayed locked by another run for {timeout:.0f} s; is a run stuck? "
                                    "(the lock goes with its process)") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

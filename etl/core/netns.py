"""Separate network hosts on one machine: Linux network namespaces on a private bridge.

``make_hosts(n)`` creates a bridge (a switch: it holds no address) and ``n + 1`` namespaces, a head (for the
master and the driver) and ``n`` worker hosts, each joined to the bridge by a veth pair and holding one address
of a private /24 on its ``eth0`` (plus its own loopback), as every node of a real cluster has. Nothing else
holds an address on that subnet and the namespaces have no default route, so it reaches only the hosts this
call made. ``bandwidth`` (a ``tc`` rate such as ``1gbit``) shapes both directions of every worker host's link
with a token-bucket filter; ``netem`` is not in this kernel, so there is no latency emulation.

Every name made here starts with the tag and is recorded in the returned ``HostNet`` so that
``remove_hosts`` deletes exactly those (nothing is looked up by pattern). Needs root (CAP_NET_ADMIN).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from etl.core.errors import LakedlError

ETC_NETNS = Path("/etc/netns")  # `ip netns exec NAME` bind-mounts /etc/netns/NAME/<file> over /etc/<file>
SUBNETS = ipaddress.ip_network("10.231.0.0/16")  # candidate /24s; the first one no interface here uses


class NetnsError(LakedlError, RuntimeError):
    """A namespace, link or qdisc could not be made; the message says which command failed and why."""


@dataclass
class Host:
    name: str        # the network namespace
    address: str     # its address on the bridge
    veth: str        # the bridge's end of its link (the host's end is ``eth0`` inside the namespace)


@dataclass
class HostNet:
    bridge: str
    prefix: int
    bandwidth: str | None
    head: Host | None = None                            # master and driver
    hosts: list[Host] = field(default_factory=list)     # one Spark worker each

    @property
    def head_address(self) -> str:
        return self.head.address

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HostNet:
        return cls(**{**data, "head": Host(**data["head"]) if data.get("head") else None,
                      "hosts": [Host(**h) for h in data["hosts"]]})


def check_root(what: str = "separate network hosts") -> None:
    """Refuse early, with what to do, where namespaces cannot be made."""
    if os.geteuid() != 0:
        raise NetnsError(f"{what} need root (network namespaces, veth links and tc need CAP_NET_ADMIN): run as "
                         "root, or start the cluster without --hosts (every process on 127.0.0.1)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise NetnsError(f"{what} need the `{tool}` command (Debian: apt-get install iproute2)")


def check_rate(rate: str | None) -> None:
    if rate is not None:
        _bits_per_s(rate)


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise NetnsError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def namespaces() -> set[str]:
    """The named network namespaces (``ip netns list``: one per line, maybe followed by ``(id: N)``)."""
    return {line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()}


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Subnets on this namespace's interfaces and on every named namespace's (other clusters' hosts)."""
    outs = [_run("ip", "-o", "-4", "addr", "show")]
    for name in namespaces():
        outs.append(subprocess.run(["ip", "-n", name, "-o", "-4", "addr", "show"], capture_output=True,
                                   text=True).stdout)
    return [ipaddress.ip_interface(m).network for out in outs for m in re.findall(r"inet (\S+)", out)]


def free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    for net in SUBNETS.subnets(new_prefix=24):
        if not any(net.overlaps(u) for u in used):
            return net
    raise NetnsError(f"no free /24 left in {SUBNETS} for a bridge; remove unused clusters (lakedl cluster down)")


def shape(device: str, rate: str, namespace: str | None = None) -> None:
    """A token-bucket filter of ``rate`` on ``device``'s egress (burst sized for ~1 ms at that rate)."""
    bits = _bits_per_s(rate)
    burst = max(16 * 1024, int(bits / 8 / 1000))
    cmd = ["tc", "qdisc", "replace", "dev", device, "root", "tbf", "rate", rate, "burst", str(burst), "latency", "50ms"]
    _run(*(in_host(namespace, cmd) if namespace else cmd))


def _bits_per_s(rate: str) -> float:
    m = re.match(r"^(\d+(?:\.\d+)?)([kmg]?)(bit|bps)$", rate)
    if not m:
        raise NetnsError(f"bandwidth {rate!r} is not a tc rate: give e.g. 100mbit, 1gbit or 10gbit")
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)] * (8 if m.group(3) == "bps" else 1)
    return float(m.group(1)) * scale


def make_hosts(n: int, tag: str, bandwidth: str | None = None) -> HostNet:
    """A head ``<tag>-h0`` and ``n`` hosts ``<tag>-h<i>`` on bridge ``<tag>br``; on any failure, what was made is
    removed."""
    check_root()
    check_rate(bandwidth)
    if len(tag) > 9 or not re.fullmatch(r"[a-z0-9]+", tag):
        raise NetnsError(f"tag {tag!r}: use up to 9 lowercase letters/digits (interface names are ≤ 15 chars)")
    subnet = free_subnet()
    addresses = list(subnet.hosts())
    net = HostNet(bridge=f"{tag}br", prefix=subnet.prefixlen, bandwidth=bandwidth)
    _run("ip", "link", "add", net.bridge, "type", "bridge")  # fails if another start made it: then nothing is ours
    try:
        _run("ip", "link", "set", net.bridge, "up")
        for i in range(n + 1):
            host = Host(name=f"{tag}-h{i}", address=str(addresses[i]), veth=f"{tag}v{i}")
            _run("ip", "netns", "add", host.name)
            if i == 0:
                net.head = host
            else:
                net.hosts.append(host)
            _run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.name)
            _run("ip", "link", "set", host.veth, "master", net.bridge, "up")
            _run("ip", "-n", host.name, "addr", "add", f"{host.address}/{net.prefix}", "dev", "eth0")
            _run("ip", "-n", host.name, "link", "set", "eth0", "up")
            _run("ip", "-n", host.name, "link", "set", "lo", "up")
            _write_hosts_file(host)
            if bandwidth and i > 0:
                shape(host.veth, bandwidth)                    # bridge → host
                shape("eth0", bandwidth, namespace=host.name)  # host → bridge
    except BaseException:
        remove_hosts(net)
        raise
    return net


def _write_hosts_file(host: Host) -> None:
    """Inside the namespace this machine's name resolves to the host's own address, as a real host's does
    (the shared /etc/hosts says 127.0.0.1, and libraries that bind "my hostname's address" — Horovod's
    process-set gloo contexts, Spark — would then offer loopback to the other hosts)."""
    folder = ETC_NETNS / host.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts").write_text(f"127.0.0.1\tlocalhost\n{host.address}\t{socket.gethostname()}\n")


def remove_hosts(net: HostNet) -> list[str]:
    """Delete the namespaces (their veth pairs go with them) and the bridge ``net`` records; returns what
    was removed. Names already gone are skipped, so this is safe to repeat."""
    removed = []
    names = namespaces() if shutil.which("ip") else set()
    for host in [*([net.head] if net.head else []), *net.hosts]:
        if host.name in names:
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True)
            removed.append(host.name)
        shutil.rmtree(ETC_NETNS / host.name, ignore_errors=True)
        if _link_exists(host.veth):
            subprocess.run(["ip", "link", "del", host.veth], capture_output=True)
    if _link_exists(net.bridge):
        subprocess.run(["ip", "link", "del", net.bridge], capture_output=True)
        removed.append(net.bridge)
    return removed


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def in_host(host: Host | str, cmd: list[str]) -> list[str]:
    """``cmd`` run inside ``host``'s namespace."""
    return ["ip", "netns", "exec", host.name if isinstance(host, Host) else host, *cmd]

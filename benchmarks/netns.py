"""Hosts on one machine: Linux network namespaces joined by a bridge on a private /24.

    net = Network(["db", "sandboxes", "beat", "worker1", "worker2"])
    net.up()
    net.address("db")                     # 10.x.y.11: the db host's address
    net.command("worker1", ["celery", ...])  # ["ip", "netns", "exec", "<ns>", "celery", ...]
    net.kill_host("worker1")              # the host dies: its link drops, every process in it is SIGKILLed
    net.close()                           # namespaces, veths and the bridge go

Each host is a namespace with its own loopback and one veth into a bridge in the root
namespace; the bridge holds the /24's first address, so the process that built the network
(the benchmark) reaches every host as an operator's machine would. Names carry a random
prefix (several runs may share the machine) and everything is removed by `close()`, which
also runs on SIGTERM/SIGINT/SIGHUP and at interpreter exit. Needs root and iproute2's
`ip netns`; `check()` says in one line why not.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from typing import Any, Sequence


NETNS_ETC = "/etc/netns"  # per-namespace files `ip netns exec` mounts over /etc


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, or no `ip netns`)."""


def check() -> None:
    """Raise NetnsUnavailable with a one-line reason unless namespaces can be made."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("multi-host run needs root (network namespaces and veth pairs)")
    if shutil.which("ip") is None:
        raise NetnsUnavailable("multi-host run needs iproute2's `ip` command")
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise NetnsUnavailable(f"`ip netns` is unavailable: {probe.stderr.strip() or probe.returncode}")


def _ip(*args: str, check_rc: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check_rc and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _free_subnet() -> str:
    """A 10.x.y.0/24 no interface or route of this machine uses: '10.x.y'."""
    used = _ip("-o", "addr").stdout + _ip("route").stdout
    rng = random.Random(uuid.uuid4().int)
    for _ in range(200):
        base = f"10.{rng.randint(128, 253)}.{rng.randint(1, 253)}"
        if f"{base}." not in used:
            return base
    raise RuntimeError("no free private /24 found")


class Network:
    """Named hosts, each a network namespace with one address on a shared bridge."""

    def __init__(self, hosts: Sequence[str], prefix: str | None = None) -> None:
        check()
        self.hosts = list(hosts)
        self.prefix = prefix or f"mh{uuid.uuid4().hex[:5]}"  # interface names stay within 15 characters
        self.subnet = _free_subnet()
        self.bridge = f"{self.prefix}br"
        self._made_bridge = False
        self._made: list[str] = []
        self._made_etc = not os.path.isdir(NETNS_ETC)  # /etc/netns goes again if this run made it
        self._closed = False
        self._previous: dict[int, Any] = {}

    # ---- names and addresses ------------------------------------------------------------------

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{11 + self.hosts.index(host)}"

    @property
    def gateway(self) -> str:
        """The bridge's address: where the building process is seen from the hosts."""
        return f"{self.subnet}.1"

    @property
    def cidr(self) -> str:
        return f"{self.subnet}.0/24"

    def command(self, host: str, args: Sequence[str]) -> list[str]:
        """`args` run inside `host` (ip netns exec replaces itself with the command: same pid)."""
        return ["ip", "netns", "exec", self.namespace(host), *args]

    # ---- life cycle ------------------------------------------------------------------------------

    def up(self) -> "Network":
        self._install_handlers()
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._made_bridge = True
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for index, host in enumerate(self.hosts):
                ns = self.namespace(host)
                outside, inside = f"{self.prefix}o{index}", f"{self.prefix}i{index}"
                _ip("netns", "add", ns)
                self._made.append(ns)
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                _ip("link", "set", inside, "netns", ns)
                _ip("link", "set", outside, "master", self.bridge)
                _ip("link", "set", outside, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "link", "set", inside, "name", "eth0")
                _ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "route", "add", "default", "via", self.gateway)
                self._name_files(host)
        except BaseException:
            self.close()
            raise
        return self

    def _name_files(self, host: str) -> None:
        """/etc/netns/<ns>/hosts and resolv.conf, which `ip netns exec` shows the host as
        /etc/hosts and /etc/resolv.conf: every host knows the others by name, and a name
        lookup fails at once instead of waiting on a resolver the namespace cannot reach."""
        folder = os.path.join(NETNS_ETC, self.namespace(host))
        os.makedirs(folder, exist_ok=True)
        names = ["127.0.0.1 localhost", f"{self.gateway} {self.prefix}-gateway"]
        names += [f"{self.address(h)} {h} {self.namespace(h)}" for h in self.hosts]
        with open(os.path.join(folder, "hosts"), "w") as handle:
            handle.write("\n".join(names) + "\n")
        with open(os.path.join(folder, "resolv.conf"), "w") as handle:
            handle.write("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")

    def pids(self, host: str) -> list[int]:
        """Every process living in the host's namespace."""
        result = _ip("netns", "pids", self.namespace(host), check_rc=False)
        return [int(p) for p in result.stdout.split() if p.isdigit()]

    def cut(self, host: str) -> None:
        """Take the host off the network (its link goes down, as a dead machine's would)."""
        index = self.hosts.index(host)
        _ip("link", "set", f"{self.prefix}o{index}", "down", check_rc=False)

    def kill_host(self, host: str) -> list[int]:
        """The host dies: off the network first, then SIGKILL to every process in it, until
        none is left. Returns the pids killed."""
        self.cut(host)
        killed: list[int] = []
        deadline = time.time() + 10
        while time.time() < deadline:
            pids = self.pids(host)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    if pid not in killed:
                        killed.append(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        return killed

    def close(self) -> None:
        """Kill whatever still runs in the hosts, delete the namespaces (their veths go with
        them) and the bridge. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for ns in reversed(self._made):
            host = ns[len(self.prefix) + 1:]
            for pid in self.pids(host):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for ns in reversed(self._made):
            for _ in range(20):
                if _ip("netns", "del", ns, check_rc=False).returncode == 0:
                    break
                time.sleep(0.2)
            shutil.rmtree(os.path.join(NETNS_ETC, ns), ignore_errors=True)
        for index in range(len(self.hosts)):
            _ip("link", "del", f"{self.prefix}o{index}", check_rc=False)
        if self._made_bridge:
            _ip("link", "del", self.bridge, check_rc=False)
        if self._made_etc:
            try:
                os.rmdir(NETNS_ETC)
            except OSError:  # absent, or another run's files are in it
                pass
        self._restore_handlers()

    def __enter__(self) -> "Network":
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- signals ----------------------------------------------------------------------------------

    def _install_handlers(self) -> None:
        atexit.register(self.close)

        def on_signal(signum: int, frame: Any) -> None:
            self.close()
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)
            raise SystemExit(128 + signum)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                self._previous[signum] = signal.signal(signum, on_signal)
            except ValueError:  # not the main thread: atexit and `close()` remain
                pass

    def _restore_handlers(self) -> None:
        for signum, previous in self._previous.items():
            try:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            except (ValueError, TypeError):
                pass
        self._previous.clear()

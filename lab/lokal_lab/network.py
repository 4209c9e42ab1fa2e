"""The lab network, built for real: namespaces, veths, bridges, routes, tbf shaping, the upstream delay proxy.

    with Lab(example_topology()) as lab:
        lab.start("node-1", "containerd", ["containerd", "--config", cfg])      # runs inside node-1's netns
        lab.start("upstream", "registry", ["docker-registry", "serve", yml])    # on lab.registry_listen
        lab.run("node-2", ["curl", f"http://{lab.upstream_endpoint}/v2/"])
        lab.link_bytes()["region-a~region-b"].total

Rules (the lab's network safety rules: traffic only to loopback and the lab's own namespaces):
- The root namespace's blackhole route for 198.18.0.0/15 is in place before anything else is created, and is
  released (refcounted across labs, see blackhole.py) after everything is gone, on failure too.
- This module never sends a packet: it only runs `ip`/`tc` and starts processes *inside* lab namespaces.
  Readiness of the processes it starts is a file, not a probe from the root namespace.
- Teardown (also on failure, also when called twice): stop the lab's processes by PID in reverse order, then
  any process still inside a lab namespace (children such as containerd shims), by PID, then delete the
  namespaces (which deletes the veths), then release the blackhole route.
- Namespace names start with a per-lab prefix (`lk<pid><n>-`), so labs in parallel never collide.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from lokal_lab import blackhole
from lokal_lab.netplan import (
    TBF_LATENCY,
    Link,
    LinkKind,
    NetworkPlan,
    StartDelayLink,
    plan_network,
    setup_commands,
    tbf_burst,
)
from lokal_lab.processes import ProcessGroup, wait_for
from lokal_lab.topology import APISERVER, UPSTREAM, LabTopology
from sidecar.logs import get_logger, log_event

_log = get_logger("lab")
_sequence = itertools.count()
_REPO_ROOT = Path(__file__).resolve().parents[2]


class LabError(RuntimeError):
    """The lab could not be built or used; the message names the command or the host."""


@dataclass(frozen=True)
class LinkBytes:
    """Bytes that crossed one link, per direction, since the lab was built (interface tx counters)."""

    link: str
    a: str  # logical host at end a ("router:region-a", "core", ...)
    b: str
    a_to_b: int
    b_to_a: int

    @property
    def total(self) -> int:
        return self.a_to_b + self.b_to_a


def lab_unavailable_reason() -> str | None:
    """Why a lab cannot be built on this machine, or None if it can."""
    if not sys.platform.startswith("linux"):
        return f"the lab needs Linux network namespaces; this is {sys.platform}"
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, veths, routes)"
    for tool in ("ip", "tc", "sysctl"):
        if shutil.which(tool) is None:
            return f"the lab needs the `{tool}` command (apt-get install iproute2 procps)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False)
    if probe.returncode != 0:
        return f"`ip netns list` failed: {probe.stderr.strip()}"
    return None


class Lab:
    """One lab network. Use as a context manager; `close()` is safe to call twice."""

    def __init__(
        self,
        topology: LabTopology,
        *,
        work_dir: Path | None = None,
        processes: ProcessGroup | None = None,
        state_dir: Path = blackhole.STATE_DIR,
    ) -> None:
        self.topology = topology
        self.lab_id = f"lk{os.getpid()}{next(_sequence)}"
        self.plan: NetworkPlan = plan_network(topology, self.lab_id + "-")
        self.processes = processes or ProcessGroup()
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix=f"{self.lab_id}-"))
        self._state_dir = state_dir
        self._created: list[str] = []
        self._acquired = False
        self._closed = False

    # ---- addresses and names ----

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.topology.nodes)

    def netns(self, host: str) -> str:
        """The namespace of a node name, "upstream" or "apiserver"."""
        return self.plan.netns(host)

    def address(self, host: str) -> str:
        """The lab IP of a node name, "upstream" or "apiserver"."""
        try:
            return self.plan.addresses[host]
        except KeyError:
            raise KeyError(f"no lab host {host!r}; known: {', '.join(self.plan.addresses)}") from None

    @property
    def upstream_address(self) -> str:
        return self.address(UPSTREAM)

    @property
    def upstream_endpoint(self) -> str:
        """Where nodes reach the registry: the delay proxy, `ip:port`."""
        return f"{self.upstream_address}:{self.topology.upstream_port}"

    @property
    def registry_listen(self) -> str:
        """Where the registry must listen inside the upstream namespace (behind the delay proxy)."""
        return f"127.0.0.1:{self.topology.registry_port}"

    @property
    def apiserver_address(self) -> str:
        return self.address(APISERVER)

    @property
    def apiserver_endpoint(self) -> str:
        return f"{self.apiserver_address}:{self.topology.apiserver_port}"

    # ---- running things inside namespaces ----

    def exec_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped to run inside `host`'s namespace."""
        return ["ip", "netns", "exec", self.netns(host), *argv]

    def run(
        self,
        host: str,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        check: bool = True,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a short command inside `host`'s namespace and wait for it (bounded by `timeout`)."""
        proc = subprocess.run(
            self.exec_argv(host, argv), capture_output=True, timeout=timeout, input=input, check=False
        )
        if check and proc.returncode != 0:
            stderr = proc.stderr.decode(errors="replace")[-500:]
            raise LabError(f"{' '.join(argv)} in {host} exited {proc.returncode}: {stderr}")
        return proc

    def start(
        self,
        host: str,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process inside `host`'s namespace; the lab stops it at teardown, by PID."""
        log_path = log_path or self.work_dir / f"{host}-{name}.log"
        return self.processes.start(name, argv, log_path=log_path, netns=self.netns(host), env=env, cwd=cwd)

    def start_delay_proxy(
        self, host: str, name: str, listen: str, target: str, delay_ms: float, timeout: float = 10.0
    ) -> subprocess.Popen[bytes]:
        """A delay proxy inside `host`'s namespace; returns once it listens."""
        ready = self.work_dir / f"{host}-{name}.ready"
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "lokal_lab.delay_proxy", "--listen", listen, "--target", target]
        argv += ["--delay-ms", str(delay_ms), "--ready-file", str(ready)]
        proc = self.start(host, name, argv, env=self._python_env())
        self._wait_ready(proc, ready, name, host, timeout)
        return proc

    def _start_delay_link(self, link: Link, timeout: float = 10.0) -> None:
        """The delay_link process for `link`: it lives in end a's namespace and creates both TUN devices."""
        host_a = next(ns.host for ns in self.plan.namespaces if ns.name == link.a.netns)
        name = f"delay-link-{link.name}"
        ready = self.work_dir / f"{name}.ready"
        argv = [sys.executable, "-m", "lokal_lab.delay_link", "--dev-a", link.a.ifname]
        argv += ["--netns-b", link.b.netns, "--dev-b", link.b.ifname, "--delay-ms", str(link.delay_ms)]
        argv += ["--ready-file", str(ready)]
        proc = self.start(host_a, name, argv, env=self._python_env())
        self._wait_ready(proc, ready, name, host_a, timeout)

    def _python_env(self) -> dict[str, str]:
        return {
            "PYTHONPATH": os.pathsep.join(p for p in (str(_REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        }

    def _wait_ready(
        self, proc: subprocess.Popen[bytes], ready: Path, name: str, host: str, timeout: float
    ) -> None:
        def ready_or_dead() -> bool:
            if proc.poll() is not None:
                raise LabError(f"{name} in {host} exited {proc.returncode}; see its log in {self.work_dir}")
            return ready.exists()

        wait_for(ready_or_dead, timeout, what=f"{name} in {host} to be ready")

    # ---- shaping at run time ----

    def set_rate(self, link_name: str, rate: str) -> None:
        """Change a shaped link's tbf rate, both directions, while the lab runs (tests of links that
        change speed mid-run). The link must have been built shaped; a delay link is not changed here."""
        link = self.plan.link(link_name)
        if not link.rate or link.delay_ms > 0:
            raise LabError(f"link {link_name!r} is not a tbf-shaped veth; its rate cannot be changed")
        burst = tbf_burst(rate, self.plan.mtu)
        for end in (link.a, link.b):
            _run_ip(["tc", "-n", end.netns, "qdisc", "change", "dev", end.ifname, "root", "tbf",
                     "rate", rate, "burst", burst, "latency", TBF_LATENCY])

    # ---- byte counters ----

    def link_bytes(self) -> dict[str, LinkBytes]:
        """Per link name ("region-a~region-b", "upstream", "apiserver", "uplink:<region>", "access:<node>"):
        bytes each way, from the tx counters of both veth ends."""
        hosts = {ns.name: ns.host for ns in self.plan.namespaces}
        tx: dict[tuple[str, str], int] = {}
        for netns in {end.netns for link in self.plan.links for end in (link.a, link.b)}:
            tx.update({(netns, ifname): count for ifname, count in _tx_bytes(netns).items()})
        return {
            link.name: LinkBytes(
                link=link.name,
                a=hosts[link.a.netns],
                b=hosts[link.b.netns],
                a_to_b=tx.get((link.a.netns, link.a.ifname), 0),
                b_to_a=tx.get((link.b.netns, link.b.ifname), 0),
            )
            for link in self.plan.links
        }

    def cross_region_bytes(self) -> int:
        """Bytes that crossed any inter-region link, both directions."""
        names = {link.name for link in self.plan.links_of(LinkKind.INTERREGION)}
        return sum(lb.total for name, lb in self.link_bytes().items() if name in names)

    def upstream_bytes(self) -> LinkBytes:
        """Bytes on the upstream host's link; `b_to_a` is what the upstream sent (downloads)."""
        return self.link_bytes()[UPSTREAM]

    # ---- lifecycle ----

    def __enter__(self) -> Lab:
        reason = lab_unavailable_reason()
        if reason:
            raise LabError(reason)
        started = time.monotonic()
        blackhole.acquire(self.lab_id, self._state_dir)  # before anything lab-addressed exists
        self._acquired = True
        try:
            for step in setup_commands(self.plan):
                if isinstance(step, StartDelayLink):
                    self._start_delay_link(step.link)
                    continue
                _run_ip(step)
                if step[:3] == ["ip", "netns", "add"]:
                    self._created.append(step[3])
            self.start_delay_proxy(
                UPSTREAM,
                "upstream-delay-proxy",
                listen=self.upstream_endpoint,
                target=self.registry_listen,
                delay_ms=self.topology.upstream_delay_ms,
            )
        except BaseException:
            self.close()
            raise
        log_event(
            _log,
            "lab_network_up",
            lab=self.lab_id,
            namespaces=len(self._created),
            seconds=round(time.monotonic() - started, 3),
        )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process, delete every namespace, release the blackhole route. Errors are logged and
        the remaining steps still run; the first error is raised at the end."""
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        try:
            self.processes.stop_all()
        except Exception as exc:  # still delete the namespaces
            errors.append(exc)
        for netns in reversed(self._created):
            try:
                _stop_stray_processes(netns)
                _run_ip(["ip", "netns", "del", netns])
            except Exception as exc:
                errors.append(exc)
        self._created.clear()
        if self._acquired:
            try:
                blackhole.release(self.lab_id, self._state_dir)
            except Exception as exc:
                errors.append(exc)
            self._acquired = False
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        log_event(_log, "lab_network_down", lab=self.lab_id, errors=len(errors))
        if errors:
            raise errors[0]


def _run_ip(argv: Sequence[str]) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")


def _tx_bytes(netns: str) -> dict[str, int]:
    out = subprocess.run(
        ["ip", "-n", netns, "-s", "-j", "link", "show"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return {
        dev["ifname"]: int(dev.get("stats64", {}).get("tx", {}).get("bytes", 0)) for dev in json.loads(out)
    }


def _stop_stray_processes(netns: str, grace: float = 3.0) -> None:
    """Processes still inside a lab namespace after the group stopped (e.g. daemonized children of what
    the lab started): SIGTERM, then SIGKILL, each by PID. Only PIDs inside this lab's own namespace are
    touched."""
    pids = _netns_pids(netns)
    if not pids:
        return
    log_event(_log, "lab_stray_processes", netns=netns, pids=pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (pids := _netns_pids(netns)):
            time.sleep(0.05)
        if not pids:
            return


def _netns_pids(netns: str) -> list[int]:
    proc = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10, check=False
    )
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []

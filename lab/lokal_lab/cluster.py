"""A whole simulated cluster on one machine: the lab network plus every real part a node runs.

    with LabCluster(example_topology(5), topology_mode="prefer", cross_region="always") as cluster:
        ref = cluster.push(build_image(...), "demo/app")     # skopeo inside the upstream namespace
        result = cluster.pull("node-1", ref)                # CRI PullImage on node-1's containerd
        cluster.pull_events("node-1")                       # that node's lokal `pull` log lines
        cluster.upstream_gets(since=mark)                   # blob/manifest GETs the registry answered

What runs where:
- upstream ns: docker-registry on `lab.registry_listen` (127.0.0.1:5001), behind the lab's delay proxy and
  shaped link; nodes reach it as `lab.upstream_endpoint`, which is also the registry name images carry.
- apiserver ns: the fake Kubernetes API server as a process, holding one Node object per lab node
  (region/zone labels, InternalIP = the node's lab address, Ready). Every lokal reads it via a kubeconfig.
- each node ns: a private containerd whose hosts.toml for the registry name lists the node's own lokal
  (http://127.0.0.1:5050) as mirror and the upstream as server, and `lokal serve` on 0.0.0.0:5050 with
  discovery kubernetes (containerd reaches it on loopback, peers on the node's lab address).
- no-mirror mode (`mirror=False`, or `use_mirror(False)` at any time): hosts.toml names only the upstream
  and no lokal runs, so containerd goes straight to the registry through the same shaped link (the
  benchmarks' baseline). `reset_node` gives a node an empty content store again between runs.

Rules (the lab's network safety rules: traffic only to loopback and the lab's own namespaces):
- Nothing here sends a packet from the root namespace to a lab address. Pushes run skopeo inside the
  upstream namespace against the registry's loopback address; HTTP probes run inside a lab namespace;
  CRI and containerd readiness use unix sockets, which cross namespaces without touching the network.
- Readiness is a log line or a socket file, never a probe from the root namespace.
- Every process is started through the lab's ProcessGroup, so `Lab.close` stops it by PID (and any child
  left inside a lab namespace), on failure too; `close()` is safe to call twice.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from types import TracebackType
from typing import Any

from lokal_lab.containerd import ContainerdInstance
from lokal_lab.cri import CriClient
from lokal_lab.fake_apiserver import make_node, write_kubeconfig
from lokal_lab.images import BuiltImage, push_image
from lokal_lab.network import Lab, LabError
from lokal_lab.processes import wait_for
from lokal_lab.registry import RegistryInstance
from lokal_lab.topology import APISERVER, UPSTREAM, LabTopology
from sidecar.logs import get_logger, log_event

_log = get_logger("lab")
_REPO_ROOT = Path(__file__).resolve().parents[2]
LOKAL_PORT = 5050
LOOPBACK_MIRROR = f"http://127.0.0.1:{LOKAL_PORT}"

# docker-registry (distribution 2.8) logs one logfmt "response completed" line per request.
_RESPONSE_LINE = re.compile(r'msg="response completed"')
_FIELD = re.compile(r'([a-z][a-z0-9_.]*)=("(?:[^"\\]|\\.)*"|\S+)')
_URI = re.compile(r"^/v2/(?P<repo>.+)/(?P<kind>blobs|manifests)/(?P<reference>[^/?]+)")
_DURATION = re.compile(r"^([0-9.]+)(ns|µs|us|ms|s|m)$")
_DURATION_UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


class ClusterError(LabError):
    """A part of the lab cluster did not come up or did not answer; the message names the part."""


@dataclass(frozen=True)
class UpstreamGet:
    """One request the upstream registry answered (from its log)."""

    method: str
    kind: str  # "blob" | "manifest"
    repo: str
    reference: str  # a full digest or a tag
    status: int
    bytes: int
    seconds: float | None


@dataclass(frozen=True)
class PullResult:
    node: str
    reference: str
    image_ref: str  # the config digest CRI returns
    seconds: float


@dataclass
class _NodeParts:
    name: str
    containerd: ContainerdInstance
    lokal_log: Path
    lokal_args: tuple[str, ...]
    lokal: Popen[bytes] | None = None


@dataclass
class LabCluster:
    """Lab network + upstream registry + fake API server + containerd and lokal on every node.

    `topology_mode` / `cross_region` / `lokal_args` apply to every node's `lokal serve`;
    `start_lokal(node, extra_args=...)` can change one node's later. `lokal_python` is the interpreter
    that runs `-m sidecar serve` (the venv's, by default the one running this code). `mirror=False`
    builds the no-mirror baseline: hosts.toml without lokal, and no lokal is started.
    """

    topology: LabTopology
    topology_mode: str = "prefer"
    cross_region: str = "never"
    lokal_args: tuple[str, ...] = ()
    discovery: str = "kubernetes"
    start_lokals: bool = True
    mirror: bool = True
    lokal_python: str = sys.executable
    lokal_source: Path = _REPO_ROOT  # the directory whose `sidecar` package the lokal processes run
    work_dir: Path | None = None
    lab: Lab = field(init=False)
    registry: RegistryInstance = field(init=False)
    kubeconfig: Path = field(init=False)
    _nodes: dict[str, _NodeParts] = field(init=False, default_factory=dict)
    _apiserver: Popen[bytes] | None = field(init=False, default=None)
    _closed: bool = field(init=False, default=False)

    # ---- lifecycle ----

    def __enter__(self) -> LabCluster:
        started = time.monotonic()
        self.lab = Lab(self.topology, work_dir=self.work_dir)
        self.lab.__enter__()
        try:
            self._start_registry()
            self._start_apiserver()
            self._start_containerds()
            if self.start_lokals and self.mirror:
                self.start_lokal(*self.nodes)
        except BaseException:
            self.close()
            raise
        log_event(
            _log,
            "lab_cluster_up",
            lab=self.lab.lab_id,
            nodes=len(self.nodes),
            seconds=round(time.monotonic() - started, 3),
        )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process by PID and delete the lab network (Lab.close does both), once."""
        if self._closed or not hasattr(self, "lab"):
            return
        self._closed = True
        self.lab.close()

    # ---- names ----

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.lab.nodes

    @property
    def registry_name(self) -> str:
        """The registry host:port that image references carry and containerd's hosts.toml is keyed by."""
        return self.lab.upstream_endpoint

    def containerd(self, node: str) -> ContainerdInstance:
        return self._node(node).containerd

    def lokal_log(self, node: str) -> Path:
        return self._node(node).lokal_log

    def lokal_url(self, node: str) -> str:
        """Where peers reach `node`'s lokal (only from inside a lab namespace)."""
        return f"http://{self.lab.address(node)}:{LOKAL_PORT}"

    # ---- images ----

    def push(self, image: BuiltImage, repository: str) -> str:
        """Push `image` to the upstream registry with skopeo run inside the upstream namespace (straight to
        the registry on its loopback, not through the shaped link); returns the reference nodes pull."""
        push_image(image, self.lab.registry_listen, repository, netns=self.lab.netns(UPSTREAM))
        return f"{self.registry_name}/{repository}:{image.tag}"

    def pull(self, node: str, reference: str, timeout: float = 120.0) -> PullResult:
        """CRI PullImage on `node`'s containerd (over its unix socket), as a kubelet would."""
        started = time.monotonic()
        with CriClient(self.containerd(node).socket) as cri:
            image_ref = cri.pull(reference, timeout=timeout)
        return PullResult(node, reference, image_ref, time.monotonic() - started)

    # ---- logs ----

    def pull_events(self, node: str) -> list[dict[str, Any]]:
        """Every `pull` line `node`'s lokal has logged so far (all of its runs)."""
        return parse_pull_lines(_read(self.lokal_log(node)))

    def wait_for_pull_events(
        self, node: str, digests: Iterable[str], timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """`pull_events(node)` once every digest in `digests` has a GET line from containerd (lokal logs
        a line when the body is done, which can trail the CRI answer by a moment). Bounded by `timeout`;
        then it returns what there is."""
        wanted = {short_digest(d) for d in digests}
        deadline = time.monotonic() + timeout
        while True:
            events = self.pull_events(node)
            seen = {e.get("digest") for e in events if e.get("method") == "GET" and is_local_client(e)}
            if wanted <= seen or time.monotonic() >= deadline:
                return events
            time.sleep(0.05)

    def upstream_mark(self) -> int:
        """A position in the registry's log; pass it to `upstream_gets(since=)`."""
        return self.registry.log_path.stat().st_size if self.registry.log_path.exists() else 0

    def upstream_gets(self, since: int = 0) -> list[UpstreamGet]:
        """GET requests of blobs and manifests the registry answered after the mark `since`."""
        with open(self.registry.log_path, "rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        return [g for g in parse_registry_log(text) if g.method == "GET"]

    # ---- lokal processes ----

    def start_lokal(self, *nodes: str, extra_args: Sequence[str] = (), timeout: float = 30.0) -> None:
        """Start `lokal serve` on each node (all at once, then wait for each to listen)."""
        procs = []
        for node in nodes:
            parts = self._node(node)
            if parts.lokal is not None and parts.lokal.poll() is None:
                raise ClusterError(f"lokal on {node} is already running (pid {parts.lokal.pid})")
            offset = parts.lokal_log.stat().st_size if parts.lokal_log.exists() else 0
            argv = self._lokal_argv(node, (*parts.lokal_args, *extra_args))
            # cwd: `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH, so
            # only this makes `lokal_source`'s package the one that runs.
            parts.lokal = self.lab.start(
                node, "lokal", argv, log_path=parts.lokal_log, env=self._env(), cwd=self.lokal_source
            )
            procs.append((parts, offset))
        for parts, offset in procs:
            self._wait_listening(parts, offset, timeout)

    def stop_lokal(self, node: str, *, kill: bool = False) -> int | None:
        """Stop `node`'s lokal by PID and wait for it; returns its exit code. SIGTERM lets it drain;
        `kill=True` sends SIGKILL at once, as a crashed node would stop."""
        parts = self._node(node)
        if parts.lokal is None:
            return None
        if kill and parts.lokal.poll() is None:
            parts.lokal.kill()
            parts.lokal.wait(timeout=10)
        self.lab.processes.stop(parts.lokal)  # also forgets it
        code = parts.lokal.returncode
        parts.lokal = None
        return code

    def processes(self) -> list[Popen[bytes]]:
        """Every long-running process this cluster started itself (not the lab network's helpers)."""
        procs: list[object] = [self._apiserver, self.registry._proc]
        for parts in self._nodes.values():
            procs += [parts.lokal, parts.containerd._proc]
        return [p for p in procs if isinstance(p, Popen)]

    def lokal_running(self, node: str) -> bool:
        proc = self._node(node).lokal
        return proc is not None and proc.poll() is None

    # ---- baseline and fresh state (benchmarks) ----

    def use_mirror(self, enabled: bool, *nodes: str) -> None:
        """Rewrite hosts.toml on `nodes` (default: all) with or without lokal as the mirror. containerd
        reads hosts.toml on every pull, so the next pull follows it; lokal processes are left as they are."""
        for node in nodes or self.nodes:
            self._write_hosts(self.containerd(node), enabled)

    @contextmanager
    def upstream_down(self) -> Iterator[None]:
        """The upstream registry is stopped (by PID) inside the block, so nothing can come from it, and
        started again on the same storage afterwards, even when the block fails."""
        self.registry.stop()
        try:
            yield
        finally:
            self._start_registry()

    def stop_all_lokals(self) -> None:
        """Stop every running lokal by PID (they drain on SIGTERM)."""
        for node in self.nodes:
            self.stop_lokal(node)

    def reset_node(self, node: str) -> int:
        """An empty content store on `node` again: remove every image of CRI's namespace (k8s.io), then
        run containerd's GC now. Returns how many blobs are still in the store afterwards (0 is the fresh
        state; content held by a lease or an unfinished ingest can remain: the caller decides)."""
        instance = self.containerd(node)
        ctr = [instance.version.ctr, "--address", str(instance.socket), "--namespace", "k8s.io", "images"]
        names = self.lab.run(node, [*ctr, "ls", "-q"]).stdout.decode().split()
        if names:
            self.lab.run(node, [*ctr, "rm", *names], timeout=60)
        instance.collect_garbage()
        return content_blob_count(instance.content_root)

    # ---- probes from inside the lab ----

    def http_get(
        self, from_host: str, url: str, headers: dict[str, str] | None = None, timeout: float = 10.0
    ) -> tuple[int, bytes]:
        """GET `url` from inside `from_host`'s namespace; (status, body). Status 0: no connection."""
        script = (
            "import json,sys,urllib.request,urllib.error\n"
            "a=json.loads(sys.argv[1])\n"
            "r=urllib.request.Request(a['url'],headers=a['headers'])\n"
            "try:\n"
            " with urllib.request.urlopen(r,timeout=a['timeout']) as f: s,b=f.status,f.read()\n"
            "except urllib.error.HTTPError as e: s,b=e.code,e.read()\n"
            "except OSError as e: s,b=0,str(e).encode()\n"
            "sys.stdout.buffer.write(b'%d\\n'%s+b)\n"
        )
        spec = json.dumps({"url": url, "headers": headers or {}, "timeout": timeout})
        proc = self.lab.run(from_host, [sys.executable, "-c", script, spec], timeout=timeout + 10)
        status, _, body = proc.stdout.partition(b"\n")
        return int(status), body

    # ---- building ----

    def _node(self, node: str) -> _NodeParts:
        try:
            return self._nodes[node]
        except KeyError:
            raise KeyError(f"no lab node {node!r}; known: {', '.join(self._nodes)}") from None

    def _env(self) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(self.lokal_source), os.environ.get("PYTHONPATH")) if p)
        return {"PYTHONPATH": path}

    def _start_registry(self) -> None:
        host, _, port = self.lab.registry_listen.rpartition(":")
        self.registry = RegistryInstance(
            self.lab.work_dir / "registry", host=host, port=int(port), netns=self.lab.netns(UPSTREAM)
        )
        before = _read(self.registry.log_path).count("listening on")  # a restart appends to the log
        self.registry.start(self.lab.processes)
        wait_for(
            lambda: _read(self.registry.log_path).count("listening on") > before
            or _exited(self.registry, "registry"),
            15,
            what="docker-registry in the upstream namespace to listen",
        )

    def _start_apiserver(self) -> None:
        directory = self.lab.work_dir / "apiserver"
        directory.mkdir(parents=True, exist_ok=True)
        nodes_file = directory / "nodes.json"
        nodes_file.write_text(json.dumps(node_objects(self.topology, self.lab.address)))
        self.kubeconfig = write_kubeconfig(
            directory / "kubeconfig", f"http://{self.lab.apiserver_endpoint}", name="lokal-lab"
        )
        log_path = directory / "apiserver.log"
        argv = [self.lokal_python, "-m", "lokal_lab.fake_apiserver"]
        argv += ["--listen", self.lab.apiserver_endpoint, "--nodes", str(nodes_file)]
        argv += ["--bookmark-interval", "5"]
        proc = self.lab.start(APISERVER, "fake-apiserver", argv, log_path=log_path, env=self._env())
        self._apiserver = proc

        def listening() -> bool:
            if proc.poll() is not None:
                raise ClusterError(f"fake apiserver exited {proc.returncode}: {_read(log_path)[-1500:]}")
            return "fake_apiserver_listening" in _read(log_path)

        wait_for(listening, 20, what="the fake apiserver to listen")

    def _start_containerds(self) -> None:
        for spec in self.topology.nodes:
            instance = ContainerdInstance(self.lab.work_dir / spec.name, netns=self.lab.netns(spec.name))
            instance.write_config()
            self._write_hosts(instance, self.mirror)
            self._nodes[spec.name] = _NodeParts(
                spec.name, instance, self.lab.work_dir / spec.name / "lokal.log", self.lokal_args
            )
        for parts in self._nodes.values():
            parts.containerd.start(self.lab.processes)

    def _write_hosts(self, instance: ContainerdInstance, mirror: bool) -> None:
        upstream = f"http://{self.registry_name}"
        instance.write_hosts(self.registry_name, upstream, mirrors=[LOOPBACK_MIRROR] if mirror else [])

    def _lokal_argv(self, node: str, extra: Sequence[str]) -> list[str]:
        flags = {
            "--listen": f"0.0.0.0:{LOKAL_PORT}",
            "--containerd-socket": str(self.containerd(node).socket),
            "--config-path": str(self.containerd(node).certs_d),  # where this node's hosts.toml live
            "--mirrored-registries": self.registry_name,
            "--discovery": self.discovery,
            "--node-name": node,
            "--kubeconfig": str(self.kubeconfig),
            "--topology-mode": self.topology_mode,
            "--cross-region": self.cross_region,
            "--log-format": "json",
        }
        # `extra` comes last: a flag given again there wins (argparse keeps the last value).
        return [self.lokal_python, "-m", "sidecar", "serve", *(x for kv in flags.items() for x in kv), *extra]

    def _wait_listening(self, parts: _NodeParts, offset: int, timeout: float) -> None:
        proc = parts.lokal
        assert proc is not None

        def listening() -> bool:
            with open(parts.lokal_log, "rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
            if proc.poll() is not None:
                raise ClusterError(f"lokal on {parts.name} exited {proc.returncode}:\n{text[-2000:]}")
            # With discovery, ready means it also knows its peers (the first Node list went through).
            synced = self.discovery == "none" or '"event":"membership_synced"' in text
            return '"event":"http_listening"' in text and synced

        wait_for(listening, timeout, what=f"lokal on {parts.name} to listen and know its peers")


# ---- pure helpers ----


def node_objects(topology: LabTopology, address_of: Any) -> list[dict[str, Any]]:
    """The Node objects of the lab's nodes: region/zone labels, InternalIP, Ready."""
    return [
        make_node(n.name, region=n.region, zone=n.zone, address=address_of(n.name)) for n in topology.nodes
    ]


def content_blob_count(content_root: Path) -> int:
    """How many blobs a containerd content store holds (files under blobs/<algorithm>/)."""
    blobs = content_root / "blobs"
    if not blobs.is_dir():
        return 0
    return sum(1 for algorithm in blobs.iterdir() if algorithm.is_dir() for _ in algorithm.iterdir())


def short_digest(digest: str) -> str:
    """The form lokal logs digests in: `sha256:` and 12 hex characters."""
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part[:12]}"


def is_local_client(event: dict[str, Any]) -> bool:
    """Whether a pull line is this node's containerd asking (loopback), not a peer being served."""
    client = str(event.get("client", ""))
    return client.startswith("127.") or client == "::1"


def parse_pull_lines(text: str) -> list[dict[str, Any]]:
    """The `pull` events among lokal's JSON log lines; other lines and torn lines are skipped."""
    events = []
    for line in text.splitlines():
        if '"pull"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "pull":
            events.append(event)
    return events


def parse_registry_log(text: str) -> list[UpstreamGet]:
    """Blob and manifest requests from docker-registry's "response completed" logfmt lines."""
    found = []
    for line in text.splitlines():
        if not _RESPONSE_LINE.search(line):
            continue
        fields = {k: v.strip('"') for k, v in _FIELD.findall(line)}
        uri = _URI.match(fields.get("http.request.uri", ""))
        if uri is None:
            continue
        found.append(
            UpstreamGet(
                method=fields.get("http.request.method", ""),
                kind="blob" if uri["kind"] == "blobs" else "manifest",
                repo=uri["repo"],
                reference=uri["reference"],
                status=_int(fields.get("http.response.status")),
                bytes=_int(fields.get("http.response.written")),
                seconds=_duration(fields.get("http.response.duration", "")),
            )
        )
    return found


def _int(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


def _duration(text: str) -> float | None:
    """A Go duration as the registry logs it ("12.3ms", "1.2s", "1m2.5s" is rare and ignored)."""
    match = _DURATION.match(text)
    return float(match[1]) * _DURATION_UNITS[match[2]] if match else None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _exited(registry: RegistryInstance, name: str) -> bool:
    proc = registry._proc
    if isinstance(proc, Popen) and proc.poll() is not None:
        raise ClusterError(f"{name} exited {proc.returncode}: {_read(registry.log_path)[-1500:]}")
    return False

"""What the reliability tests and the soak do to a running LabCluster, from the outside: HTTP from inside a
lab namespace (an `Agent` process per namespace), the fake API server's admin endpoints (membership churn,
outages), the lokal processes' resources (/proc), and waiting for a node's view of the membership.

Rules (the lab's):
- Every request is sent from inside a lab namespace (the agent runs under `ip netns exec`); nothing here
  opens a socket in the root namespace.
- Every agent is a process this module started; `Agent.close` ends it by its PID (and the lab's teardown
  would too: it stops every process left inside its namespaces).
- Every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lokal_lab.cluster import LOKAL_PORT, LabCluster, is_local_client, short_digest
from lokal_lab.fake_apiserver import make_node
from lokal_lab.images import BuiltImage
from lokal_lab.topology import APISERVER

from sidecar.routing.placement import home_nodes
from sidecar.security import TOKEN_HEADER

AGENT = Path(__file__).with_name("agent.py")
TOKEN = "reliability-token-0123456789abcdef"
LOCAL_ONLY = {"x-lokal-local-only": "1"}


class AgentError(RuntimeError):
    """The agent process died or did not answer in time."""


class Agent:
    """One HTTP client process inside `host`'s namespace; orders are answered in order, one at a time."""

    def __init__(self, cluster: LabCluster, host: str) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            cluster.lab.exec_argv(host, [sys.executable, str(AGENT)]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def order(self, order: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            if self._proc.poll() is not None:
                raise AgentError(f"agent in {self.host} exited {self._proc.returncode}")
            self._proc.stdin.write(json.dumps(order).encode() + b"\n")
            self._proc.stdin.flush()
            line = _readline(self._proc, timeout)
        if not line:
            raise AgentError(f"agent in {self.host} gave no answer to {order.get('op')} {order.get('path')}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def request(
        self,
        host: str,
        path: str,
        *,
        method: str = "GET",
        port: int = LOKAL_PORT,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
        keep_body: bool = False,
        read_bps: int | None = None,
    ) -> dict[str, Any]:
        order: dict[str, Any] = {
            "op": "http",
            "host": host,
            "port": port,
            "method": method,
            "path": path,
            "headers": headers or {},
            "timeout": timeout,
            "keep_body": keep_body,
        }
        if body is not None:
            order["body_b64"] = base64.b64encode(body).decode()
        if read_bps:
            order["read_bps"] = read_bps
        return self.order(order, timeout=timeout * 4 + 600 * bool(read_bps) + 10)

    def raw(self, host: str, data: bytes, *, port: int = LOKAL_PORT, timeout: float = 5.0) -> dict[str, Any]:
        order = {
            "op": "raw",
            "host": host,
            "port": port,
            "data_b64": base64.b64encode(data).decode(),
            "timeout": timeout,
        }
        return self.order(order, timeout=timeout * 3 + 10)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()  # by PID: the Popen we started
            self._proc.wait(timeout=5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _readline(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """One line from the agent's stdout, or b"" after `timeout` (the agent is then killed by PID)."""
    assert proc.stdout is not None
    box: list[bytes] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        proc.kill()
        reader.join(5)
        return b""
    return box[0] if box else b""


@contextlib.contextmanager
def agents(cluster: LabCluster, *hosts: str) -> Iterator[dict[str, Agent]]:
    started: dict[str, Agent] = {}
    try:
        for host in hosts:
            started[host] = Agent(cluster, host)
        yield started
    finally:
        for agent in started.values():
            agent.close()


# ---- paths and headers ----


def blob_path(cluster: LabCluster, repository: str, digest: str) -> str:
    return f"/v2/{repository}/blobs/{digest}?ns={cluster.registry_name}"


def with_token(headers: dict[str, str] | None = None, token: str = TOKEN) -> dict[str, str]:
    return {**(headers or {}), TOKEN_HEADER: token}


def write_token_file(directory: Path, *tokens: str) -> Path:
    path = directory / "peer-tokens"
    path.write_text("# lokal peer tokens\n" + "\n".join(tokens or (TOKEN,)) + "\n")
    path.chmod(0o600)
    return path


# ---- the fake API server's admin endpoints (from inside its own namespace) ----


@dataclass
class FakeApi:
    """`/_fake/` admin calls on the lab's fake API server, sent by an agent in the apiserver namespace."""

    cluster: LabCluster
    agent: Agent

    @property
    def _host_port(self) -> tuple[str, int]:
        host, _, port = self.cluster.lab.apiserver_endpoint.rpartition(":")
        return host, int(port)

    def call(self, method: str, path: str, document: object | None = None) -> Any:
        host, port = self._host_port
        body = json.dumps(document).encode() if document is not None else None
        reply = self.agent.request(
            host,
            path,
            method=method,
            port=port,
            body=body,
            keep_body=True,
            headers={"Content-Type": "application/json"},
        )
        if reply["status"] != 200:
            raise AssertionError(f"fake apiserver {method} {path}: {reply['status']} {reply.get('error')}")
        return json.loads(base64.b64decode(reply["body_b64"]) or b"null")

    def nodes(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call("GET", "/_fake/nodes")["items"]
        return items

    def node(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(next(n for n in self.nodes() if n["metadata"]["name"] == name))

    def put(self, node: dict[str, Any]) -> None:
        self.call("POST", "/_fake/nodes", node)

    def delete(self, name: str) -> None:
        self.call("DELETE", f"/_fake/nodes/{name}")

    def outage(self, mode: str = "reset", seconds: float | None = None) -> None:
        query = f"?mode={mode}" + (f"&seconds={seconds}" if seconds is not None else "")
        self.call("POST", "/_fake/outage" + query)

    def end_outage(self) -> None:
        self.call("DELETE", "/_fake/outage")

    def compact(self) -> None:
        self.call("POST", "/_fake/compact")

    def drop_watches(self) -> None:
        self.call("POST", "/_fake/drop-watches")

    def requests(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self.call("GET", "/_fake/requests")
        return records


@contextlib.contextmanager
def fake_api(cluster: LabCluster) -> Iterator[FakeApi]:
    with Agent(cluster, APISERVER) as agent:
        yield FakeApi(cluster, agent)


def extra_node(name: str, address: str, region: str = "region-a", zone: str = "zone-a1") -> dict[str, Any]:
    """A Node object for a node that has no namespace (churn: a member that never answers)."""
    return make_node(name, region=region, zone=zone, address=address)


# ---- a node's own view (debug status over its loopback) ----


def status(agent: Agent) -> dict[str, Any]:
    reply = agent.request("127.0.0.1", "/_lokal/debug/status", keep_body=True)
    if reply["status"] != 200:
        raise AssertionError(f"status from {agent.host}: {reply['status']} {reply.get('error')}")
    document: dict[str, Any] = json.loads(base64.b64decode(reply["body_b64"]))
    return document


def peer_names(agent: Agent) -> set[str]:
    return {p["name"] for p in status(agent)["peers"]}


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ---- lokal processes' resources ----


def lokal_pid(cluster: LabCluster, node: str) -> int:
    """The PID of `node`'s running `lokal serve` (`ip netns exec` execs it, so the Popen's PID)."""
    proc = cluster._node(node).lokal
    if proc is None or proc.poll() is not None:
        raise AssertionError(f"lokal on {node} is not running")
    return proc.pid


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")


# ---- pulls ----


@dataclass
class Pulled:
    """One CRI pull: its lokal's GET lines for its own containerd, and what the upstream served."""

    lines: list[dict[str, Any]]
    upstream_blobs: set[str]

    def line(self, digest: str) -> dict[str, Any]:
        short = short_digest(digest)
        return [e for e in self.lines if e.get("digest") == short][-1]


def pull_checked(
    cluster: LabCluster, node: str, reference: str, image: BuiltImage, timeout: float = 120.0
) -> Pulled:
    """CRI-pull `reference` on `node`, and check the content: the config digest CRI reports, and every
    layer file in the node's content store hashes to its digest."""
    mark, seen = cluster.upstream_mark(), len(cluster.pull_events(node))
    result = cluster.pull(node, reference, timeout=timeout)
    assert result.image_ref == image.configs["linux/amd64"].digest
    for blob in image.blobs_for("linux/amd64"):
        assert content_digest(cluster, node, blob.digest) == blob.digest, f"{blob.digest} on {node}"
    blobs = [b.digest for b in image.blobs_for("linux/amd64")]
    events = cluster.wait_for_pull_events(node, blobs)[seen:]
    lines = [e for e in events if is_local_client(e) and e.get("method") == "GET"]
    upstream = {
        g.reference for g in cluster.upstream_gets(mark) if g.kind == "blob" and g.status in (200, 206)
    }
    return Pulled(lines, upstream)


def content_file(cluster: LabCluster, node: str, digest: str) -> Path:
    algorithm, _, hex_part = digest.partition(":")
    return cluster.containerd(node).content_root / "blobs" / algorithm / hex_part


def content_digest(cluster: LabCluster, node: str, digest: str) -> str:
    data = content_file(cluster, node, digest).read_bytes()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fetched_blobs(image: BuiltImage) -> set[str]:
    """The blobs containerd fetches by digest (config and layers; the manifest comes by tag)."""
    return {b.digest for b in [image.configs["linux/amd64"], *image.layers["linux/amd64"]]}


# ---- the peer protocol ----


def wait_until_listed(
    cluster: LabCluster, agent: Agent, keys: set[str], holders: set[str], region: tuple[str, ...]
) -> None:
    """Advertising follows containerd's events: wait (bounded) until every home lists `holders`."""
    wait_until(
        lambda: all(
            lookup(agent, cluster, h, k) == (200, holders) for k in keys for h in home_nodes(k, region)
        ),
        30,
        f"the homes to list {sorted(holders)}",
    )


def lookup(
    agent: Agent, cluster: LabCluster, home: str, key: str, token: bool = True
) -> tuple[int, set[str]]:
    reply = agent.request(
        cluster.lab.address(home),
        "/_lokal/v1/lookup",
        method="POST",
        body=json.dumps({"keys": [key]}).encode(),
        headers=with_token({"Content-Type": "application/json"}) if token else {},
        keep_body=True,
    )
    if reply["status"] != 200:
        return reply["status"], set()
    providers = json.loads(base64.b64decode(reply["body_b64"]))["providers"]
    return 200, set(providers.get(key, []))


def advertise(
    agent: Agent, cluster: LabCluster, home: str, document: object, headers: dict[str, str] | None = None
) -> int:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    reply = agent.request(
        cluster.lab.address(home),
        "/_lokal/v1/advertise",
        method="POST",
        body=body,
        headers=with_token({"Content-Type": "application/json", **(headers or {})}),
    )
    status: int = reply["status"]
    return status

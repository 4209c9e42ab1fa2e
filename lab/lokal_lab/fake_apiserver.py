"""A small, faithful fake of the Kubernetes API server's Node endpoints, for tests and the lab.

Rules:
- Standard library only (http.server, threads, real sockets). It speaks what the official client sends:
  `GET /api/v1/nodes` (list or `watch=1`) and `GET /api/v1/nodes/<name>`, JSON bodies, Status errors.
- Behaviour copies the real apiserver (its watch cache), not what would be convenient for lokal:
  - one global resourceVersion, bumped by every change; lists carry it in `metadata.resourceVersion`;
  - label selectors, equality- and set-based (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`); `!=` and
    `notin` match nodes without the key; a bad selector is a 400;
  - a watch replays the changes after its resourceVersion, then streams new ones (chunked JSON lines);
    no resourceVersion or "0" starts with synthetic ADDED events for the current state;
  - with a selector, a node that starts to match arrives as ADDED, one that stops matching as DELETED
    (carrying its previous content with the new resourceVersion), like the cacher's convertToWatchEvent;
  - `allowWatchBookmarks` gives BOOKMARK events as the 1.20 cacher sends them: every
    `bookmark_interval_s` (the cacher: one minute), and once 2 s before the watch's deadline; none once
    that moment has passed (so a watch shorter than 2 s never gets one); `timeoutSeconds` ends the watch
    cleanly;
  - after `compact()`, a watch from a resourceVersion before the last change gets HTTP 200 with an ERROR
    event (code 410, reason Expired): etcd's rule, the watch starts one revision after it; a list with
    `resourceVersionMatch=Exact` and an older version gets HTTP 410;
  - with `token` set, requests without `Authorization: Bearer <token>` get 401.
- Hooks (Python methods, and the same over HTTP under `/_fake/` for a separate process): add, replace and
  delete nodes, compact, drop watch connections, inject error statuses, an outage (connections reset, or
  left hanging), and the log of requests received. `/_fake/` is never affected by an outage.

As a process (the lab runs it inside a network namespace):

    python -m lokal_lab.fake_apiserver --listen 127.0.0.1:6443 --nodes nodes.json \
        [--token TOKEN] [--kubeconfig-out kubeconfig.json] [--bookmark-interval 60]

`nodes.json` holds a list of Node objects or a NodeList. It prints one JSON line with its URL when ready.
Change a running one over HTTP (`curl` works):

    POST   /_fake/nodes                 body: a Node object (added, or replaced when the name exists)
    DELETE /_fake/nodes/<name>
    GET    /_fake/nodes                 every node, ignoring selectors
    POST   /_fake/compact               expire all history: older watches get 410
    POST   /_fake/drop-watches          cut every open watch connection
    POST   /_fake/outage?mode=reset|hang[&seconds=N]    DELETE /_fake/outage ends it
    POST   /_fake/fail?status=500[&count=1][&kind=list|watch|get|any]
    GET    /_fake/requests              the request log (JSON)

or send SIGHUP to re-read the nodes file (nodes missing from it are deleted). SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import copy
import json
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

Node = dict[str, Any]
OutageMode = Literal["reset", "hang"]
FailKind = Literal["list", "watch", "get", "any"]

# ---------------------------------------------------------------------------------------------------------
# Label selectors (pure)


class SelectorError(ValueError):
    """A label selector that the real apiserver would reject with 400."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: Literal["=", "!=", "in", "notin", "exists", "!exists"]
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        if self.op in ("!=", "notin"):
            return not present or labels[self.key] not in self.values
        if self.op == "exists":
            return present
        return not present


_KEY = r"(?:[A-Za-z0-9.\-]+/)?[A-Za-z0-9](?:[A-Za-z0-9_.\-]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[A-Za-z0-9_.\-]*[A-Za-z0-9])?)?"
_EQUALITY = re.compile(rf"\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*")
_SET = re.compile(rf"\s*({_KEY})\s+(in|notin)\s*\(([^()]*)\)\s*")
_EXISTS = re.compile(rf"\s*(!?)\s*({_KEY})\s*")
_VALUE_RE = re.compile(_VALUE)


def parse_label_selector(text: str) -> tuple[Requirement, ...]:
    """Parse a `labelSelector` query value; raise SelectorError on anything the apiserver would refuse."""
    requirements: list[Requirement] = []
    for part in _split_top_level(text):
        if not part.strip():
            if text.strip():
                raise SelectorError(f"empty requirement in label selector {text!r}")
            continue
        if match := _SET.fullmatch(part):
            values = [v.strip() for v in match.group(3).split(",")]
            if not all(_VALUE_RE.fullmatch(v) for v in values) or values == [""]:
                raise SelectorError(f"invalid values in label selector requirement {part.strip()!r}")
            op: Literal["in", "notin"] = "in" if match.group(2) == "in" else "notin"
            requirements.append(Requirement(match.group(1), op, frozenset(values)))
        elif match := _EQUALITY.fullmatch(part):
            eq: Literal["=", "!="] = "!=" if match.group(2) == "!=" else "="
            requirements.append(Requirement(match.group(1), eq, frozenset({match.group(3)})))
        elif match := _EXISTS.fullmatch(part):
            exists: Literal["exists", "!exists"] = "!exists" if match.group(1) else "exists"
            requirements.append(Requirement(match.group(2), exists))
        else:
            raise SelectorError(f"unable to parse label selector requirement {part.strip()!r}")
    return tuple(requirements)


def selector_matches(requirements: Iterable[Requirement], node: Node | None) -> bool:
    if node is None:
        return False
    labels = node.get("metadata", {}).get("labels") or {}
    return all(r.matches(labels) for r in requirements)


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses: `a in (x,y),b` is two requirements."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


# ---------------------------------------------------------------------------------------------------------
# Node objects


def make_node(
    name: str,
    *,
    region: str | None = None,
    zone: str | None = None,
    address: str | None = "10.0.0.1",
    address_v6: str | None = None,
    ready: bool = True,
    labels: Mapping[str, str] | None = None,
    legacy_labels: bool = False,
) -> Node:
    """A Node object as the apiserver returns it (the fields lokal reads, plus a few realistic ones)."""
    prefix = "failure-domain.beta.kubernetes.io" if legacy_labels else "topology.kubernetes.io"
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if region is not None:
        all_labels[f"{prefix}/region"] = region
    if zone is not None:
        all_labels[f"{prefix}/zone"] = zone
    all_labels.update(labels or {})
    addresses = [{"type": "Hostname", "address": name}]
    if address is not None:
        addresses.insert(0, {"type": "InternalIP", "address": address})
    if address_v6 is not None:
        addresses.insert(1, {"type": "InternalIP", "address": address_v6})
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": name, "labels": all_labels, "uid": f"uid-{name}"},
        "spec": {},
        "status": {
            "addresses": addresses,
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady"},
            ],
        },
    }


def write_kubeconfig(path: Path, server_url: str, *, token: str | None = None, name: str = "fake") -> Path:
    """Write a kubeconfig (JSON is valid YAML) that points the official client at `server_url`."""
    user: dict[str, Any] = {"token": token} if token else {}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server_url}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    path.write_text(json.dumps(config, indent=2))
    return path


def load_nodes_file(path: Path) -> list[Node]:
    """Nodes from a JSON file holding a list of Node objects or a NodeList."""
    data = json.loads(path.read_text())
    items = data.get("items") if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(
        isinstance(n, dict) and isinstance(n.get("metadata", {}).get("name"), str) for n in items
    ):
        raise ValueError(f"{path}: expected a list of Node objects (each with metadata.name) or a NodeList")
    return items


# ---------------------------------------------------------------------------------------------------------
# The server's state


@dataclass(frozen=True, slots=True)
class RequestRecord:
    method: str
    path: str
    query: Mapping[str, str]
    at: float  # time.monotonic()

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch") in ("1", "true")

    @property
    def label_selector(self) -> str | None:
        return self.query.get("labelSelector")


@dataclass(frozen=True, slots=True)
class _Change:
    rv: int
    old: Node | None  # None: the node was created
    new: Node | None  # None: the node was deleted


@dataclass(slots=True)
class _WatchSession:
    connection: socket.socket
    dropped: bool = False


@dataclass(slots=True)
class _Failure:
    status: int
    kind: FailKind
    remaining: int
    reason: str = ""


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    410: "Expired",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


class FakeApiServer:
    """The fake, in this process: `with FakeApiServer(nodes) as api: ... api.url ...`."""

    def __init__(
        self,
        nodes: Iterable[Node] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        bookmark_interval_s: float = 60.0,
        expired_watch_as_http_410: bool = False,
    ) -> None:
        self._host, self._port = host, port
        self.token = token
        self.bookmark_interval_s = bookmark_interval_s
        # The real apiserver answers an expired watch with 200 + ERROR event; this switch makes the
        # ApiException(410) path testable too.
        self.expired_watch_as_http_410 = expired_watch_as_http_410
        self._cond = threading.Condition()
        self._rv = 1
        self._nodes: dict[str, Node] = {}
        self._history: list[_Change] = []
        self._history_rvs: list[int] = []
        self._compacted_rv = 0  # watches from below this get 410
        self._watches: list[_WatchSession] = []
        self._failures: list[_Failure] = []
        self._outage: OutageMode | None = None
        self._outage_timer: threading.Timer | None = None
        self._requests: list[RequestRecord] = []
        self._stopping = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for node in nodes:
            self.put_node(node)

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> FakeApiServer:
        server_class = _IPv6Server if ":" in self._host else _Server
        self._server = server_class((self._host, self._port), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-apiserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            if self._outage_timer:
                self._outage_timer.cancel()
            self._cond.notify_all()
        self.drop_watches()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def write_kubeconfig(self, path: Path) -> Path:
        return write_kubeconfig(path, self.url, token=self.token)

    # -- hooks: nodes ---------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def nodes(self) -> list[Node]:
        with self._cond:
            return [copy.deepcopy(n) for n in self._nodes.values()]

    def put_node(self, node: Node) -> int:
        """Add `node`, or replace the node of that name. Returns the new resourceVersion."""
        with self._cond:
            name = node["metadata"]["name"]
            return self._record(self._nodes.get(name), copy.deepcopy(node))

    def update_node(self, name: str, change: Callable[[Node], None]) -> int:
        """Apply `change` to a copy of node `name` and store it (KeyError if there is no such node)."""
        with self._cond:
            new = copy.deepcopy(self._nodes[name])
            change(new)
            return self._record(self._nodes[name], new)

    def delete_node(self, name: str) -> int:
        with self._cond:
            return self._record(self._nodes[name], None)

    def sync_nodes(self, nodes: Iterable[Node]) -> None:
        """Make the node set exactly `nodes`: changed ones replaced, missing ones deleted."""
        wanted = {n["metadata"]["name"]: n for n in nodes}
        with self._cond:
            for name in [n for n in self._nodes if n not in wanted]:
                self._record(self._nodes[name], None)
            for name, node in wanted.items():
                old = self._nodes.get(name)
                if old is None or _without_rv(old) != _without_rv(node):
                    self._record(old, copy.deepcopy(node))

    def relabel(self, name: str, labels: Mapping[str, str | None]) -> int:
        """Set labels on node `name`; a None value removes the label."""

        def change(node: Node) -> None:
            current = node["metadata"].setdefault("labels", {})
            for key, value in labels.items():
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = value

        return self.update_node(name, change)

    def set_ready(self, name: str, ready: bool) -> int:
        def change(node: Node) -> None:
            for condition in node.setdefault("status", {}).setdefault("conditions", []):
                if condition.get("type") == "Ready":
                    condition["status"] = "True" if ready else "False"

        return self.update_node(name, change)

    def set_address(self, name: str, address: str) -> int:
        """Replace node `name`'s InternalIP (the first one, as a strategic merge patch keyed on type does)."""

        def change(node: Node) -> None:
            addresses = node.setdefault("status", {}).setdefault("addresses", [])
            for entry in addresses:
                if entry.get("type") == "InternalIP":
                    entry["address"] = address
                    return
            addresses.insert(0, {"type": "InternalIP", "address": address})

        return self.update_node(name, change)

    # -- hooks: failures ------------------------------------------------------------------------------

    def compact(self) -> None:
        """Forget all history, like an etcd compaction: watches from an older version now get 410."""
        with self._cond:
            self._compacted_rv = self._rv
            # etcd keeps the revision it compacted to: a watch from just before it still gets that change.
            keep = bisect.bisect_left(self._history_rvs, self._rv)
            del self._history[:keep], self._history_rvs[:keep]

    def drop_watches(self) -> int:
        """Cut every open watch connection mid-stream. Returns how many were cut."""
        with self._cond:
            sessions, self._watches = self._watches, []
            for session in sessions:
                session.dropped = True
                _abort(session.connection)
            self._cond.notify_all()
            return len(sessions)

    @property
    def active_watches(self) -> int:
        with self._cond:
            return len(self._watches)

    def fail_next(self, status: int, *, count: int = 1, kind: FailKind = "any", reason: str = "") -> None:
        """Answer the next `count` requests of `kind` with an error Status of code `status`."""
        with self._cond:
            self._failures.append(_Failure(status, kind, count, reason))

    def set_outage(self, mode: OutageMode | None, *, seconds: float | None = None) -> None:
        """Start an outage (`reset`: connections are reset; `hang`: requests get no answer), or end it."""
        with self._cond:
            if self._outage_timer:
                self._outage_timer.cancel()
                self._outage_timer = None
            self._outage = mode
            if mode and seconds is not None:
                self._outage_timer = threading.Timer(seconds, self.set_outage, args=(None,))
                self._outage_timer.daemon = True
                self._outage_timer.start()
            self._cond.notify_all()
        if mode:
            self.drop_watches()

    @contextmanager
    def outage(self, mode: OutageMode = "reset") -> Iterator[None]:
        self.set_outage(mode)
        try:
            yield
        finally:
            self.set_outage(None)

    def cut_off(self) -> contextlib.AbstractContextManager[None]:
        """The clients are cut off (connections reset, new ones refused) until the block ends."""
        return self.outage("reset")

    # -- hooks: observation ---------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self._cond:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._cond:
            self._requests.clear()

    # -- internals (called with self._cond held) --------------------------------------------------------

    def _record(self, old: Node | None, new: Node | None) -> int:
        self._rv += 1
        name = (new or old or {})["metadata"]["name"]
        if new is None:
            del self._nodes[name]
            stored_new = None
        else:
            new["metadata"]["resourceVersion"] = str(self._rv)
            new.setdefault("kind", "Node")
            new.setdefault("apiVersion", "v1")
            self._nodes[name] = new
            stored_new = copy.deepcopy(new)
        self._history.append(_Change(self._rv, copy.deepcopy(old) if old else None, stored_new))
        self._history_rvs.append(self._rv)
        self._cond.notify_all()
        return self._rv

    def _take_failure(self, kind: FailKind) -> _Failure | None:
        for failure in self._failures:
            if failure.kind in (kind, "any"):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _watch_events(self, requirements: tuple[Requirement, ...], after_rv: int) -> list[dict[str, Any]]:
        """The events a watch with `requirements` must see for the changes after `after_rv`."""
        start = bisect.bisect_right(self._history_rvs, after_rv)
        events = []
        for change in self._history[start:]:
            old_passes = selector_matches(requirements, change.old)
            new_passes = selector_matches(requirements, change.new)
            if new_passes and not old_passes:
                events.append({"type": "ADDED", "object": change.new})
            elif new_passes and old_passes:
                events.append({"type": "MODIFIED", "object": change.new})
            elif old_passes:
                # The previous content, stamped with the version at which it stopped matching or was deleted.
                gone = copy.deepcopy(change.old)
                assert gone is not None
                gone["metadata"]["resourceVersion"] = str(change.rv)
                events.append({"type": "DELETED", "object": gone})
        return events


def _without_rv(node: Node) -> Node:
    stripped = copy.deepcopy(node)
    stripped.get("metadata", {}).pop("resourceVersion", None)
    return stripped


def _abort(connection: socket.socket) -> None:
    """Reset a connection (RST, like a dead peer or a restarted apiserver)."""
    try:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _WatchStream:
    """One open watch: what it has sent, when it ends, when the next BOOKMARK is due."""

    def __init__(
        self,
        fake: FakeApiServer,
        connection: socket.socket,
        requirements: tuple[Requirement, ...],
        query: Mapping[str, str],
    ) -> None:
        self._fake = fake
        self._requirements = requirements
        timeout = _int_or_none(query.get("timeoutSeconds"))
        now = time.monotonic()
        self._deadline = now + timeout if timeout and timeout > 0 else None
        self._bookmarks = query.get("allowWatchBookmarks") in ("1", "true")
        self._next_bookmark = self._bookmark_after(now)
        self._sent_rv = 0
        self._session = _WatchSession(connection)
        fake._watches.append(self._session)

    def _bookmark_after(self, now: float) -> float | None:
        """When the next BOOKMARK is due (the cacher's nextBookmarkTime), None when no more will come."""
        if not self._bookmarks:
            return None
        due = now + self._fake.bookmark_interval_s
        if self._deadline is not None:
            due = min(due, self._deadline - 2.0)
        return due if due > now else None

    def initial_events(self, asked: int | None) -> list[dict[str, Any]]:
        """Called with the lock held. Unset or "0": the current state as ADDED; else the changes after it."""
        fake = self._fake
        self._sent_rv = max(asked or 0, fake._rv)
        if asked:
            return fake._watch_events(self._requirements, asked)
        nodes = sorted(fake._nodes.values(), key=lambda n: str(n["metadata"]["name"]))
        return [
            {"type": "ADDED", "object": copy.deepcopy(n)}
            for n in nodes
            if selector_matches(self._requirements, n)
        ]

    def next_batch(self) -> list[dict[str, Any]] | None:
        """Block until there is something to send; None when the watch's time is up."""
        fake = self._fake
        with fake._cond:
            while True:
                if self._session.dropped or fake._stopping or fake._outage:
                    raise _Abort
                now = time.monotonic()
                if self._deadline is not None and now >= self._deadline:
                    return None
                if fake._rv > self._sent_rv:
                    events = fake._watch_events(self._requirements, self._sent_rv)
                    self._sent_rv = fake._rv
                    if events:
                        return events
                if self._next_bookmark is not None and now >= self._next_bookmark:
                    self._next_bookmark = self._bookmark_after(now)
                    metadata = {"resourceVersion": str(self._sent_rv)}
                    return [
                        {
                            "type": "BOOKMARK",
                            "object": {"kind": "Node", "apiVersion": "v1", "metadata": metadata},
                        }
                    ]
                waits = [self._next_bookmark - now if self._next_bookmark is not None else 1.0]
                if self._deadline is not None:
                    waits.append(self._deadline - now)
                fake._cond.wait(max(min(waits), 0.001))

    def close(self) -> None:
        with self._fake._cond:
            if self._session in self._fake._watches:
                self._fake._watches.remove(self._session)


# ---------------------------------------------------------------------------------------------------------
# HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeApiServer


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _Abort(Exception):
    """Reset this connection without an answer."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the request log instead
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- routing --------------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        body = self._read_body()
        try:
            if url.path.startswith("/_fake/"):
                self._admin(method, url.path, query, body)
                return
            with fake._cond:
                fake._requests.append(RequestRecord(method, url.path, query, time.monotonic()))
            self._wait_out_outage()
            self._api(method, url.path, query)
        except _Abort:
            self.close_connection = True
            _abort(self.connection)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _wait_out_outage(self) -> None:
        fake = self.server.fake
        with fake._cond:
            if fake._outage == "reset":
                raise _Abort
            if fake._outage == "hang":
                while fake._outage == "hang" and not fake._stopping:
                    fake._cond.wait(0.5)
                raise _Abort

    def _api(self, method: str, path: str, query: dict[str, str]) -> None:
        fake = self.server.fake
        if fake.token and self.headers.get("Authorization") != f"Bearer {fake.token}":
            self._send_status(401, "Unauthorized")
            return
        if method != "GET":
            self._send_status(405, "the fake apiserver serves only GET on nodes")
            return
        if path in ("/api/v1/nodes", "/api/v1/nodes/"):
            watching = query.get("watch") in ("1", "true")
            with fake._cond:
                failure = fake._take_failure("watch" if watching else "list")
            if failure:
                self._send_status(failure.status, failure.reason or "injected failure")
                return
            try:
                requirements = parse_label_selector(query.get("labelSelector", ""))
            except SelectorError as error:
                self._send_status(400, str(error))
                return
            if watching:
                self._watch(requirements, query)
            else:
                self._list(requirements, query)
            return
        match = re.fullmatch(r"/api/v1/nodes/([^/]+)", path)
        if match:
            with fake._cond:
                failure = fake._take_failure("get")
                node = copy.deepcopy(fake._nodes.get(match.group(1)))
            if failure:
                self._send_status(failure.status, failure.reason or "injected failure")
            elif node is None:
                self._send_status(404, f'nodes "{match.group(1)}" not found')
            else:
                self._send_json(200, node)
            return
        self._send_status(404, f"the fake apiserver does not serve {path}")

    def _list(self, requirements: tuple[Requirement, ...], query: dict[str, str]) -> None:
        fake = self.server.fake
        with fake._cond:
            asked = _int_or_none(query.get("resourceVersion"))
            if (
                query.get("resourceVersionMatch") == "Exact"
                and asked is not None
                and asked < fake._compacted_rv
            ):
                expired = True
            else:
                expired = False
                items = [copy.deepcopy(n) for n in fake._nodes.values() if selector_matches(requirements, n)]
                rv = fake._rv
        if expired:
            self._send_status(410, f"too old resource version: {asked} ({fake._compacted_rv})")
            return
        items.sort(key=lambda n: n["metadata"]["name"])
        self._send_json(
            200,
            {
                "kind": "NodeList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            },
        )

    def _watch(self, requirements: tuple[Requirement, ...], query: dict[str, str]) -> None:
        fake = self.server.fake
        asked = _int_or_none(query.get("resourceVersion"))
        with fake._cond:
            # etcd: a watch from X starts at revision X+1, refused when that is below the compacted one.
            if asked and asked + 1 < fake._compacted_rv:
                expired = _status(410, "Expired", f"too old resource version: {asked} ({fake._compacted_rv})")
                if fake.expired_watch_as_http_410:
                    self._send_json(410, expired)
                    return
                self._start_chunked()
                self._write_chunk(json.dumps({"type": "ERROR", "object": expired}).encode() + b"\n")
                self._write_chunk(b"")
                return
            stream = _WatchStream(fake, self.connection, requirements, query)
            first = stream.initial_events(asked)
        self._start_chunked()
        try:
            batch: list[dict[str, Any]] | None = first
            while batch is not None:
                for event in batch:
                    self._write_chunk(json.dumps(event).encode() + b"\n")
                batch = stream.next_batch()
            self._write_chunk(b"")  # the terminating chunk: a clean end of the watch (timeoutSeconds)
        finally:
            stream.close()

    # -- admin ----------------------------------------------------------------------------------------

    def _admin(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        fake = self.server.fake
        try:
            if path == "/_fake/nodes" and method == "GET":
                items = sorted(fake.nodes(), key=lambda n: n["metadata"]["name"])
                self._send_json(200, {"kind": "NodeList", "apiVersion": "v1", "items": items})
            elif path == "/_fake/nodes" and method in ("POST", "PUT"):
                node = json.loads(body)
                if not isinstance(node, dict) or not isinstance(node.get("metadata", {}).get("name"), str):
                    raise ValueError("the body must be a Node object with metadata.name")
                self._send_json(200, {"resourceVersion": str(fake.put_node(node))})
            elif path.startswith("/_fake/nodes/") and method == "DELETE":
                self._send_json(200, {"resourceVersion": str(fake.delete_node(path.rsplit("/", 1)[1]))})
            elif path == "/_fake/compact" and method == "POST":
                fake.compact()
                self._send_json(200, {"compactedResourceVersion": str(fake.resource_version)})
            elif path == "/_fake/drop-watches" and method == "POST":
                self._send_json(200, {"dropped": fake.drop_watches()})
            elif path == "/_fake/outage" and method == "POST":
                mode = query.get("mode", "reset")
                if mode not in ("reset", "hang"):
                    raise ValueError("mode must be reset or hang")
                seconds = float(query["seconds"]) if "seconds" in query else None
                fake.set_outage("reset" if mode == "reset" else "hang", seconds=seconds)
                self._send_json(200, {"outage": mode})
            elif path == "/_fake/outage" and method == "DELETE":
                fake.set_outage(None)
                self._send_json(200, {"outage": None})
            elif path == "/_fake/fail" and method == "POST":
                kind = query.get("kind", "any")
                if kind not in ("list", "watch", "get", "any"):
                    raise ValueError("kind must be list, watch, get or any")
                fake.fail_next(int(query["status"]), count=int(query.get("count", "1")), kind=kind)  # type: ignore[arg-type]
                self._send_json(200, {"armed": True})
            elif path == "/_fake/requests" and method == "GET":
                records = [
                    {"method": r.method, "path": r.path, "query": dict(r.query)} for r in fake.requests
                ]
                self._send_json(200, records)
            else:
                self._send_status(404, f"no admin endpoint {method} {path}")
        except KeyError as error:
            self._send_status(404, f"not found: {error}")
        except (ValueError, TypeError) as error:
            self._send_status(400, str(error))

    # -- bytes ----------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = _int_or_none(self.headers.get("Content-Length")) or 0
        return self.rfile.read(length) if length > 0 else b""

    def _send_status(self, code: int, message: str) -> None:
        self._send_json(code, _status(code, _REASONS.get(code, "Unknown"), message))

    def _send_json(self, code: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------
# As a process


def _parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lokal_lab.fake_apiserver", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--listen", type=_parse_listen, default=("127.0.0.1", 0), help="HOST:PORT (port 0: any)"
    )
    parser.add_argument("--nodes", type=Path, help="JSON file: a list of Node objects or a NodeList")
    parser.add_argument("--token", help="require this bearer token")
    parser.add_argument("--kubeconfig-out", type=Path, help="write a kubeconfig for this server here")
    parser.add_argument("--bookmark-interval", type=float, default=60.0, help="seconds between BOOKMARKs")
    args = parser.parse_args(argv)
    try:
        nodes = load_nodes_file(args.nodes) if args.nodes else []
    except (OSError, ValueError) as error:
        print(f"fake_apiserver: --nodes: {error}", file=sys.stderr)
        return 2
    host, port = args.listen
    fake = FakeApiServer(
        nodes, host=host, port=port, token=args.token, bookmark_interval_s=args.bookmark_interval
    )
    try:
        fake.start()
    except OSError as error:
        print(f"fake_apiserver: --listen {host}:{port}: {error}", file=sys.stderr)
        return 2
    if args.kubeconfig_out:
        fake.write_kubeconfig(args.kubeconfig_out)
    stop = threading.Event()

    def reload(signum: int, frame: object) -> None:
        try:
            fake.sync_nodes(load_nodes_file(args.nodes))
        except (OSError, ValueError, TypeError) as error:
            print(f"fake_apiserver: reload of {args.nodes} failed: {error}", file=sys.stderr)

    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    if args.nodes:
        signal.signal(signal.SIGHUP, reload)
    print(json.dumps({"event": "fake_apiserver_listening", "url": fake.url, "nodes": len(nodes)}), flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Node reflector: list, then watch from the list's resourceVersion, forever, in one worker thread.

Rules (as client-go's reflector does it):
- List, publish, then watch from the list's resourceVersion with bookmarks and a server timeout drawn at
  random from [watch_timeout_min_s, watch_timeout_max_s]. A watch that ends normally is resumed from the
  last resourceVersion seen (event or BOOKMARK): no relist, so no duplicate and no missed event.
- 410 Expired, as an ERROR event or as an HTTP 410, means the history is gone: list again and diff against
  the cache, so nodes deleted during the gap are removed.
- Any other failure (connection, 5xx, 429, a garbled stream, a watch that ends at once without an event)
  waits with exponential backoff and jitter, then retries. The last membership is kept meanwhile: an API
  outage never empties it.
- `changed(urgent)` is called when lokal's view changed (urgent after the first list, even when nothing
  did). The reflector builds no snapshot: the changes wait in `cache` for the batcher (batcher.py).
- `stop()` (any thread) makes `run()` return promptly: it wakes the backoff sleep and cuts the open request.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from enum import Enum

from sidecar.backoff import Backoff
from sidecar.cluster.cache import PeerCache
from sidecar.cluster.config import AddressFamily, ClusterConfigError, WatchTimings
from sidecar.cluster.kube_api import ApiError, ApiUnavailable, JsonDict, NodeApi
from sidecar.cluster.nodes import DEFAULT_LABELS, NodeProblemLog, parse_node
from sidecar.logs import get_logger, log_event
from sidecar.membership import Peer, TopologyLabels

_LOG = get_logger("cluster")


class _WatchEnd(Enum):
    TIMED_OUT = "timed_out"  # the server ended it (timeoutSeconds): resume from the last resourceVersion
    EXPIRED = "expired"  # 410: relist


class NodeReflector:
    def __init__(
        self,
        api: NodeApi,
        *,
        self_name: str,
        label_selector: str | None,
        family: AddressFamily,
        timings: WatchTimings,
        changed: Callable[[bool], None],
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = _LOG,
        labels: TopologyLabels = DEFAULT_LABELS,
    ) -> None:
        self._api = api
        self._labels = labels
        self._self_name = self_name
        self._selector = label_selector
        self._family = family
        self._timings = timings
        self._changed = changed
        self._rng = rng or random.Random()
        self._clock = clock
        self._log = logger
        self._problems = NodeProblemLog(self._report_problem)
        self._cache = PeerCache(self_name, family, self._problems, labels)
        self._backoff = Backoff(
            timings.backoff_initial_s,
            timings.backoff_max_s,
            jitter=timings.backoff_jitter,
            reset_after=timings.backoff_reset_after_s,
            rng=self._rng,
        )
        self._stop = threading.Event()
        self.stopped = threading.Event()  # set when run() has returned
        self._failing_since: float | None = None
        self._resource_version: str | None = None  # None: list first
        self.lists = 0  # how many lists were made (for tests and `lokal status`)

    # -- the own node, before the watch ---------------------------------------------------------------

    def read_own_node(self) -> Peer | None:
        """This node's Peer, retried with backoff through API errors; None if stopped first.
        Raises ClusterConfigError when the node does not exist (a wrong --node-name)."""
        while not self._stop.is_set():
            try:
                obj = self._api.read_node(self._self_name)
            except ApiError as error:
                if error.status == 404:
                    raise ClusterConfigError(
                        f"--node-name {self._self_name!r}: no Node of that name in the cluster"
                    ) from error
                self._failed(error, "read_own_node")
                continue
            except ApiUnavailable as error:
                self._failed(error, "read_own_node")
                continue
            self._healthy()
            parsed = parse_node(obj, self_name=self._self_name, family=self._family, labels=self._labels)
            if parsed.peer is None:
                raise ClusterConfigError(f"--node-name {self._self_name!r}: the Node object is unusable")
            self._problems.note(parsed.peer.name, parsed.problems)
            return parsed.peer
        return None

    # -- the loop -------------------------------------------------------------------------------------

    @property
    def cache(self) -> PeerCache:
        """The watched nodes, and the changes not yet taken by the batcher."""
        return self._cache

    def wait_until_stopped(self) -> None:
        """Block until `stop()`: for a node that watches no other node (see MembershipSource)."""
        self._stop.wait()

    def set_label_selector(self, selector: str | None) -> None:
        """Set before `run()`: in isolate mode the selector is known only after reading the own node."""
        self._selector = selector

    def run(self) -> None:
        """List and watch until `stop()`. Never raises for API trouble; it retries."""
        try:
            self._loop()
        finally:
            self.stopped.set()

    def stop(self) -> None:
        self._stop.set()
        self._api.abort()

    def _loop(self) -> None:
        first = True
        expired_in_a_row = 0  # a watch from a fresh list that expires again must not relist in a hot loop
        while not self._stop.is_set():
            try:
                resource_version = self._resource_version
                if resource_version is None:
                    resource_version = self._list(first)
                    first = False
                end = self._watch(resource_version)
                expired_in_a_row = expired_in_a_row + 1 if end is _WatchEnd.EXPIRED else 0
            except ApiError as error:
                if error.status != 410:
                    self._failed(error, "list" if self._resource_version is None else "watch")
                    continue
                expired_in_a_row += 1
            except ApiUnavailable as error:
                self._failed(error, "list" if self._resource_version is None else "watch")
                continue
            if expired_in_a_row:
                log_event(self._log, "node_watch_expired", logging.INFO, action="relist")
                self._resource_version = None
                if expired_in_a_row > 1:
                    self._failed(ApiError(410, "expired again right after a list"), "watch")

    def _list(self, first: bool) -> str:
        items, resource_version = self._api.list_nodes(self._selector)
        self.lists += 1
        self._healthy()
        if self._cache.replace(items) or first:
            self._changed(first)
        self._resource_version = resource_version
        return resource_version

    def _watch(self, resource_version: str) -> _WatchEnd:
        """Watch until the server ends it. Every event moves `_resource_version` at once, so that a watch
        cut mid-stream resumes exactly after the last event seen: no duplicate, no gap."""
        timeout = self._rng.uniform(self._timings.watch_timeout_min_s, self._timings.watch_timeout_max_s)
        started = self._clock()
        received = 0
        for event in self._api.watch_nodes(self._selector, resource_version, max(int(timeout), 1)):
            if self._stop.is_set():
                break
            received += 1
            kind = event.get("type")
            obj = event.get("object")
            if not isinstance(obj, dict):
                continue
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return _WatchEnd.EXPIRED
                raise ApiError(int(obj.get("code") or 0), str(obj.get("message", "watch ERROR event")))
            if received == 1:
                self._healthy()
            if kind in ("ADDED", "MODIFIED", "DELETED") and self._cache.apply(kind, obj):
                self._changed(False)
            self._resource_version = _resource_version(obj) or self._resource_version
        if not received and self._clock() - started < self._timings.short_watch_s and not self._stop.is_set():
            raise ApiError(0, "the watch ended at once without an event")
        return _WatchEnd.TIMED_OUT

    # -- helpers --------------------------------------------------------------------------------------

    def _failed(self, error: Exception, during: str) -> None:
        if self._stop.is_set():
            return
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        delay = self._backoff.next_delay(now)
        log_event(
            self._log,
            "kubernetes_api_error",
            logging.WARNING,
            during=during,
            status=getattr(error, "status", None),
            error=str(error)[:300],
            retry_in_s=round(delay, 3),
            failing_for_s=round(now - self._failing_since, 1),
        )
        self._stop.wait(delay)

    def _healthy(self) -> None:
        if self._failing_since is not None:
            log_event(
                self._log,
                "kubernetes_api_recovered",
                logging.INFO,
                failed_for_s=round(self._clock() - self._failing_since, 1),
            )
            self._failing_since = None

    def _report_problem(self, name: str, problems: tuple[str, ...]) -> None:
        log_event(self._log, "node_problem", logging.WARNING, node=name, problems=list(problems))


def _resource_version(obj: JsonDict) -> str | None:
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        value = metadata.get("resourceVersion")
        if isinstance(value, str) and value:
            return value
    return None

"""MembershipSource: the async face of the Node watch, what `lokal serve --discovery kubernetes` runs.

Rules:
- The synchronous reflector runs in one worker thread (`anyio.to_thread.run_sync`, abandoned on cancel,
  with its own limiter so it takes no slot of the default pool). The snapshot batcher (batcher.py) runs
  in a thread of its own: it turns the reflector's changes into one snapshot per short interval, built
  from the changed nodes only, and hands it to the event loop with `anyio.from_thread.run_sync`. The
  event loop only adopts it: the work a change costs stays off the serving path.
- Startup: read this node's Node (its region and zone), then list and watch (in isolate mode with the
  selector `<region label>=<own region>`). In isolate mode a node without a region label is a region of
  its own: it logs a warning, lists and watches no other node, and its membership is itself alone.
  `run` reports started (with the first membership) only after the first list. Configuration errors
  raise from `run`.
- The membership only changes when the cluster does: through API outages the last one stays.
- Every change is logged once, here, with counts by region and zone (kept up to date, never recounted).
- Subscribers never miss the latest state: a slow subscriber gets the newest snapshot and the change
  summary since the snapshot it saw last (changes that cancel out are skipped). That summary looks only
  at the nodes the snapshots in between changed, while they are in the recent-changes log.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskStatus
from anyio.lowlevel import EventLoopToken

from sidecar.cluster.batcher import MembershipUpdate, SnapshotBatcher, whole
from sidecar.cluster.config import ClusterConfig, node_label_selector
from sidecar.cluster.counts import NodeCounts
from sidecar.cluster.kube_api import KubernetesNodeApi, NodeApi
from sidecar.cluster.reflector import NodeReflector
from sidecar.logs import get_logger, log_event
from sidecar.membership import Membership, MembershipChange, Peer, TopologyMode, diff, diff_of
from sidecar.topology.validation import unlabelled_node_warning

_LOG = get_logger("cluster")
_MAX_NAMES_LOGGED = 20
_RECENT_CHANGES = 256  # snapshots kept in the recent-changes log...
_RECENT_NAMES = 20_000  # ...and names in all (a relist can change every node at once)


def default_api_factory(config: ClusterConfig) -> NodeApi:
    return KubernetesNodeApi(config.kubeconfig, config.timings)


class MembershipSource:
    """Cluster membership from Kubernetes Node objects.

    ```
    source = MembershipSource(ClusterConfig(node_name=..., kubeconfig=..., topology_mode=...))
    async with anyio.create_task_group() as tg:
        first = await tg.start(source.run)        # raises ClusterConfigError
        async for membership, change in source.subscribe(): ...
    ```
    """

    def __init__(
        self,
        config: ClusterConfig,
        *,
        api_factory: Callable[[ClusterConfig], NodeApi] = default_api_factory,
        rng: random.Random | None = None,
        logger: logging.Logger = _LOG,
    ) -> None:
        self.config = config
        self._api_factory = api_factory
        self._rng = rng or random.Random()
        self._log = logger
        self._current: Membership | None = None
        self._own_node: Peer | None = None
        self._version = 0
        self._changed_event: anyio.Event | None = None  # created on the event loop, on first use
        self._finished = False
        self._reflector: NodeReflector | None = None
        self._batcher: SnapshotBatcher | None = None
        self._token: EventLoopToken | None = None
        self._worker_done = threading.Event()
        # (version, nodes that snapshot changed) of the latest snapshots: what subscribers diff over.
        self._recent: deque[tuple[int, frozenset[str]]] = deque(maxlen=_RECENT_CHANGES)
        self._recent_names = 0

    @property
    def current(self) -> Membership | None:
        """The latest membership; None before the first list."""
        return self._current

    @property
    def own_node(self) -> Peer | None:
        """This node as read at startup (region and zone), before the first list."""
        return self._own_node

    @property
    def label_selector(self) -> str | None:
        own = self._own_node
        if own is None:
            return None
        return node_label_selector(self.config.topology_mode, own.region, self.config.labels.region)

    async def run(self, *, task_status: TaskStatus[Membership] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled. Reports started with the first membership."""
        failure: list[BaseException] = []

        self._token = anyio.lowlevel.current_token()
        self._batcher = SnapshotBatcher(
            self.config.node_name,
            self._publish_from_thread,
            interval=self.config.timings.batch_interval_s,
            logger=self._log,
        )
        self._batcher.start()

        async def work() -> None:
            try:
                await anyio.to_thread.run_sync(
                    self._work_in_thread, abandon_on_cancel=True, limiter=anyio.CapacityLimiter(1)
                )
            except Exception as error:
                failure.append(error)
                self._wake()
            finally:
                if self._reflector is not None:
                    self._reflector.stop()

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(work)
                while self._current is None and not failure:
                    await self._changed.wait()
                if self._current is not None:
                    task_status.started(self._current)
        finally:
            self._finished = True
            self._batcher.stop()
            self._wake()
        if failure:
            raise failure[0]

    def subscribe(self) -> MembershipSubscription:
        """An async iterator of (membership, change); it starts with the current state as all joined."""
        return MembershipSubscription(self)

    async def wait_for(self, predicate: Callable[[Membership], bool]) -> Membership:
        """The first membership (current or coming) for which `predicate` holds."""
        while True:
            current = self._current
            if current is not None and predicate(current):
                return current
            if self._finished:
                raise RuntimeError("the membership source has stopped")
            await self._changed.wait()

    def wait_stopped(self, timeout: float) -> bool:
        """Block this (non-event-loop) thread until the worker thread has ended; False on timeout."""
        return self._worker_done.wait(timeout)

    # -- worker thread --------------------------------------------------------------------------------

    def _work_in_thread(self) -> None:
        config = self.config
        api = self._api_factory(config)
        reflector = NodeReflector(
            api,
            self_name=config.node_name,
            label_selector=None,
            family=config.address_family,
            timings=config.timings,
            changed=self._notify_batcher,
            rng=self._rng,
            logger=self._log,
            labels=config.labels,
        )
        self._reflector = reflector
        try:
            me = reflector.read_own_node()
            if me is None:  # stopped before the API answered
                return
            self._own_node = me
            warning = unlabelled_node_warning(config.topology_mode, me, config.labels)
            if warning is not None:
                log_event(self._log, "config_warning", level=logging.WARNING, warning=warning)
            if config.topology_mode is TopologyMode.ISOLATE and not me.region:
                self._publish_from_thread(whole(Membership.of(me.name, [me])))  # a region of its own
                reflector.wait_until_stopped()
                return
            selector = node_label_selector(config.topology_mode, me.region, config.labels.region)
            log_event(
                self._log,
                "node_watch_starting",
                node=me.name,
                region=me.region,
                zone=me.zone,
                mode=config.topology_mode.value,
                selector=selector or "",
            )
            reflector.set_label_selector(selector)
            assert self._batcher is not None
            self._batcher.attach(reflector.cache, selector)
            reflector.run()
        finally:
            api.close()
            self._worker_done.set()

    def _notify_batcher(self, urgent: bool) -> None:
        if self._batcher is not None:
            self._batcher.notify(urgent)

    def _publish_from_thread(self, update: MembershipUpdate) -> None:
        try:
            anyio.from_thread.run_sync(self._publish, update, token=self._token)
        except Exception:  # the event loop is gone: nobody listens any more
            if self._reflector is not None:
                self._reflector.stop()

    # -- event loop -----------------------------------------------------------------------------------

    def _publish(self, update: MembershipUpdate) -> None:
        if self._finished:
            return
        previous = self._current
        self._current = update.membership
        self._version += 1
        if len(self._recent) == self._recent.maxlen:
            self._recent_names -= len(self._recent[0][1])
        self._recent.append((self._version, update.changed_names))
        self._recent_names += len(update.changed_names)
        while self._recent_names > _RECENT_NAMES and len(self._recent) > 1:
            self._recent_names -= len(self._recent.popleft()[1])
        event = "membership_synced" if previous is None else "membership_changed"
        log_event(self._log, event, **update.counts, **change_fields(update.change))
        self._wake()

    def _changed_since(self, version: int) -> frozenset[str] | None:
        """The nodes the snapshots after `version` changed; None when the log no longer reaches back."""
        if not self._recent or self._recent[0][0] > version + 1:
            return None
        return frozenset().union(*(names for v, names in self._recent if v > version))

    @property
    def _changed(self) -> anyio.Event:
        """Set (and replaced) on every new snapshot and when the source stops."""
        if self._changed_event is None:
            self._changed_event = anyio.Event()
        return self._changed_event

    def _wake(self) -> None:
        if self._changed_event is not None:
            self._changed_event.set()
            self._changed_event = None


class MembershipSubscription:
    """Yields (membership, change since the snapshot this subscriber saw last); ends when the source stops."""

    def __init__(self, source: MembershipSource) -> None:
        self._source = source
        self._seen: Membership | None = None
        self._seen_version = 0

    def __aiter__(self) -> MembershipSubscription:
        return self

    async def __anext__(self) -> tuple[Membership, MembershipChange]:
        source = self._source
        while True:
            current = source._current
            if current is not None and source._version != self._seen_version:
                seen = self._seen or Membership(current.self_name)
                names = source._changed_since(self._seen_version) if self._seen is not None else None
                change = diff(seen, current) if names is None else diff_of(seen, current, names)
                self._seen, self._seen_version = current, source._version
                if change:
                    return current, change
                continue
            if source._finished:
                raise StopAsyncIteration
            await source._changed.wait()


def summarize(membership: Membership, change: MembershipChange | None = None) -> dict[str, Any]:
    """Log fields: node counts (all, ready), by region and by region/zone, and what changed. Counts every
    node: the source logs counts kept up to date by the batcher instead."""
    fields = NodeCounts.of(membership).fields()
    if change is not None:
        fields.update(change_fields(change))
    return fields


def change_fields(change: MembershipChange) -> dict[str, Any]:
    """The names that changed, by kind, at most _MAX_NAMES_LOGGED each (with the count when more)."""
    fields: dict[str, Any] = {}
    for name in ("joined", "left", "relabelled", "ready_changed"):
        names = getattr(change, name)
        if names:
            fields[name] = list(names[:_MAX_NAMES_LOGGED])
            if len(names) > _MAX_NAMES_LOGGED:
                fields[f"{name}_count"] = len(names)
    return fields

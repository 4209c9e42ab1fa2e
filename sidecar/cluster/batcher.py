"""From the reflector's cache to published snapshots: one per short interval, built from what changed.

Rules:
- The reflector only notes that its cache changed (`notify`, O(1)): it never builds a snapshot, so a burst
  of watch events is read as fast as it arrives.
- The batcher's own thread waits for a change, lets `interval` pass so that a burst lands in one snapshot,
  then takes the changed nodes from the cache and builds the next snapshot, its `MembershipChange` and the
  node counts from them alone (`Membership.updated`, `NodeCounts.apply`): the cost follows the changes,
  not the cluster. Changes that cancel out within a batch publish nothing.
- The first list is published at once (`notify(urgent=True)`), even when it is empty: `run` waits for it.
- `publish` receives a `MembershipUpdate`; it is the only call that reaches the event loop, with no work to
  do there but to adopt it.
- `stop()` (any thread) ends the thread promptly; a batch not yet published is dropped with it. A batch
  that fails is logged and the thread goes on: the next batch is rebuilt from the whole cache.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar.cluster.cache import PeerCache
from sidecar.cluster.counts import NodeCounts
from sidecar.logs import get_logger, log_event
from sidecar.membership import Membership, MembershipChange, diff_of

_LOG = get_logger("cluster")
DEFAULT_INTERVAL_S = 0.1


@dataclass(frozen=True, slots=True)
class MembershipUpdate:
    membership: Membership
    change: MembershipChange
    changed_names: frozenset[str]  # the nodes that differ from the previous snapshot
    counts: dict[str, Any] = field(default_factory=dict)  # NodeCounts.fields() of `membership`


class SnapshotBatcher:
    def __init__(
        self,
        self_name: str,
        publish: Callable[[MembershipUpdate], None],
        *,
        interval: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = _LOG,
    ) -> None:
        if interval < 0:
            raise ValueError(f"the membership batch interval must be >= 0 seconds, got {interval}")
        self._self_name = self_name
        self._publish = publish
        self._interval = interval
        self._clock = clock
        self._log = logger
        self._cache: PeerCache | None = None
        self._current: Membership | None = None
        self._counts = NodeCounts()
        self._cond = threading.Condition()
        self._pending_since: float | None = None
        self._urgent = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._selector = ""
        self._resync = False

    def attach(self, cache: PeerCache, selector: str | None = None) -> None:
        """The cache to take changes from (the reflector's), before the first `notify`."""
        self._cache = cache
        self._selector = selector or ""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="membership-batcher", daemon=True)
        self._thread.start()

    def notify(self, urgent: bool = False) -> None:
        """The cache changed (urgent: publish now, as after the first list)."""
        with self._cond:
            if self._pending_since is None:
                self._pending_since = self._clock()
            self._urgent = self._urgent or urgent
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the batcher's thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while self._wait_for_batch():
            try:
                self.flush()
            except Exception:  # a bug here must not freeze the membership: log it, rebuild next time
                self._log.exception("membership_batch_failed")
                self._resync = True

    def _wait_for_batch(self) -> bool:
        """Block until a batch is due; False when stopped."""
        with self._cond:
            while not self._stopped:
                if self._pending_since is not None:
                    remaining = self._pending_since + self._interval - self._clock()
                    if self._urgent or remaining <= 0:
                        self._pending_since = None
                        self._urgent = False
                        return True
                    self._cond.wait(remaining)
                else:
                    self._cond.wait()
            return False

    def flush(self) -> MembershipUpdate | None:
        """Build and publish the snapshot of the changes so far (None when nothing differs)."""
        assert self._cache is not None, "attach() first"
        changes = self._cache.take_changes()
        previous = self._current
        base = previous or Membership(self._self_name)
        if self._resync:  # the last batch failed half-way: start again from the whole cache
            self._resync = False
            membership = self._cache.snapshot()
            self._counts = NodeCounts.of(membership)
            names = frozenset(base.peers.keys() | membership.peers.keys())
        elif changes or previous is None:
            membership = base.updated({name: after for name, (_, after) in changes.items()})
            for before, after in changes.values():
                self._counts.apply(before, after)
            names = frozenset(changes)
        else:
            return None
        update = MembershipUpdate(membership, diff_of(base, membership, names), names, self._counts.fields())
        self._current = membership
        if membership.me is None:
            fields = {"node": self._self_name, "selector": self._selector}
            log_event(self._log, "own_node_not_watched", logging.WARNING, **fields)
        self._publish(update)
        return update


def whole(membership: Membership) -> MembershipUpdate:
    """A snapshot published as it is (not from a cache): everything in it joined."""
    names = frozenset(membership.peers)
    return MembershipUpdate(
        membership, diff_of(Membership(membership.self_name), membership, names), names,
        NodeCounts.of(membership).fields(),
    )  # fmt: skip

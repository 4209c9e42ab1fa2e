"""The `MembershipFeed` seam: where the composition root gets the membership from, and a fixed one.

`MembershipSource` (the Node watch) is the real feed. `FixedMembership` is a feed that changes only when
told: `--discovery none` (this node alone) and tests that build nodes with the production builder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

from sidecar.membership import Membership, MembershipChange, diff


class MembershipFeed(Protocol):
    @property
    def current(self) -> Membership | None:
        """The latest membership; None before the first one."""

    async def run(self, *, task_status: TaskStatus[Membership] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the cluster until cancelled; started with the first membership. Configuration errors
        (`ClusterConfigError`, `TopologyConfigError`) raise from here."""

    def subscribe(self) -> AsyncIterator[tuple[Membership, MembershipChange]]:
        """(membership, change) for every new snapshot, starting with the current one."""


class FixedMembership:
    def __init__(self, membership: Membership) -> None:
        self._current = membership
        self._changed: anyio.Event | None = None

    @property
    def current(self) -> Membership:
        return self._current

    async def run(self, *, task_status: TaskStatus[Membership] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started(self._current)

    def set(self, membership: Membership) -> None:
        """A new snapshot (tests: a node joins or leaves)."""
        self._current = membership
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def subscribe(self) -> AsyncIterator[tuple[Membership, MembershipChange]]:
        seen = Membership(self._current.self_name)
        while True:
            current = self._current
            if current is not seen:
                change, seen = diff(seen, current), current
                yield current, change
                continue
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

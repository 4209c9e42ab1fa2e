"""What the debug endpoint and the metrics read from a running node: `NodeView`, which the composition
root (`sidecar.serve.NodeParts`) builds before the registry handler that serves the debug pages. Read-only."""

from __future__ import annotations

from typing import Protocol

from sidecar.caps.pacer import TierCaps
from sidecar.containerd import Store
from sidecar.membership import Membership
from sidecar.registry import Relay
from sidecar.registry.crossing import CrossingGate
from sidecar.registry.peerstats import PeerBook
from sidecar.registry.speeds import SpeedBook
from sidecar.routing.router import Router
from sidecar.security import LimitReporter
from sidecar.settings import ServeSettings
from sidecar.topology.policy import TopologyPolicy


class NodeView(Protocol):
    @property
    def settings(self) -> ServeSettings: ...

    @property
    def store(self) -> Store: ...

    @property
    def policy(self) -> TopologyPolicy: ...

    @property
    def router(self) -> Router | None: ...

    @property
    def relay(self) -> Relay: ...

    @property
    def book(self) -> PeerBook: ...

    @property
    def limits(self) -> LimitReporter: ...

    @property
    def speeds(self) -> SpeedBook: ...

    @property
    def caps(self) -> TierCaps: ...

    @property
    def crossing(self) -> CrossingGate | None: ...

    @property
    def config_warnings(self) -> list[str]: ...

    def current_membership(self) -> Membership | None: ...

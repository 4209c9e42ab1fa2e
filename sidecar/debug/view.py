"""What the debug endpoint and the metrics read from a running node: `NodeView`, which `serve.Node`
satisfies as it is (tests build one by hand). Read-only, except `handler`'s two hook fields."""

from __future__ import annotations

from typing import Any, Protocol

from sidecar.containerd import Store
from sidecar.membership import Membership
from sidecar.registry import RegistryHandler
from sidecar.registry.peerstats import PeerBook
from sidecar.security import LimitReporter
from sidecar.topology.policy import TopologyPolicy


class NodeView(Protocol):
    @property
    def store(self) -> Store: ...

    @property
    def handler(self) -> RegistryHandler: ...

    @property
    def policy(self) -> TopologyPolicy: ...

    @property
    def settings(self) -> dict[str, Any]: ...

    @property
    def router(self) -> Any: ...  # a `Router`; the one-hop one also has `.service.store` (HolderStore)

    @property
    def book(self) -> PeerBook: ...

    @property
    def config_warnings(self) -> list[str]: ...

    @property
    def limits(self) -> LimitReporter: ...

    def current_membership(self) -> Membership | None: ...

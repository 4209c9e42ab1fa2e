"""`lokal serve`: assemble the store, the registry endpoint and the HTTP server, and run them until
SIGTERM, which drains in-flight responses (bounded) and exits 0.

Rules:
- Startup logs one `config` line with the effective settings; nothing secret is in it.
- The parts are built here and nowhere else; each part takes plain values, never the settings dict.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any

import anyio

from sidecar.containerd import ContainerdStore, Store
from sidecar.http import HttpServer, ServerLimits
from sidecar.logs import get_logger, log_event
from sidecar.registry import RegistryHandler, Relay, RouteConfig

log = get_logger("serve")


@dataclass
class Node:
    """One running lokal: what `lokal status`, the tests and the lab inspect."""

    store: Store
    handler: RegistryHandler
    server: HttpServer
    settings: dict[str, Any] = field(default_factory=dict)


def build_node(settings: dict[str, Any], store: Store | None = None) -> Node:
    if store is None:
        store = ContainerdStore(
            settings["containerd_socket"],
            namespace=settings["containerd_namespace"],
            content_root=settings["content_root"],
        )
    routes = RouteConfig(
        mirrored_registries=settings["mirrored_registries"],
        resolve_tags=settings["resolve_tags"],
        resolve_latest=settings["resolve_latest"],
    )
    handler = RegistryHandler(store, routes, Relay(), readiness=_readiness(store))
    limits = ServerLimits(
        header_timeout=settings["header_timeout"],
        idle_timeout=settings["idle_timeout"],
        max_connections=settings["max_connections"],
        drain_timeout=settings["drain_timeout"],
    )
    return Node(store, handler, HttpServer(handler, limits), settings)


def _readiness(store: Store):  # type: ignore[no-untyped-def]
    async def check() -> tuple[bool, dict[str, object]]:
        reachable = await store.ready()
        details: dict[str, object] = {"containerd": "connected" if reachable else "unreachable"}
        absent = getattr(store, "absent_blobs", 0)
        if absent:
            details["warnings"] = [
                f"{absent} layers named by local manifests are absent: is discard_unpacked_layers on?"
            ]
        return reachable, details

    return check


async def run_node(node: Node) -> None:
    settings = node.settings
    log_event(log, "config", **{k: v for k, v in settings.items() if v is not None})
    async with anyio.create_task_group() as tg:
        run = getattr(node.store, "run", None)
        if run is not None:
            await tg.start(run)
        await tg.start(node.server.serve, settings["listen"])
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log_event(log, "shutdown", signal=signal.Signals(signum).name)
                break
        await node.server.shutdown()
        tg.cancel_scope.cancel()
    close = getattr(node.store, "aclose", None)
    if close is not None:
        await close()
    log_event(log, "stopped")

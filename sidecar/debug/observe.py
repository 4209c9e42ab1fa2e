"""Observability of a node: `observe` at build time, `start_observability` once serving.

The composition root makes the node's `Metrics` (own registry) first, so that the limit reporter and the
refusal log count into it from birth; `observe(view, metrics)` then makes the pull observer and the
operator endpoint, which the root hands to the registry handler it builds next. `start_observability`
logs the configuration warnings and, with `--metrics-listen`, serves `/metrics` on that address too (an
address that cannot be bound raises `OSError`, which the caller reports naming the setting).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from anyio.abc import TaskGroup

from sidecar.debug.crossing import CrossingCollector, crossing_state
from sidecar.debug.endpoint import OperatorEndpoint, metrics_only
from sidecar.debug.status import node_state
from sidecar.debug.view import NodeView
from sidecar.debug.warnings import settings_warnings
from sidecar.http import HttpServer, ServerLimits
from sidecar.logs import get_logger, log_event
from sidecar.metrics import Metrics, NodeStateCollector, PullMetrics

log = get_logger("serve")


@dataclass
class Observability:
    metrics: Metrics
    pulls: PullMetrics
    endpoint: OperatorEndpoint
    metrics_server: HttpServer | None = None


def observe(node: NodeView, metrics: Metrics) -> Observability:
    pulls = PullMetrics(metrics, node.current_membership)
    metrics.registry.register(NodeStateCollector(lambda: node_state(node)))
    metrics.registry.register(CrossingCollector(lambda: crossing_state(node)))
    endpoint = OperatorEndpoint(node, metrics, pulls.tally)
    return Observability(metrics, pulls, endpoint)


async def start_observability(node: NodeView, observability: Observability, tg: TaskGroup) -> None:
    for warning in settings_warnings(node.settings):
        log_event(log, "config_warning", logging.WARNING, warning=warning)
    listen = node.settings.metrics_listen
    if listen:
        server = HttpServer(metrics_only(observability.metrics), ServerLimits(header_timeout=10))
        await tg.start(server.serve, listen)
        observability.metrics_server = server

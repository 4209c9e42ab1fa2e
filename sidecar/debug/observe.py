"""Wiring observability into a node: `observe` at build time, `start_observability` once serving.

`observe(node)` makes the node's metrics (own registry), the pull observer and the operator endpoint,
and hooks them into `node.handler` (`pull_observer`, `operator_handler`) and `node.limits` (`on_hit`).
`start_observability` logs the configuration warnings and, with `--metrics-listen`, serves `/metrics`
on that address too.
"""

from __future__ import annotations

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


def observe(node: NodeView) -> Observability:
    metrics = Metrics()
    pulls = PullMetrics(metrics, node.current_membership)
    metrics.registry.register(NodeStateCollector(lambda: node_state(node)))
    metrics.registry.register(CrossingCollector(lambda: crossing_state(node)))
    endpoint = OperatorEndpoint(node, metrics, pulls.tally)
    node.handler.pull_observer = pulls
    node.limits.on_hit = metrics.limit_hit
    node.handler.refusals.on_refused = metrics.refusal
    node.handler.operator_handler = endpoint
    return Observability(metrics, pulls, endpoint)


async def start_observability(node: NodeView, observability: Observability, tg: TaskGroup) -> None:
    for warning in settings_warnings(node.settings):
        log_event(log, "config_warning", level=30, warning=warning)
    listen = node.settings.get("metrics_listen")
    if listen:
        server = HttpServer(metrics_only(observability.metrics), ServerLimits(header_timeout=10))
        await tg.start(server.serve, listen)
        observability.metrics_server = server

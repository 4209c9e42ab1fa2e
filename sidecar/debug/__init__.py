"""The operator's view of a running node: `/metrics`, `/_lokal/debug/{status,where}` (loopback only),
configuration warnings, and the wiring that hooks them into `lokal serve` (`observe`)."""

from sidecar.debug.endpoint import OperatorEndpoint, metrics_only
from sidecar.debug.observe import Observability, observe, start_observability
from sidecar.debug.where import BadTarget, parse_target, plan_sources

__all__ = [
    "BadTarget", "Observability", "OperatorEndpoint", "metrics_only", "observe", "parse_target",
    "plan_sources", "start_observability",
]

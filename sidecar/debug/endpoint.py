"""The operator's HTTP endpoints on lokal's listener: `/metrics` (loopback and members, as `admit` says),
and `/_lokal/debug/status`, `/_lokal/debug/where?ref=IMAGE|DIGEST` for `lokal status` and `lokal where`.

Rules:
- The debug paths answer loopback clients only: they name nodes and addresses, and `where` makes lookups.
- Answers are JSON (`application/json`); a bad `ref` is a 400 whose `error` says why, never a crash.
- `metrics_only` is the handler of the optional `--metrics-listen` server: `/metrics` and nothing else.
"""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from sidecar.debug.status import status_report
from sidecar.debug.view import NodeView
from sidecar.debug.where import BadTarget, where_report
from sidecar.http.messages import Handler, Request, Response
from sidecar.metrics import Metrics
from sidecar.metrics.tally import PullTally
from sidecar.registry.routes import OperatorCall
from sidecar.topology.admission import is_loopback

JSON = "application/json"
MAX_REF = 512


class OperatorEndpoint:
    def __init__(self, node: NodeView, metrics: Metrics, tally: PullTally) -> None:
        self.node, self.metrics, self.tally = node, metrics, tally

    async def __call__(self, request: Request, call: OperatorCall) -> Response:
        if call.kind == "metrics":
            return metrics_response(self.metrics)
        if not is_loopback(request.client[0]):
            return _json(403, {"error": "the debug endpoint answers loopback clients only"})
        if call.path == "status":
            return _json(200, status_report(self.node, self.tally, time.monotonic()))
        if call.path == "where":
            refs = request.query.get("ref", [])
            if len(refs) != 1 or not refs[0] or len(refs[0]) > MAX_REF:
                return _json(400, {"error": "give exactly one ref=IMAGE|DIGEST"})
            try:
                return _json(200, await where_report(self.node, refs[0]))
            except BadTarget as exc:
                return _json(400, {"error": str(exc)})
        return _json(404, {"error": f"no debug page {call.path[:60]!r} (status, where)"})


def metrics_response(metrics: Metrics) -> Response:
    return Response(200, [("Content-Type", CONTENT_TYPE_LATEST)], metrics.exposition())


def metrics_only(metrics: Metrics) -> Handler:
    async def handle(request: Request) -> Response:
        if request.path != "/metrics":
            return Response(404, [("Content-Type", "text/plain")], b"only /metrics here\n")
        if request.method not in ("GET", "HEAD"):
            return Response(405, [("Content-Type", "text/plain"), ("Allow", "GET, HEAD")], b"")
        return metrics_response(metrics)

    return handle


def _json(status: int, document: dict[str, Any]) -> Response:
    body = json.dumps(document, separators=(",", ":"), default=str).encode()
    return Response(status, [("Content-Type", JSON)], body)

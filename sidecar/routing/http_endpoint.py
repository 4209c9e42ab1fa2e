"""The peer protocol's HTTP face: `POST /_lokal/v1/{advertise,lookup,fetching}` onto the holder-side service.

Status codes: 200 with the reply; 400 malformed; 413 too large; 403 not a member (the sender is known
only by its source address); 405 for another method; 404 for another path.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from sidecar.http.messages import Request, Response
from sidecar.oci import ErrorCode, oci_error
from sidecar.routing.protocol import CONTENT_TYPE, ProtocolError
from sidecar.routing.service import IndexService, NotAMember
from sidecar.topology.admission import normalize_address


def peer_endpoint(
    index: IndexService, clock: Callable[[], float] = time.monotonic
) -> Callable[[Request, str], Awaitable[Response]]:
    async def handle(request: Request, path: str) -> Response:
        if path not in ("advertise", "lookup", "fetching"):
            return oci_error(404, ErrorCode.UNSUPPORTED, f"unknown peer call {path[:40]!r}")
        if request.method != "POST":
            return oci_error(405, ErrorCode.UNSUPPORTED, "peer calls are POST")
        source = normalize_address(request.client[0]) or ""
        try:
            if path == "advertise":
                reply = index.handle_advertise(source, request.body, clock())
            elif path == "fetching":
                reply = index.handle_fetching(source, request.body, clock())
            else:
                reply = index.handle_lookup(source, request.body, clock())
        except NotAMember as exc:
            return oci_error(403, ErrorCode.DENIED, str(exc))
        except ProtocolError as exc:
            return oci_error(exc.status, ErrorCode.UNSUPPORTED, str(exc))
        return Response(200, [("Content-Type", CONTENT_TYPE)], reply)

    return handle



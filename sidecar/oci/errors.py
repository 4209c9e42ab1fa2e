"""Distribution-spec errors: the body `{"errors": [{"code", "message", "detail"}]}` and the one response
that carries it (every OCI and peer-protocol error lokal answers goes through `oci_error`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum

from sidecar.http.messages import Response


class ErrorCode(StrEnum):
    BLOB_UNKNOWN = "BLOB_UNKNOWN"
    MANIFEST_UNKNOWN = "MANIFEST_UNKNOWN"
    NAME_INVALID = "NAME_INVALID"
    NAME_UNKNOWN = "NAME_UNKNOWN"
    DIGEST_INVALID = "DIGEST_INVALID"
    UNSUPPORTED = "UNSUPPORTED"
    DENIED = "DENIED"
    RANGE_INVALID = "RANGE_INVALID"


def error_body(code: ErrorCode, message: str, detail: object = None) -> bytes:
    entry: dict[str, object] = {"code": code.value, "message": message}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}, separators=(",", ":")).encode()


def oci_error(
    status: int, code: ErrorCode, message: str, headers: Sequence[tuple[str, str]] = ()
) -> Response:
    return Response(status, [*headers, ("Content-Type", "application/json")], error_body(code, message))

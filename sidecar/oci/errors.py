"""Distribution-spec error bodies: `{"errors": [{"code", "message", "detail"}]}`."""

from __future__ import annotations

import json
from enum import StrEnum


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

"""The CLI side of the debug endpoint: GET a JSON page from the local `lokal serve` (stdlib http.client).

Rules:
- Loopback only: `--server` must name 127.0.0.0/8, ::1 or localhost; the endpoint refuses others anyway.
- The default server is the local lokal: 127.0.0.1 and the port of `LOKAL_LISTEN` (else 5050).
- Every failure is a `DebugClientError` whose message says what to check; bounded by `timeout`.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from sidecar.hosts.settings import SettingError, parse_listen
from sidecar.topology.admission import is_loopback

DEFAULT_PORT = 5050


class DebugClientError(Exception):
    pass


def default_server(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    try:  # the same reading of LOKAL_LISTEN as lokal serve's
        port = parse_listen(env["LOKAL_LISTEN"], "LOKAL_LISTEN")[1]
    except (KeyError, SettingError):
        port = DEFAULT_PORT
    return f"http://127.0.0.1:{port}"


def parse_server(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise DebugClientError(f"--server {url!r}: only http:// is served by lokal")
    host = parts.hostname or ""
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise DebugClientError(f"--server {url!r}: bad port") from None
    if host != "localhost" and not is_loopback(host):
        raise DebugClientError(f"--server {url!r}: the debug endpoint answers loopback only "
                               "(run this on the node, e.g. kubectl exec into its lokal pod)")
    return host, port


def fetch_json(server: str, page: str, query: Mapping[str, str] | None = None,
               timeout: float = 10.0) -> dict[str, Any]:
    """GET /_lokal/debug/<page>; the JSON document, or DebugClientError with the server's reason."""
    host, port = parse_server(server)
    path = f"/_lokal/debug/{page}" + (f"?{urlencode(query)}" if query else "")
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read(16 * 1024 * 1024)
    except (OSError, http.client.HTTPException) as exc:
        raise DebugClientError(f"cannot reach lokal at {server}: {exc} (is `lokal serve` running?)") from None
    finally:
        connection.close()
    try:
        document = json.loads(body)
    except ValueError:
        raise DebugClientError(f"{server} answered {response.status} without JSON: is it lokal?") from None
    if response.status != 200 or not isinstance(document, dict):
        reason = document.get("error") if isinstance(document, dict) else None
        if reason is None and isinstance(document, dict) and document.get("errors"):
            reason = document["errors"][0].get("message")
        raise DebugClientError(f"{server} answered {response.status}: {reason or body[:200]!r}")
    return document

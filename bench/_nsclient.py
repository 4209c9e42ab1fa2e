"""A small HTTP client that the lab benchmarks run *inside* a node's network namespace.

    ip netns exec NS python bench/_nsclient.py '{"op": "fetch", ...}'   # prints one JSON object

Standard library only, so that it starts fast and depends on nothing but the interpreter. It does the
timing itself (time.perf_counter around each request), so that process start-up and `ip netns exec`
never count.

Ops:
- `fetch`: GET `url` `count` times over one keep-alive connection, reading the body into a reused buffer
  (no hashing: the client should cost as little CPU as it can); per fetch: seconds, bytes, status.
- `miss`: GET `/v2/<repo>/blobs/<digest>?ns=<registry>` (as containerd asks a mirror) for `count`
  random digests nobody has; per request: seconds to
  the whole response (status and body read) and the status. `fresh` opens a new connection per request
  (as a client without keep-alive); otherwise one connection is reused. `workers` > 1 runs that many
  connections at once, each doing `count` requests (threads).

Rules: every op is bounded by its count and by `deadline_s`; the output is JSON on stdout.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

BUFFER = 1 << 20


def _connect(host: str, port: int, timeout: float) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.connect()
    return conn


def fetch(spec: dict[str, Any]) -> dict[str, Any]:
    parts = urlsplit(spec["url"])
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    headers = dict(spec.get("headers", {}))
    deadline = time.monotonic() + float(spec.get("deadline_s", 120))
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    rows = []
    conn = _connect(host, port, float(spec.get("timeout_s", 60)))
    try:
        for _ in range(int(spec["count"])):
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            conn.request("GET", f"{parts.path}?{parts.query}" if parts.query else parts.path, headers=headers)
            response = conn.getresponse()
            received = 0
            while True:
                n = response.readinto(view)
                if not n:
                    break
                received += n
            rows.append({"status": response.status, "bytes": received, "s": time.perf_counter() - started})
    finally:
        conn.close()
    return {"fetches": rows}


def _miss_worker(spec: dict[str, Any], rows: list[dict[str, Any]], deadline: float) -> None:
    host, port = spec["host"], int(spec["port"])
    timeout = float(spec.get("timeout_s", 10))
    fresh = bool(spec.get("fresh", False))
    accept = "application/vnd.oci.image.layer.v1.tar+gzip, */*"
    conn: http.client.HTTPConnection | None = None
    try:
        for _ in range(int(spec["count"])):
            if time.monotonic() > deadline:
                break
            digest = "sha256:" + os.urandom(32).hex()
            path = f"/v2/{spec['repo']}/blobs/{digest}?ns={spec['ns']}"
            started = time.perf_counter()
            if conn is None:
                conn = _connect(host, port, timeout)
            try:
                conn.request("GET", path, headers={"Accept": accept})
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = None
            rows.append({"status": status, "s": time.perf_counter() - started})
            if fresh and conn is not None:
                conn.close()
                conn = None
    finally:
        if conn is not None:
            conn.close()


def miss(spec: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + float(spec.get("deadline_s", 60))
    workers = int(spec.get("workers", 1))
    per_worker: list[list[dict[str, Any]]] = [[] for _ in range(workers)]
    threads = [
        threading.Thread(target=_miss_worker, args=(spec, per_worker[i], deadline), daemon=True)
        for i in range(workers)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 5)
    wall = time.perf_counter() - started
    return {"requests": [row for rows in per_worker for row in rows], "wall_s": wall}


def main() -> int:
    spec = json.loads(sys.argv[1])
    op = spec.get("op")
    if op == "fetch":
        result = fetch(spec)
    elif op == "miss":
        result = miss(spec)
    else:
        print(json.dumps({"error": f"unknown op {op!r}"}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A small HTTP client that lives inside one lab namespace and takes orders on stdin (one JSON line per
order, one JSON line back per order), so that tests can send many requests from inside the lab without
starting a process per request, and without sending a packet from the root namespace.

Standard library only: it runs as `ip netns exec NS python agent.py`.

Orders:
  {"op": "http", "host", "port", "method", "path", "headers": {..}, "body_b64": "...", "timeout": s,
   "read_bps": optional bytes/s (a slow reader keeps the server's send blocked), "keep_body": bool}
    -> {"status", "headers": {lower-case name: value}, "length" (Content-Length or null), "received",
        "complete" (received == length, or the server closed a length-less body), "sha256", "body_b64"?,
        "wellformed", "error"?}
  {"op": "raw", "host", "port", "data_b64", "timeout"}: send bytes, half-close, read to EOF
    -> {"wellformed" (empty reply, or a parseable status line and header block), "status" or null,
        "received", "error"?}
  {"op": "quit"}

Rules: every socket has a timeout; every read is bounded (64 MiB); one order at a time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import sys
import time
from typing import Any

MAX_READ = 64 * 1024 * 1024
_STATUS = re.compile(rb"^HTTP/1\.[01] ([1-5][0-9][0-9])(?: [^\r\n]*)?$")
_HEADER = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[ \t]*[^\r\n]*$")


def parse_head(head: bytes) -> tuple[int | None, dict[str, str], bool]:
    """(status, headers, well-formed) of a response head (without the blank line)."""
    lines = head.split(b"\r\n")
    match = _STATUS.match(lines[0])
    if match is None:
        return None, {}, False
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not _HEADER.match(line):
            return int(match[1]), headers, False
        name, _, value = line.partition(b":")
        headers[name.decode().lower()] = value.strip().decode("latin-1")
    return int(match[1]), headers, True


def _connect(order: dict[str, Any]) -> socket.socket:
    family = socket.AF_INET6 if ":" in order["host"] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(float(order.get("timeout", 10.0)))
    sock.connect((order["host"], int(order["port"])))
    return sock


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > 1 << 20:
            break
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def http(order: dict[str, Any]) -> dict[str, Any]:
    method = order.get("method", "GET")
    body = base64.b64decode(order.get("body_b64", "")) if order.get("body_b64") else b""
    headers = {"Host": f"{order['host']}:{order['port']}", "Connection": "close", **order.get("headers", {})}
    if body or method in ("POST", "PUT"):
        headers["Content-Length"] = str(len(body))
    request = f"{method} {order['path']} HTTP/1.1\r\n".encode()
    request += b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n" + body
    result: dict[str, Any] = {
        "status": None,
        "headers": {},
        "length": None,
        "received": 0,
        "complete": False,
        "sha256": None,
        "wellformed": False,
    }
    hasher = hashlib.sha256()
    kept = bytearray()
    try:
        with _connect(order) as sock:
            sock.sendall(request)
            head, rest = _read_head(sock)
            status, response_headers, wellformed = parse_head(head)
            result.update(status=status, headers=response_headers, wellformed=wellformed)
            length_text = response_headers.get("content-length")
            length = int(length_text) if length_text and length_text.isdigit() else None
            result["length"] = length
            if method == "HEAD":
                rest = b""
                length = 0
            received = 0
            read_bps = order.get("read_bps")
            chunk = rest
            while True:
                if chunk:
                    hasher.update(chunk)
                    received += len(chunk)
                    if order.get("keep_body") and len(kept) < MAX_READ:
                        kept += chunk
                if length is not None and received >= length:
                    break
                if received > MAX_READ:
                    break
                size = 65536
                if read_bps:
                    size = 16384
                    time.sleep(size / float(read_bps))
                chunk = sock.recv(size)
                if not chunk:
                    break
            result["received"] = received
            result["complete"] = received == length if length is not None else True
    except OSError as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["received"] = result.get("received") or 0
    result["sha256"] = "sha256:" + hasher.hexdigest()
    if order.get("keep_body"):
        result["body_b64"] = base64.b64encode(bytes(kept)).decode()
    return result


def raw(order: dict[str, Any]) -> dict[str, Any]:
    data = base64.b64decode(order["data_b64"])
    received = b""
    result: dict[str, Any] = {"status": None, "wellformed": False, "received": 0}
    try:
        with _connect(order) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while len(received) < MAX_READ:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
    except OSError as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["received"] = len(received)
    if not received:
        result["wellformed"] = "error" not in result or "reset" in result.get("error", "").lower()
        return result
    head, sep, _ = received.partition(b"\r\n\r\n")
    status, _, wellformed = parse_head(head)
    result.update(status=status, wellformed=wellformed and bool(sep))
    return result


def main() -> int:
    for line in sys.stdin:
        order = json.loads(line)
        op = order.get("op")
        if op == "quit":
            break
        if op == "http":
            reply = http(order)
        elif op == "raw":
            reply = raw(order)
        else:
            reply = {"error": f"unknown op {op!r}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

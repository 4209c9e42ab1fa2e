"""A tiny TCP echo server and client, run inside lab namespaces by the lab tests (`ip netns exec`).

    python echo.py serve ADDR PORT READY_FILE MAX_CONNECTIONS   # exits after MAX_CONNECTIONS or 60 s
    python echo.py send ADDR PORT NBYTES                         # prints JSON: bytes, sha256 match, seconds

Bounded on purpose: the server stops by itself, the client sends a fixed number of bytes with a timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import time

TIMEOUT = 60.0


def serve(addr: str, port: int, ready: str, max_connections: int) -> None:
    srv = socket.create_server((addr, port))
    srv.settimeout(TIMEOUT)
    with open(ready, "w") as f:
        f.write("ready\n")
    threads = []
    for _ in range(max_connections):
        conn, peer = srv.accept()
        print(f"peer {peer[0]}", flush=True)  # the source address the server saw
        t = threading.Thread(target=_echo, args=(conn,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join(TIMEOUT)


def _echo(conn: socket.socket) -> None:
    conn.settimeout(TIMEOUT)
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def send(addr: str, port: int, nbytes: int) -> None:
    payload = os.urandom(nbytes)
    started = time.monotonic()
    with socket.create_connection((addr, port), timeout=TIMEOUT) as sock:
        first = time.monotonic()
        received = bytearray()

        def writer() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=writer)
        t.start()
        while chunk := sock.recv(65536):
            received += chunk
        t.join(TIMEOUT)
    print(
        json.dumps(
            {
                "bytes": len(received),
                "intact": hashlib.sha256(received).digest() == hashlib.sha256(payload).digest(),
                "connect_seconds": first - started,
                "seconds": time.monotonic() - started,
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))

"""A client that fetches one blob the way containerd 2.1 does with concurrent_layer_fetch_buffer set.

containerd 2.1 (core/remotes/docker/fetcher.go) asks for the blob with `Range: bytes=0-`, learns its size,
then fetches chunk i (i >= 1) with an open-ended `Range: bytes=i*CHUNK-`, a few at a time, and hangs up on
each request once it has read its chunk. This module does exactly that over plain sockets, so tests and
benchmarks can drive lokal with 2.1's pattern without a containerd, from inside a lab namespace too:

    python -m lokal_lab.chunked_fetch URL --chunk 1048576 --parallel 3 --out FILE   # prints JSON

Rules:
- Every request is a fresh connection, closed right after its chunk (what containerd does), so the server
  sees a client hanging up mid-body on every chunk but the last.
- `rcvbuf` (SO_RCVBUF before connecting) bounds what this client's kernel takes in beyond what it reads:
  tests use it to bound how many bytes a server can honestly count for one chunk.
- The chunks are written at their offsets, so the output is byte-exact or the fetch failed.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class ChunkFailed(RuntimeError):
    pass


@dataclass
class ChunkedFetch:
    host: str
    port: int
    path: str
    chunk: int = 1 << 20
    parallel: int = 3
    rcvbuf: int | None = None
    timeout: float = 30.0
    statuses: list[int] = field(default_factory=list)

    def fetch(self) -> bytes:
        """The whole blob, fetched in chunks; ChunkFailed when any chunk does not arrive whole."""
        size, first = self._get(0, self.chunk)
        data = bytearray(size)
        data[: len(first)] = first
        offsets = list(range(self.chunk, size, self.chunk))
        errors: list[BaseException] = []
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if not offsets or errors:
                        return
                    offset = offsets.pop(0)
                try:
                    _, body = self._get(offset, min(self.chunk, size - offset))
                except BaseException as exc:
                    with lock:
                        errors.append(exc)
                    return
                data[offset : offset + len(body)] = body

        threads = [threading.Thread(target=worker) for _ in range(max(1, self.parallel))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise ChunkFailed(str(errors[0])) from errors[0]
        return bytes(data)

    def _get(self, offset: int, want: int) -> tuple[int, bytes]:
        """GET with `Range: bytes=offset-`, read `want` body bytes, hang up. (whole size, the bytes)"""
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            if self.rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            request = f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nRange: bytes={offset}-\r\n\r\n"
            sock.sendall(request.encode())
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                more = sock.recv(65536)
                if not more:
                    raise ChunkFailed(f"connection closed before the headers (offset {offset})")
                buffer += more
            head, _, body = buffer.partition(b"\r\n\r\n")
            status, headers = _parse_head(head)
            self.statuses.append(status)
            if status != 206:
                raise ChunkFailed(f"status {status} for bytes={offset}-")
            size = int(headers["content-range"].rpartition("/")[2])
            if offset == 0:
                want = min(want, size)
            parts = [body[:want]]
            got = len(parts[0])
            while got < want:
                more = sock.recv(min(65536, want - got))
                if not more:
                    raise ChunkFailed(f"body ended at {offset + got}, wanted {offset + want}")
                parts.append(more)
                got += len(more)
            # Hang up now, with the rest of the body unread, as containerd does.
            return size, b"".join(parts)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--chunk", type=int, default=1 << 20)
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--rcvbuf", type=int, default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    path = url.path + (f"?{url.query}" if url.query else "")
    fetch = ChunkedFetch(url.hostname or "", url.port or 80, path, args.chunk, args.parallel, args.rcvbuf)
    try:
        data = fetch.fetch()
    except (ChunkFailed, OSError) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 1
    with open(args.out, "wb") as out:
        out.write(data)
    print(json.dumps({"ok": True, "size": len(data), "requests": len(fetch.statuses)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

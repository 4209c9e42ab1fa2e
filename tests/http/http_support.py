"""Test support for the HTTP layer: a real HttpServer on 127.0.0.1 in a background event loop, a small
test handler, and raw-socket helpers.

The server runs in an anyio blocking portal (its own thread and loop), so tests talk to it with plain
blocking sockets and parse every answer with h11's client side.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import h11
from anyio.from_thread import BlockingPortal, start_blocking_portal

from sidecar.http import FileBody, HttpServer, Request, Response, ServerLimits, StreamBody

FILE_SIZE = 3 * 1024 * 1024 + 17
SOCKET_TIMEOUT = 10.0


@dataclass
class SampleHandler:
    """Serves bytes, a file (FileBody), streams, failures and slow answers; counts released bodies."""

    file_path: Path
    released: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _note(self, what: str) -> None:
        with self.lock:
            self.released.append(what)

    async def __call__(self, request: Request) -> Response:
        path = request.path
        if path == "/bytes":
            return Response(200, [("content-type", "text/plain")], b"hello world")
        if path == "/file":
            return self._file(FILE_SIZE)
        if path == "/file-short":  # promises more bytes than the file has
            return self._file(FILE_SIZE + 1000)
        if path == "/stream":
            return Response(200, [], self._stream([b"abc"] * 10, length=30))
        if path == "/stream-chunked":
            return Response(200, [], self._stream([b"abc"] * 10, length=None))
        if path == "/stream-fail":
            return Response(200, [], self._stream([b"x" * 30], length=100, fail=True))
        if path == "/stream-fail-chunked":
            return Response(200, [], self._stream([b"x" * 30], length=None, fail=True))
        if path == "/stream-long":  # yields more than its length
            return Response(200, [], self._stream([b"abc"] * 10, length=13))
        if path == "/stream-short":  # ends before its length, without an error
            return Response(200, [], self._stream([b"abc"] * 10, length=31))
        if path == "/bad-header":
            return Response(200, [("x-injected", "a\r\nset-cookie: x")], b"never sent")
        if path == "/stream-fail-first":
            return Response(200, [], self._stream([], length=100, fail=True))
        if path == "/boom":
            raise RuntimeError("handler failed on purpose")
        if path == "/slow":
            self.started.set()
            await anyio.sleep(float(request.query.get("seconds", ["0.3"])[0]))
            return Response(200, [], b"slow answer")
        if path == "/echo":
            text = f"{request.method} {request.target} {request.header('range')} {request.client[0]}"
            return Response(200, [("x-client-port", str(request.client[1]))], text.encode() + request.body)
        return Response(404, [("content-type", "text/plain")], b"not found\n")

    def _file(self, length: int) -> Response:
        fd = os.open(self.file_path, os.O_RDONLY)

        def close() -> None:
            os.close(fd)
            self._note("file")

        return Response(200, [("content-type", "application/octet-stream")], FileBody(fd, 0, length, close))

    def _stream(self, chunks: list[bytes], length: int | None, fail: bool = False) -> StreamBody:
        async def produce() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk
                await anyio.lowlevel.checkpoint()
            if fail:
                raise RuntimeError("stream failed on purpose")

        gen = produce()

        async def aclose() -> None:
            await gen.aclose()
            self._note("stream")

        return StreamBody(gen, length, aclose)


@dataclass
class RunningServer:
    server: HttpServer
    handler: SampleHandler
    port: int
    portal: BlockingPortal

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=SOCKET_TIMEOUT)

    def shutdown(self) -> None:
        self.portal.call(self.server.shutdown)


@contextmanager
def run_server(handler: SampleHandler, limits: ServerLimits | None = None) -> Iterator[RunningServer]:
    """Start an HttpServer on 127.0.0.1 (a free port); shut it down on exit, on failure too."""
    with start_blocking_portal() as portal:
        server = HttpServer(handler, limits)
        future, (_, port) = portal.start_task(server.serve, ("127.0.0.1", 0))
        try:
            yield RunningServer(server, handler, port, portal)
        finally:
            portal.call(server.shutdown)
            future.result(timeout=30)


# ---- raw-socket client helpers -------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    http_version: str

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


class TruncatedAnswer(Exception):
    """The server closed the connection in the middle of an answer."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"answer {status} cut after {len(body)} body bytes")
        self.status = status
        self.body = body


def request_bytes(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "1.1",
) -> bytes:
    lines = [f"{method} {target} HTTP/{version}"]
    if version == "1.1":
        lines.append("host: 127.0.0.1")
    lines += [f"{k}: {v}" for k, v in headers or []]
    if body:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class AnswerReader:
    """Reads successive answers from one socket, each parsed by a fresh h11 client."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.leftover = b""
        self.eof = False

    def read(self, method: str = "GET") -> Answer | None:
        """The next answer, None if the server closed cleanly before one; TruncatedAnswer if cut."""
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        got_bytes = bool(self.leftover)
        if self.leftover:  # (receive_data(b"") would mean end of stream)
            conn.receive_data(self.leftover)
        self.leftover = b""
        head: h11.Response | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                if head is not None and self.eof:
                    raise TruncatedAnswer(head.status_code, bytes(body)) from None
                if head is None and self.eof and not got_bytes:
                    return None  # closed cleanly before any byte of an answer
                raise
            if event is h11.NEED_DATA:
                if self.eof:
                    conn.receive_data(b"")
                    continue
                data = self.sock.recv(65536)
                got_bytes = got_bytes or bool(data)
                if not data:
                    self.eof = True
                conn.receive_data(data)
            elif isinstance(event, h11.InformationalResponse):
                got_bytes = False  # a complete interim answer (100 Continue); the final one may not come
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                self.leftover = conn.trailing_data[0]
                return Answer(
                    head.status_code,
                    [(k.decode(), v.decode()) for k, v in head.headers],
                    bytes(body),
                    head.http_version.decode(),
                )
            elif isinstance(event, h11.ConnectionClosed):
                return None

    def at_eof(self) -> bool:
        """Whether the server closed the connection (after the answers already read)."""
        if self.leftover:
            return False
        if self.eof:
            return True
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def exchange(running: RunningServer, raw: bytes, method: str = "GET") -> Answer | None:
    """One request on a new connection; the first answer."""
    with running.connect() as sock:
        sock.sendall(raw)
        return AnswerReader(sock).read(method)

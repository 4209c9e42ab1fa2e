"""The accept loop: owns the listening socket, starts one task per connection, drains on shutdown.

Rules:
- The server owns its listening and accepted sockets (non-blocking stdlib sockets). It closes them all.
- Past `max_connections`, a new connection gets a canned 503 and is closed at once: never queued, never hung.
- Keep-alive connections idle for `idle_timeout` are closed by one sweep task for all of them.
- Shutdown: stop accepting, close idle keep-alive connections, let in-flight responses finish for at most
  `drain_timeout`, then cancel whatever is left. `serve` returns after that.
- No globals: every bit of state lives on the `HttpServer` object.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time

import anyio
import anyio.abc
import anyio.lowlevel

from sidecar.http import framing
from sidecar.http.connection import HttpConnection
from sidecar.http.limits import ServerLimits
from sidecar.http.messages import Handler
from sidecar.logs import get_logger, log_event

# Yield to other tasks after this many accepts in a row.
_ACCEPT_BATCH = 32
# Accept errors that mean "out of resources for now": back off instead of spinning.
_ACCEPT_BACKOFF_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_REFUSAL = framing.canned_response(503, "too many connections")


class HttpServer:
    """An HTTP/1.1 server that calls `handler` for every request."""

    def __init__(self, handler: Handler, limits: ServerLimits | None = None) -> None:
        self.handler = handler
        self.limits = limits or ServerLimits()
        self._logger = get_logger("http")
        self._connections: set[HttpConnection] = set()
        self._address: tuple[str, int] | None = None
        self._draining = False
        self._shutdown_requested: anyio.Event | None = None
        self._all_closed: anyio.Event | None = None
        self._stopped: anyio.Event | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """The (host, port) the server listens on, once `serve` has started."""
        return self._address

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def serve(
        self,
        listen: socket.socket | tuple[str, int],
        *,
        task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on `listen` (a bound socket, or (host, port); port 0 picks one) until `shutdown`.

        `task_status.started` reports the bound (host, port).
        """
        if isinstance(listen, socket.socket):
            listener = listen
        else:
            listener = open_listener(*listen, self.limits.backlog)
        listener.setblocking(False)
        self._shutdown_requested = anyio.Event()
        self._all_closed = anyio.Event()
        self._stopped = anyio.Event()
        try:
            host, port = listener.getsockname()[:2]
            self._address = (host, port)
            async with anyio.create_task_group() as tg:
                accept_scope = anyio.CancelScope()
                tg.start_soon(self._accept_loop, listener, tg, accept_scope)
                tg.start_soon(self._sweep_idle)
                log_event(self._logger, "http_listening", host=host, port=port)
                task_status.started((host, port))
                await self._shutdown_requested.wait()
                accept_scope.cancel()
                self._begin_drain()
                with anyio.move_on_after(self.limits.drain_timeout):
                    await self._all_closed.wait()
                tg.cancel_scope.cancel()
        finally:
            listener.close()
            self._stopped.set()
            log_event(self._logger, "http_stopped")

    async def shutdown(self) -> None:
        """Stop accepting, drain in-flight responses (bounded by `drain_timeout`), and wait for `serve`."""
        self._draining = True
        if self._shutdown_requested is None or self._stopped is None:
            return  # never served
        self._shutdown_requested.set()
        await self._stopped.wait()

    def _begin_drain(self) -> None:
        self._draining = True
        for conn in list(self._connections):
            conn.close_if_idle()
        self._note_closed()

    def _note_closed(self) -> None:
        if self._draining and not self._connections and self._all_closed is not None:
            self._all_closed.set()

    def _is_draining(self) -> bool:
        return self._draining

    async def _accept_loop(
        self, listener: socket.socket, tg: anyio.abc.TaskGroup, scope: anyio.CancelScope
    ) -> None:
        with scope:
            accepted = 0
            while True:
                try:
                    sock, addr = listener.accept()
                except BlockingIOError:
                    accepted = 0
                    await anyio.wait_readable(listener)
                    continue
                except OSError as exc:
                    if exc.errno in _ACCEPT_BACKOFF_ERRNOS:
                        log_event(self._logger, "http_accept_backoff", logging.WARNING, error=str(exc))
                        await anyio.sleep(0.05)
                    continue  # ECONNABORTED and friends: that client is gone, take the next one
                sock.setblocking(False)
                if len(self._connections) >= self.limits.max_connections:
                    _refuse(sock)
                    log_event(self._logger, "http_connection_refused", logging.DEBUG, client=addr[0])
                else:
                    with contextlib.suppress(OSError):  # not TCP (a Unix socket)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    with contextlib.suppress(OSError):
                        # More bytes per sendfile wake-up: less Python per GB (see ServerLimits).
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.send_buffer)
                    client = _client_address(addr)
                    conn = HttpConnection(
                        sock, client, self.handler, self.limits, self._logger, self._is_draining
                    )
                    self._connections.add(conn)
                    tg.start_soon(self._run_connection, conn)
                accepted += 1
                if accepted >= _ACCEPT_BATCH:
                    accepted = 0
                    await anyio.lowlevel.checkpoint()

    async def _sweep_idle(self) -> None:
        """Close keep-alive connections idle for `idle_timeout` (one timer for all of them, instead of
        a cancel scope per wait); a connection goes at most a quarter of the timeout (or 1 s) late."""
        timeout = self.limits.idle_timeout
        tick = min(1.0, timeout / 4)
        while True:
            await anyio.sleep(tick)
            cutoff = time.monotonic() - timeout  # the clock connections stamp their idle waits with
            for conn in list(self._connections):
                conn.close_if_idle(cutoff)

    async def _run_connection(self, conn: HttpConnection) -> None:
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)
            self._note_closed()


def open_listener(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A bound, listening, non-blocking TCP socket on (host, port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _client_address(addr: object) -> tuple[str, int]:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0]), int(addr[1])
    return ("", 0)


def _refuse(sock: socket.socket) -> None:
    """Answer 503 and close without waiting: one non-blocking send, best effort."""
    try:
        with contextlib.suppress(BlockingIOError):
            sock.recv(65536)  # drop a request already here, so close() does not reset our answer
        sock.send(_REFUSAL)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        sock.close()

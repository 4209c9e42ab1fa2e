"""The one HTTP/1.1 client lokal uses to talk to its peers (relay GETs, small JSON POSTs), on h11.

Rules:
- Every call is bounded in time by its arguments: a connect timeout, a time-to-headers timeout, and for
  streamed bodies an optional per-chunk stall timeout. Failures raise a `PeerHttpError` subclass, never a
  bare socket or h11 error, and the connection is then closed.
- Keep-alive connections are pooled per peer (host, port), at most `max_idle_per_peer` each. A connection
  goes back to the pool only after its response was read to the end.
- A pooled connection is peeked at before reuse: one the peer closed or wrote to unasked is dropped. A
  request on one that still fails before any response byte arrived (closed in between) is retried once
  on a fresh connection.
- Response bodies are never buffered without a bound: `post` has `max_response_bytes`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType

import anyio
import h11

from sidecar.http.peer_connection import PeerConnection, open_socket

Headers = Sequence[tuple[str, str]]


class PeerHttpError(Exception):
    """A request to a peer failed (connect, timeout, protocol, or the answer was too large)."""


class PeerConnectError(PeerHttpError):
    """The peer could not be reached."""


class PeerTimeout(PeerHttpError):
    """The peer did not answer (or send body bytes) in time."""


class PeerProtocolError(PeerHttpError):
    """The peer broke the connection or spoke invalid HTTP."""


class ResponseTooLarge(PeerHttpError):
    """The answer's body is larger than the caller allowed."""


class _StaleConnection(Exception):
    """A pooled connection failed before any byte of the answer: safe to retry on a new one."""


@dataclass(slots=True)
class BufferedResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)


class StreamedResponse:
    """An answer whose body is read chunk by chunk. Use as `async with` (or call `aclose`)."""

    def __init__(
        self, client: PeerClient, conn: PeerConnection, status: int, headers: list[tuple[str, str]]
    ) -> None:
        self.status = status
        self.headers = headers
        self._client = client
        self._conn: PeerConnection | None = conn
        self._finished = False

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    async def iter_chunks(
        self, stall_timeout: float | None = None, max_chunk: int | None = None
    ) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive; PeerTimeout if no byte comes for `stall_timeout` seconds.
        `max_chunk` bounds each read (a paced reader keeps the window it opens small).

        A body cut short by the peer raises PeerProtocolError (never a silent short read).
        """
        conn = self._conn
        if conn is None:
            raise PeerProtocolError("response already closed")
        try:
            async for chunk in conn.body_chunks(stall_timeout, max_chunk):
                yield chunk
        except TimeoutError as exc:
            await self.abort()
            raise PeerTimeout(f"peer {_fmt(conn.key)} stalled for {stall_timeout}s") from exc
        except (OSError, h11.ProtocolError) as exc:
            await self.abort()
            raise PeerProtocolError(f"body from {_fmt(conn.key)} broke: {exc}") from exc
        self._finished = True
        await self.aclose()

    def limit_receive_buffer(self, size: int) -> None:
        """Keep the TCP receive window of this answer's connection near `size` bytes, so that a reader
        that paces itself also paces the sender (the kernel would otherwise fill a large buffer at once).
        The connection is not pooled afterwards: its buffer stays small."""
        if self._conn is not None:
            self._conn.shrink_receive_buffer(size)

    async def read(self, max_bytes: int, stall_timeout: float | None = None) -> bytes:
        """The whole body, at most `max_bytes` (ResponseTooLarge past it)."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_chunks(stall_timeout):
            size += len(chunk)
            if size > max_bytes:
                await self.abort()
                raise ResponseTooLarge(f"answer body over {max_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def abort(self) -> None:
        """Close the connection now, whatever is left of the body."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def aclose(self) -> None:
        """Done with this answer: the connection is pooled if the body was read to its end."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._finished and conn.reusable():
            self._client._release(conn)
        else:
            conn.close()

    async def __aenter__(self) -> StreamedResponse:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            await self.abort()
        else:
            await self.aclose()


class PeerClient:
    """HTTP/1.1 requests to peers, with a bounded keep-alive pool per peer address."""

    def __init__(
        self, *, max_idle_per_peer: int = 8, user_agent: str = "lokal", local_host: str | None = None
    ) -> None:
        """`local_host`: the address to connect from (peers know a node by its source address)."""
        if max_idle_per_peer < 0:
            raise ValueError(f"max_idle_per_peer must be >= 0, got {max_idle_per_peer}")
        self._local_host = local_host
        self._max_idle = max_idle_per_peer
        self._user_agent = user_agent
        self._idle: dict[tuple[str, int], list[PeerConnection]] = {}
        self._closed = False

    async def get(
        self,
        host: str,
        port: int,
        target: str,
        headers: Headers = (),
        *,
        connect_timeout: float = 2.0,
        headers_timeout: float = 10.0,
        method: str = "GET",
    ) -> StreamedResponse:
        """Send a GET (or HEAD with `method`) and return once the answer's head is in."""
        return await self._request(
            host,
            port,
            method,
            target,
            headers,
            b"",
            connect_timeout=connect_timeout,
            headers_timeout=headers_timeout,
        )

    async def post(
        self,
        host: str,
        port: int,
        target: str,
        body: bytes,
        headers: Headers = (),
        *,
        content_type: str = "application/json",
        connect_timeout: float = 2.0,
        total_timeout: float = 10.0,
        max_response_bytes: int = 1024 * 1024,
    ) -> BufferedResponse:
        """POST a small body; the whole exchange, connect included, is bounded by `total_timeout`."""
        all_headers = [("content-type", content_type), *headers]
        try:
            with anyio.fail_after(total_timeout):
                response = await self._request(
                    host,
                    port,
                    "POST",
                    target,
                    all_headers,
                    body,
                    connect_timeout=connect_timeout,
                    headers_timeout=total_timeout,
                )
                async with response:
                    data = await response.read(max_response_bytes)
        except TimeoutError as exc:
            raise PeerTimeout(f"POST {target} to {_fmt((host, port))} took over {total_timeout}s") from exc
        return BufferedResponse(response.status, response.headers, data)

    async def aclose(self) -> None:
        """Close every pooled connection; the client can still be used after (it opens new ones)."""
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    async def __aenter__(self) -> PeerClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _request(
        self,
        host: str,
        port: int,
        method: str,
        target: str,
        headers: Headers,
        body: bytes,
        *,
        connect_timeout: float,
        headers_timeout: float,
    ) -> StreamedResponse:
        key = (host, port)
        request = h11.Request(
            method=method,
            target=target,
            headers=[
                ("host", _host_header(host, port)),
                ("user-agent", self._user_agent),
                *([("content-length", str(len(body)))] if method not in ("GET", "HEAD") else []),
                *headers,
            ],
        )
        for _attempt in range(2):
            conn = self._take_idle(key) or await self._connect(key, connect_timeout)
            try:
                return await self._exchange(conn, request, body, headers_timeout)
            except _StaleConnection:
                continue
        raise PeerProtocolError(f"peer {_fmt(key)} closed two connections in a row")

    async def _exchange(
        self, conn: PeerConnection, request: h11.Request, body: bytes, headers_timeout: float
    ) -> StreamedResponse:
        ok = False
        conn.start_exchange()
        method = request.method.decode("ascii")
        try:
            with anyio.fail_after(headers_timeout):
                await conn.send(request)
                if body:
                    await conn.send(h11.Data(data=body))
                await conn.send(h11.EndOfMessage())
                event = await conn.receive_head(method)
            headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers]
            ok = True
            return StreamedResponse(self, conn, event.status_code, headers)
        except TimeoutError as exc:
            raise PeerTimeout(f"no answer head from {_fmt(conn.key)} within {headers_timeout}s") from exc
        except (OSError, h11.ProtocolError) as exc:
            if conn.reused and not conn.received_any:
                raise _StaleConnection from exc
            raise PeerProtocolError(f"request to {_fmt(conn.key)} failed: {exc}") from exc
        finally:
            if not ok:
                conn.close()

    async def _connect(self, key: tuple[str, int], connect_timeout: float) -> PeerConnection:
        try:
            with anyio.fail_after(connect_timeout):
                sock = await open_socket(key[0], key[1], self._local_host)
        except TimeoutError as exc:
            raise PeerConnectError(f"connect to {_fmt(key)} took over {connect_timeout}s") from exc
        except OSError as exc:
            raise PeerConnectError(f"connect to {_fmt(key)} failed: {exc}") from exc
        return PeerConnection(sock, key)

    def _take_idle(self, key: tuple[str, int]) -> PeerConnection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.still_open():
                conn.reused = True
                return conn
            conn.close()
        return None

    def _release(self, conn: PeerConnection) -> None:
        conns = self._idle.setdefault(conn.key, [])
        if len(conns) >= self._max_idle:
            conn.close()
            return
        conns.append(conn)


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers:
        if key == wanted:
            return value
    return None


def _host_header(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _fmt(key: tuple[str, int]) -> str:
    return _host_header(*key)

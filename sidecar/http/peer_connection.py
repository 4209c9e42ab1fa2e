"""One keep-alive client connection to a peer, on a socket we own (like the server's; see sockio).

Rules:
- The socket is a non-blocking stdlib socket: every read is one `recv` that waits only on EAGAIN. anyio's
  stream transport would copy each body byte three more times (its buffer, h11's buffer, h11's event),
  which made a relay cost 0.9 CPU-s per GB before hashing; a raw read costs 0.2.
- h11 frames the request and parses the answer's head, with a fresh parser per exchange. A body with a
  Content-Length is then read straight from the socket; any other body (chunked, or delimited by the
  close) goes through h11.
- A connection may be pooled again only when its answer was read to the exact end, the peer keeps it
  alive, and nothing arrived beyond the answer.
- Socket and h11 failures surface as OSError or h11.ProtocolError; `client.py` maps them to its errors.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
from collections.abc import AsyncIterator

import anyio
import h11

from sidecar.http import sockio
from sidecar.http.framing import has_close_token

RECV_SIZE = 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024  # a peer's answer head is a few hundred bytes
_HEAD_END = b"\r\n\r\n"
# Bounds a send the caller did not bound itself; callers always wrap exchanges in their own timeout.
_SEND_STALL_TIMEOUT = 30.0


class PeerClosed(ConnectionResetError):
    """The peer closed the connection before the head of its answer."""


async def open_socket(host: str, port: int, local_host: str | None = None) -> socket.socket:
    """A connected non-blocking TCP socket; the caller bounds the time with a cancel scope."""
    address = await _resolve(host, port)
    sock = socket.socket(address[0], socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if local_host is not None:
            sock.bind((local_host, 0))
        code = sock.connect_ex(address[1])
        if code == errno.EINPROGRESS:
            await sockio.SocketWaiter().writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
    except BaseException:
        sock.close()
        raise
    return sock


async def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    try:
        literal = ipaddress.ip_address(host)  # peers are InternalIPs: no resolver round trip
    except ValueError:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"{host} has no address") from None
        family, _, _, _, sockaddr = infos[0]
        return family, (str(sockaddr[0]), port)
    family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
    return family, (host, port)


class PeerConnection:
    """A connected socket and the state of the exchange in progress on it."""

    def __init__(self, sock: socket.socket, key: tuple[str, int]) -> None:
        self.sock = sock
        self.key = key
        self.reused = False
        self.received_any = False  # any byte of the current answer (a stale pooled socket has none)
        self.h11 = h11.Connection(h11.CLIENT)
        self._waiter = sockio.SocketWaiter()
        self._buffered = b""  # bytes read past the answer's head: the start of its body
        self._remaining: int | None = None  # body bytes left to read when framed by Content-Length
        self._keep_alive = False
        self._complete = False

    # -- one exchange ---------------------------------------------------------------------------

    def start_exchange(self) -> None:
        self.h11 = h11.Connection(h11.CLIENT)
        self._buffered, self._remaining = b"", None
        self._keep_alive = self._complete = False
        self.received_any = False

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            await sockio.send_all(self.sock, data, _SEND_STALL_TIMEOUT)

    async def receive_head(self, method: str) -> h11.Response:
        """The answer's head (informational answers skipped); its body is then ready to read."""
        while True:
            end = self._buffered.find(_HEAD_END)
            if end < 0:
                if len(self._buffered) > MAX_HEAD_BYTES:
                    raise h11.RemoteProtocolError(f"answer head over {MAX_HEAD_BYTES} bytes")
                data = await self._recv(RECV_SIZE)
                if not data:
                    raise PeerClosed("the peer closed the connection before its answer")
                self._buffered += data
                continue
            cut = end + len(_HEAD_END)
            head, self._buffered = self._buffered[:cut], self._buffered[cut:]
            self.h11.receive_data(head)
            event = self.h11.next_event()
            if type(event) is h11.InformationalResponse:
                continue
            if type(event) is not h11.Response:
                raise h11.RemoteProtocolError(f"expected an answer head, got {type(event).__name__}")
            self._frame_body(event, method)
            return event

    def _frame_body(self, response: h11.Response, method: str) -> None:
        headers = {name: value for name, value in response.headers}
        self._keep_alive = response.http_version == b"1.1" and not has_close_token(
            headers.get(b"connection", b"")
        )
        if method == "HEAD" or response.status_code in (204, 304):
            self._remaining = 0
        elif b"transfer-encoding" not in headers and b"content-length" in headers:
            self._remaining = int(headers[b"content-length"])  # h11 has validated it
        else:  # chunked, or delimited by the close: h11 reads it
            self._keep_alive = False
            self.h11.receive_data(self._buffered)
            self._buffered = b""
        if self._remaining == 0:
            self._complete = not self._buffered

    async def body_chunks(
        self, stall_timeout: float | None, max_chunk: int | None = None
    ) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive, at most `max_chunk` per read. A body cut short raises
        h11.RemoteProtocolError."""
        read_size = min(RECV_SIZE, max_chunk) if max_chunk else RECV_SIZE
        if self._remaining is None:
            async for chunk in self._h11_body(stall_timeout):
                yield chunk
            return
        remaining = self._remaining
        if self._buffered:
            chunk, self._buffered = self._buffered[:remaining], self._buffered[remaining:]
            if self._buffered:
                raise h11.RemoteProtocolError("the peer sent more than its Content-Length")
            remaining -= len(chunk)
            self._remaining = remaining
            yield chunk
        while remaining > 0:
            chunk = await self._recv(min(read_size, remaining), stall_timeout)
            if not chunk:
                raise h11.RemoteProtocolError(f"the body ended {remaining} bytes short")
            remaining -= len(chunk)
            self._remaining = remaining
            yield chunk
        self._complete = True

    async def _h11_body(self, stall_timeout: float | None) -> AsyncIterator[bytes]:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self._recv(RECV_SIZE, stall_timeout))
            elif type(event) is h11.Data:
                yield bytes(event.data)
            elif type(event) is h11.EndOfMessage:
                self._complete = True
                return
            else:
                raise h11.RemoteProtocolError("the body ended early")

    def shrink_receive_buffer(self, size: int) -> None:
        """A small, fixed receive buffer from now on (autotuning off), and no reuse after this answer."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        self._keep_alive = False

    def reusable(self) -> bool:
        return self._complete and self._keep_alive and self.h11.our_state is h11.DONE

    def still_open(self) -> bool:
        """Whether a pooled connection is worth a request: the peer has not closed it (idle timeout,
        restart) nor sent anything unasked. One peek, instead of a request that fails and is retried."""
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False  # b"": closed; anything else: bytes nobody asked for

    # -- the socket -----------------------------------------------------------------------------

    async def _recv(self, size: int, stall_timeout: float | None = None) -> bytes:
        sock = self.sock
        while True:
            try:
                data = sock.recv(size)
            except BlockingIOError:
                if stall_timeout is None:
                    await self._waiter.readable(sock)
                else:
                    with anyio.fail_after(stall_timeout):
                        await self._waiter.readable(sock)
                continue
            if data:
                self.received_any = True
            return data

    def close(self) -> None:
        self.sock.close()

"""Non-blocking socket primitives on sockets the server owns, waited on with anyio.

Rules:
- Every socket here is a non-blocking stdlib socket. We try the syscall first and wait only on EAGAIN,
  so a busy connection costs one syscall per step (anyio's stream transport cannot be waited on without
  a read, and a wait per step doubled the cost of a small request).
- A wait that sees no progress within its timeout raises `TimeoutError`; the caller closes the connection.
- `send_file` loops over `os.sendfile` (partial sends are normal, one call is capped below 2 GiB) and
  yields to other tasks now and then, so one fast reader cannot starve the rest.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import os
import socket
import struct
import termios
import time

import anyio
import anyio.lowlevel

# os.sendfile sends at most about 2 GiB per call on Linux; stay well below it.
SENDFILE_MAX_CHUNK = 1 << 30
# Yield to other tasks after this many bytes sent without ever waiting.
YIELD_EVERY_BYTES = 16 << 20
RECV_SIZE = 64 * 1024
MSG_MORE = getattr(socket, "MSG_MORE", 0)
# struct tcp_info: tcpi_bytes_acked (Linux 4.1+) is a u64 at byte 120.
_TCPI_BYTES_ACKED = struct.Struct("=Q")
_TCPI_BYTES_ACKED_AT = 120


class SocketWaiter:
    """Waits until a socket is readable or writable, for the one task that owns the socket.

    Under asyncio it registers with the running loop directly: anyio's generic wait costs about twice
    as much (backend lookup, per-call bookkeeping), and a 64 KiB request waits once. Cancellation is
    the same (the task awaits a plain future). Under another backend it uses anyio's wait.
    """

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio)
            self._loop = None

    async def readable(self, sock: socket.socket) -> None:
        loop = self._loop
        if loop is None:
            await anyio.wait_readable(sock)
            return
        fd = sock.fileno()
        future = loop.create_future()
        loop.add_reader(fd, _wake, future)
        try:
            await future
        finally:
            loop.remove_reader(fd)

    async def writable(self, sock: socket.socket) -> None:
        loop = self._loop
        if loop is None:
            await anyio.wait_writable(sock)
            return
        fd = sock.fileno()
        future = loop.create_future()
        loop.add_writer(fd, _wake, future)
        try:
            await future
        finally:
            loop.remove_writer(fd)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class FileBodyShort(OSError):
    """The file ended before the promised number of bytes were sent."""


async def wait_readable(sock: socket.socket, deadline: float) -> None:
    """Wait until `sock` is readable, or raise TimeoutError at `deadline` (anyio clock)."""
    with anyio.CancelScope(deadline=deadline) as scope:
        await anyio.wait_readable(sock)
    if scope.cancelled_caught:
        raise TimeoutError("socket not readable before the deadline")


async def wait_writable(sock: socket.socket, stall_timeout: float) -> None:
    """Wait until `sock` is writable, or raise TimeoutError after `stall_timeout` seconds."""
    with anyio.CancelScope(deadline=anyio.current_time() + stall_timeout) as scope:
        await anyio.wait_writable(sock)
    if scope.cancelled_caught:
        raise TimeoutError("peer read nothing before the write timeout")


async def recv_until(sock: socket.socket, deadline: float) -> bytes:
    """Some bytes from `sock` (b"" at end of stream), or TimeoutError at `deadline`."""
    while True:
        try:
            return sock.recv(RECV_SIZE)
        except BlockingIOError:
            await wait_readable(sock, deadline)


_TCP_ESTABLISHED = 1
# Waiting for the client to acknowledge a body's last bytes: polls from 0.25 ms apart, growing to 5 ms.
_ACK_POLL_FIRST = 0.00025
_ACK_POLL_MAX = 0.005


def bytes_acked(sock: socket.socket) -> int | None:
    """Bytes of this connection the peer's TCP has acknowledged so far; None where the kernel (or the
    socket type) cannot tell. The difference between two readings is what really reached the peer."""
    info = _tcp_info(sock)
    if info is None:
        return None
    value: int = _TCPI_BYTES_ACKED.unpack_from(info, _TCPI_BYTES_ACKED_AT)[0]
    return value


def _tcp_info(sock: socket.socket) -> bytes | None:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except (OSError, AttributeError):
        return None
    return info if len(info) >= _TCPI_BYTES_ACKED_AT + _TCPI_BYTES_ACKED.size else None


async def wait_acknowledged(sock: socket.socket, stall_timeout: float) -> int | None:
    """Wait until the peer has acknowledged everything written, or the connection ended (a client that
    hung up with our bytes unread resets it), or `stall_timeout` passed; then `bytes_acked`.

    The kernel has no event for "the send queue is empty", so this polls, from 0.25 ms up to 5 ms
    apart: a client that reads on takes a few polls, one that hung up resets the connection.
    """
    deadline = time.monotonic() + stall_timeout
    pause = _ACK_POLL_FIRST
    queued = array.array("i", [0])
    while True:
        info = _tcp_info(sock)
        if info is None:
            return None
        try:
            fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, queued)  # SIOCOUTQ: written, not yet acked
        except OSError:
            return bytes_acked(sock)
        if queued[0] == 0 or info[0] != _TCP_ESTABLISHED or time.monotonic() >= deadline:
            return bytes_acked(sock)
        await anyio.sleep(pause)
        pause = min(pause * 1.5, _ACK_POLL_MAX)


async def send_all(sock: socket.socket, data: bytes, stall_timeout: float, flags: int = 0) -> None:
    """Send every byte of `data`, waiting for buffer space with backpressure."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view, flags)
        except BlockingIOError:
            await wait_writable(sock, stall_timeout)
            continue
        view = view[sent:]


async def send_file(
    sock: socket.socket,
    fd: int,
    offset: int,
    length: int,
    stall_timeout: float,
    waiter: SocketWaiter | None = None,
) -> None:
    """Send `length` bytes of file `fd` from `offset` with os.sendfile; FileBodyShort if the file ends.

    A body that fits in the socket buffer goes out without any wait, scope or clock read. Otherwise one
    cancel scope covers the rest of the body (a scope per wait costs as much as the wait itself): it is
    armed for the wait in progress, and re-armed only when it fires while the reader still makes progress.
    A short send means the socket buffer is full: we wait at once instead of trying again for EAGAIN.
    """
    out = sock.fileno()
    budget = YIELD_EVERY_BYTES
    full = False
    while True:  # the fast path: no waiting at all
        chunk = min(length, SENDFILE_MAX_CHUNK)
        try:
            sent = os.sendfile(out, fd, offset, chunk)
        except BlockingIOError:
            full = True
            break
        if sent == 0:
            raise FileBodyShort(f"file ended with {length} bytes still promised")
        offset += sent
        length -= sent
        if length <= 0:
            return
        budget -= sent
        if sent < chunk or budget <= 0:
            full = sent < chunk
            break  # a full buffer, or a fast reader: go on in the pump, which waits and yields
    pump = _FilePump(out, fd, offset, length, full, waiter or SocketWaiter())
    while pump.length > 0:
        # Waits are stamped with time.monotonic() (cheap); only durations cross to anyio's clock.
        left = stall_timeout - (time.monotonic() - pump.waiting_since)
        with anyio.CancelScope(deadline=anyio.current_time() + left) as scope:
            await pump.run(sock)
        if scope.cancelled_caught and time.monotonic() - pump.waiting_since >= stall_timeout:
            raise TimeoutError("peer read nothing before the write timeout")


class _FilePump:
    """The progress of one sendfile body, kept outside the cancel scope that bounds its waits."""

    __slots__ = ("_in", "_out", "_waiter", "full", "length", "offset", "waiting_since")

    def __init__(self, out: int, fd: int, offset: int, length: int, full: bool, waiter: SocketWaiter) -> None:
        self._out = out
        self._waiter = waiter
        self._in = fd
        self.offset = offset
        self.length = length
        self.full = full  # the socket buffer is full: wait before the next send
        self.waiting_since = time.monotonic()  # when the current wait (or the pump) began

    async def run(self, sock: socket.socket) -> None:
        out, fd, sendfile, writable = self._out, self._in, os.sendfile, self._waiter.writable
        since_yield = 0
        while self.length > 0:
            if self.full:
                self.waiting_since = time.monotonic()
                await writable(sock)
                self.full = False
                since_yield = 0
            chunk = min(self.length, SENDFILE_MAX_CHUNK)
            try:
                sent = sendfile(out, fd, self.offset, chunk)
            except BlockingIOError:
                self.full = True
                continue
            if sent == 0:
                raise FileBodyShort(f"file ended with {self.length} bytes still promised")
            self.offset += sent
            self.length -= sent
            since_yield += sent
            if sent < chunk:
                self.full = True
            elif since_yield >= YIELD_EVERY_BYTES:
                since_yield = 0
                self.waiting_since = time.monotonic()
                await anyio.lowlevel.checkpoint()

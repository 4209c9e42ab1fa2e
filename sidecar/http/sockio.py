"""Non-blocking socket primitives on sockets the server owns, waited on with anyio.

Rules:
- Every socket here is a non-blocking stdlib socket. We try the syscall first and wait only on EAGAIN,
  so a busy connection costs one syscall per step (anyio's stream transport cannot be waited on; see
  docs/performance.md).
- A wait that sees no progress within its timeout raises `TimeoutError`; the caller closes the connection.
- `send_file` loops over `os.sendfile` (partial sends are normal, one call is capped below 2 GiB) and
  yields to other tasks now and then, so one fast reader cannot starve the rest.
"""

from __future__ import annotations

import os
import socket

import anyio
import anyio.lowlevel

# os.sendfile sends at most about 2 GiB per call on Linux; stay well below it.
SENDFILE_MAX_CHUNK = 1 << 30
# Yield to other tasks after this many bytes sent without ever waiting.
YIELD_EVERY_BYTES = 16 << 20
RECV_SIZE = 64 * 1024
MSG_MORE = getattr(socket, "MSG_MORE", 0)


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


async def send_file(sock: socket.socket, fd: int, offset: int, length: int, stall_timeout: float) -> None:
    """Send `length` bytes of file `fd` from `offset` with os.sendfile; FileBodyShort if the file ends."""
    out = sock.fileno()
    since_yield = 0
    while length > 0:
        try:
            sent = os.sendfile(out, fd, offset, min(length, SENDFILE_MAX_CHUNK))
        except BlockingIOError:
            await wait_writable(sock, stall_timeout)
            since_yield = 0
            continue
        if sent == 0:
            raise FileBodyShort(f"file ended with {length} bytes still promised")
        offset += sent
        length -= sent
        since_yield += sent
        if since_yield >= YIELD_EVERY_BYTES:
            since_yield = 0
            await anyio.lowlevel.checkpoint()

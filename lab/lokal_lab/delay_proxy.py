"""A user-space TCP proxy that adds a one-way delay per direction: the lab's stand-in for netem.

    python -m lokal_lab.delay_proxy --listen 198.18.0.2:5000 --target 127.0.0.1:5001 --delay-ms 20

Rules:
- It models a link, not a slow server: every chunk read is released `delay` after it arrived, while later
  chunks keep arriving. Throughput stays that of the path; only the latency grows (RTT + 2 x delay).
- Memory is bounded: each direction buffers at most `--buffer-bytes`; when full, reading stops (TCP
  backpressure) until the delayed bytes are sent.
- Connections are bounded: past `--max-connections`, new ones are closed at once and logged.
- Half-close is forwarded (EOF is delayed like data); a reset on one side closes both.
- SIGTERM or SIGINT: stop listening, close every connection, exit 0.
- Readiness is a file (`--ready-file`) written once listening, so nobody probes lab addresses from outside.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from sidecar.logs import get_logger, log_event, setup_logging

READ_SIZE = 64 * 1024
_log = get_logger("lab.delay_proxy")


class DelayLine:
    """FIFO of chunks, each due `delay` seconds after it was pushed. `None` is the end of the stream.

    Pure: the caller passes the time in, so tests drive it without a clock.
    """

    def __init__(self, delay: float, max_bytes: int) -> None:
        if delay < 0:
            raise ValueError(f"delay={delay}: must be >= 0")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes={max_bytes}: must be > 0")
        self.delay = delay
        self.max_bytes = max_bytes
        self.buffered = 0
        self._items: collections.deque[tuple[float, bytes | None]] = collections.deque()

    def has_room(self) -> bool:
        return self.buffered < self.max_bytes

    def push(self, now: float, chunk: bytes | None) -> None:
        self._items.append((now + self.delay, chunk))
        self.buffered += len(chunk) if chunk else 0

    def next_due(self) -> float | None:
        """When the oldest chunk may leave, or None if nothing is waiting."""
        return self._items[0][0] if self._items else None

    def pop_due(self, now: float) -> list[bytes | None]:
        """Every chunk due at `now`, oldest first."""
        due: list[bytes | None] = []
        while self._items and self._items[0][0] <= now:
            _, chunk = self._items.popleft()
            self.buffered -= len(chunk) if chunk else 0
            due.append(chunk)
        return due


async def pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, max_bytes: int
) -> None:
    """Copy reader -> writer, each chunk delayed by `delay`, reading on while earlier chunks wait."""
    loop = asyncio.get_running_loop()
    line = DelayLine(delay, max_bytes)
    arrived = asyncio.Event()
    room = asyncio.Event()

    async def receive() -> None:
        while True:
            while not line.has_room():
                room.clear()
                await room.wait()
            data = await reader.read(READ_SIZE)
            line.push(loop.time(), data or None)
            arrived.set()
            if not data:
                return

    async def send() -> None:
        while True:
            due = line.next_due()
            if due is None:
                arrived.clear()
                await arrived.wait()
                continue
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            for chunk in line.pop_due(loop.time()):
                if chunk is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    await writer.drain()
                    return
                writer.write(chunk)
            room.set()
            await writer.drain()

    receiver = asyncio.create_task(receive())
    try:
        await send()
        await receiver
    finally:
        receiver.cancel()


class DelayProxy:
    """The listening side: accepts, connects to the target, runs one pump per direction."""

    def __init__(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        delay_ms: float,
        max_connections: int = 256,
        buffer_bytes: int = 4 * 1024 * 1024,
        connect_timeout: float = 10.0,
    ) -> None:
        self.listen = listen
        self.target = target
        self.delay = delay_ms / 1000.0
        self.max_connections = max_connections
        self.buffer_bytes = buffer_bytes
        self.connect_timeout = connect_timeout
        self.active: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        """Start listening; returns the bound address (port 0 picks a free one)."""
        self.server = await asyncio.start_server(self._accept, self.listen[0], self.listen[1], backlog=128)
        host, port = self.server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def close(self) -> None:
        if self.server:
            self.server.close()
        for task in list(self.active):
            task.cancel()
        await asyncio.gather(*self.active, return_exceptions=True)
        if self.server:
            await self.server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self.active) >= self.max_connections:
            log_event(
                _log, "delay_proxy_connection_refused", reason="max_connections", limit=self.max_connections
            )
            writer.close()
            return
        self.active.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self.active.discard(task)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            target_r, target_w = await asyncio.wait_for(
                asyncio.open_connection(*self.target), timeout=self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            log_event(
                _log,
                "delay_proxy_target_unreachable",
                target=f"{self.target[0]}:{self.target[1]}",
                error=str(exc),
            )
            client_w.close()
            return
        for w in (client_w, target_w):
            sock = w.get_extra_info("socket")
            if sock is not None:
                # Small writes (HTTP headers) must not wait on Nagle: the only delay is the one we add.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pumps = [
            asyncio.create_task(pump(client_r, target_w, self.delay, self.buffer_bytes)),
            asyncio.create_task(pump(target_r, client_w, self.delay, self.buffer_bytes)),
        ]
        try:
            # A reset on either side (an exception in one pump) ends both directions.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (client_w, target_w):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()


def parse_endpoint(flag: str, value: str) -> tuple[str, int]:
    """ "ADDR:PORT" -> (addr, port); the error names the flag."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{flag}={value!r}: expected ADDR:PORT")
    return host.strip("[]"), int(port)


async def serve(proxy: DelayProxy, ready_file: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host, port = await proxy.start()
    log_event(
        _log,
        "delay_proxy_listening",
        listen=f"{host}:{port}",
        target=f"{proxy.target[0]}:{proxy.target[1]}",
        delay_ms=proxy.delay * 1000,
    )
    if ready_file:
        # Write then rename: whoever waits for the file never reads it half-written.
        partial = ready_file.with_name(ready_file.name + ".partial")
        partial.write_text(f"{host}:{port}\n")
        partial.replace(ready_file)
    await stop.wait()
    await proxy.close()
    log_event(_log, "delay_proxy_stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lokal_lab.delay_proxy", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--listen", required=True, help="ADDR:PORT to accept on")
    parser.add_argument("--target", required=True, help="ADDR:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay added per direction")
    parser.add_argument("--max-connections", type=int, default=256)
    parser.add_argument("--buffer-bytes", type=int, default=4 * 1024 * 1024, help="per direction")
    parser.add_argument("--ready-file", type=Path, help="written with the bound ADDR:PORT once listening")
    args = parser.parse_args(argv)
    setup_logging("json")
    try:
        listen = parse_endpoint("--listen", args.listen)
        target = parse_endpoint("--target", args.target)
        for flag, value, low in (
            ("--delay-ms", args.delay_ms, 0),
            ("--max-connections", args.max_connections, 1),
            ("--buffer-bytes", args.buffer_bytes, 1),
        ):
            if value < low:
                raise ValueError(f"{flag}={value}: must be >= {low}")
    except ValueError as exc:
        print(f"delay_proxy: {exc}", file=sys.stderr)
        return 2
    proxy = DelayProxy(listen, target, args.delay_ms, args.max_connections, args.buffer_bytes)
    try:
        asyncio.run(serve(proxy, args.ready_file))
    except OSError as exc:
        print(f"delay_proxy: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The delay proxy: the pure delay line, then the real proxy process on loopback (allowed by the rules)."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lokal_lab.delay_proxy import DelayLine, parse_endpoint
from lokal_lab.processes import ProcessGroup, wait_for

# ---- the pure delay line -----------------------------------------------------------------------------------


def test_each_chunk_is_due_its_own_delay_after_arrival_not_after_the_previous_chunk() -> None:
    line = DelayLine(delay=0.050, max_bytes=10_000)
    for i in range(10):
        line.push(now=i * 0.001, chunk=b"x" * 100)
    # A link, not a queue of sleeps: all ten are out 50 ms after the last arrived, not 10 x 50 ms.
    assert line.pop_due(0.0499) == []
    assert len(line.pop_due(0.050)) == 1
    assert len(line.pop_due(0.0591)) == 9
    assert line.next_due() is None


def test_chunks_leave_in_order_and_the_end_of_stream_follows_the_data() -> None:
    line = DelayLine(delay=0.0, max_bytes=10_000)
    line.push(0.0, b"a")
    line.push(0.0, b"b")
    line.push(0.0, None)
    assert line.pop_due(0.0) == [b"a", b"b", None]


def test_the_buffer_is_bounded_in_bytes() -> None:
    line = DelayLine(delay=1.0, max_bytes=1000)
    line.push(0.0, b"x" * 600)
    assert line.has_room()
    line.push(0.0, b"x" * 600)
    assert not line.has_room()
    line.pop_due(1.0)
    assert line.has_room() and line.buffered == 0


@pytest.mark.parametrize("value", ["5000", "host:", ":80", "host:port", "h:70000"])
def test_bad_endpoint_is_refused_with_the_flag_named(value: str) -> None:
    with pytest.raises(ValueError, match="--listen"):
        parse_endpoint("--listen", value)


def test_bad_arguments_exit_with_a_clear_message() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lokal_lab.delay_proxy",
            "--listen",
            "127.0.0.1:0",
            "--target",
            "nope",
            "--delay-ms",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "--target" in proc.stderr


# ---- the real proxy on loopback ----------------------------------------------------------------------------


class EchoServer:
    """An in-process loopback echo server for the proxy to forward to; bounded by timeouts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        conn.settimeout(30)
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


def start_proxy(
    group: ProcessGroup, tmp_path: Path, target_port: int, delay_ms: int, *extra: str
) -> tuple[subprocess.Popen[bytes], int]:
    ready = tmp_path / "ready"
    proc = group.start(
        "delay-proxy",
        [
            sys.executable,
            "-m",
            "lokal_lab.delay_proxy",
            "--listen",
            "127.0.0.1:0",
            "--target",
            f"127.0.0.1:{target_port}",
            "--delay-ms",
            str(delay_ms),
            "--ready-file",
            str(ready),
            *extra,
        ],
        log_path=tmp_path / "proxy.log",
    )
    wait_for(lambda: ready.exists() or proc.poll() is not None, 10, what="delay proxy ready file")
    assert proc.poll() is None, (tmp_path / "proxy.log").read_text()
    return proc, parse_endpoint("ready", ready.read_text().strip())[1]


def round_trip(port: int, payload: bytes) -> tuple[bytes, float]:
    """Send payload (while reading the echo) and return what came back and the seconds it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:

        def write() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        writer.join(30)
    return bytes(received), time.monotonic() - started


def test_the_proxy_adds_its_delay_each_way_and_keeps_a_few_megabytes_intact(
    echo: EchoServer, tmp_path: Path
) -> None:
    delay_ms = 40
    with ProcessGroup() as group:
        _, port = start_proxy(group, tmp_path, echo.port, delay_ms)
        direct = round_trip(echo.port, b"ping")[1]
        back, through = round_trip(port, b"ping")
        assert back == b"ping"
        payload = os.urandom(4 * 1024 * 1024)
        data, bulk = round_trip(port, payload)
        print(
            f"\nsmall round trip: direct {direct * 1000:.1f} ms, through proxy {through * 1000:.1f} ms "
            f"(expected >= {2 * delay_ms} ms); 4 MiB echoed through it in {bulk:.2f} s"
        )
        assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()
        # Generous lower bound only: a round trip crosses the proxy twice, so >= 2 x delay in theory.
        assert through >= delay_ms / 2 / 1000


def test_sigterm_stops_the_proxy_cleanly_with_a_connection_open(echo: EchoServer, tmp_path: Path) -> None:
    with ProcessGroup() as group:
        proc, port = start_proxy(group, tmp_path, echo.port, 5)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"hello")
            assert sock.recv(5) == b"hello"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            sock.settimeout(5)
            assert sock.recv(10) == b""  # the proxy closed our connection on its way out


def test_connections_past_the_limit_are_closed_at_once(echo: EchoServer, tmp_path: Path) -> None:
    with ProcessGroup() as group:
        _, port = start_proxy(group, tmp_path, echo.port, 1, "--max-connections", "1")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as first:
            first.sendall(b"a")
            assert first.recv(1) == b"a"
            with socket.create_connection(("127.0.0.1", port), timeout=10) as second:
                second.settimeout(5)
                assert second.recv(1) == b""
            first.sendall(b"b")
            assert first.recv(1) == b"b"  # the first is unaffected
    assert "max_connections" in (tmp_path / "proxy.log").read_text()


def test_an_unreachable_target_closes_the_client_connection(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        dead_port = placeholder.getsockname()[1]
    with ProcessGroup() as group:
        _, port = start_proxy(group, tmp_path, dead_port, 1)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.settimeout(5)
            assert sock.recv(1) == b""
    assert "delay_proxy_target_unreachable" in (tmp_path / "proxy.log").read_text()

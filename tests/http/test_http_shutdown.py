"""Graceful shutdown: stop accepting, let in-flight answers finish (bounded), close idle connections."""

from __future__ import annotations

import socket
import threading

import pytest
from http_support import AnswerReader, SampleHandler, request_bytes, run_server

from sidecar.http import ServerLimits


def test_shutdown_lets_an_in_flight_answer_finish_and_closes_idle_connections(
    handler: SampleHandler,
) -> None:
    with run_server(handler, ServerLimits(drain_timeout=5.0)) as running:
        idle = running.connect()
        idle.sendall(request_bytes("GET", "/bytes"))
        idle_reader = AnswerReader(idle)
        assert idle_reader.read() is not None
        busy = running.connect()
        busy.sendall(request_bytes("GET", "/slow?seconds=0.5"))
        assert handler.started.wait(5)
        stopper = threading.Thread(target=running.shutdown)
        stopper.start()
        try:
            busy_reader = AnswerReader(busy)
            answer = busy_reader.read()
            assert answer is not None and answer.body == b"slow answer"
            assert answer.header("connection") == "close"
            assert busy_reader.at_eof()
            assert idle_reader.at_eof()
        finally:
            stopper.join(10)
            idle.close()
            busy.close()
        assert not stopper.is_alive()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", running.port), timeout=2).close()


def test_shutdown_cuts_answers_that_outlast_the_drain_time(handler: SampleHandler) -> None:
    with run_server(handler, ServerLimits(drain_timeout=0.2)) as running, running.connect() as sock:
        sock.sendall(request_bytes("GET", "/slow?seconds=60"))
        assert handler.started.wait(5)
        running.shutdown()  # returns after the bounded drain, not after 60 s
        assert sock.recv(100) == b""


def test_a_connection_that_never_sent_a_request_does_not_hold_up_shutdown(handler: SampleHandler) -> None:
    # Go's HTTP client (containerd) dials spare connections it may never use: such a connection is idle,
    # not in flight, so shutdown closes it at once instead of waiting out the drain time (or the first
    # head's timeout). Before the fix SIGTERM took 10 s here and the pod was killed.
    limits = ServerLimits(drain_timeout=30.0, header_timeout=30.0)
    with run_server(handler, limits) as running, running.connect() as unused:
        stopper = threading.Thread(target=running.shutdown)
        stopper.start()
        stopper.join(5)
        assert not stopper.is_alive()
        assert unused.recv(100) == b""

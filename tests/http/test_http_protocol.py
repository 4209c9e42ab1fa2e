"""The server core against real sockets: framing, keep-alive, pipelining, HTTP/1.0, errors, limits."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from http_support import (
    FILE_SIZE,
    AnswerReader,
    RunningServer,
    SampleHandler,
    TruncatedAnswer,
    exchange,
    request_bytes,
    run_server,
)

from sidecar.http import ServerLimits


@pytest.mark.parametrize("path", ["/bytes", "/file", "/stream", "/stream-chunked"])
def test_head_answers_carry_the_same_headers_as_get_and_no_body(server: RunningServer, path: str) -> None:
    with server.connect() as sock:
        reader = AnswerReader(sock)
        sock.sendall(request_bytes("GET", path) + request_bytes("HEAD", path))
        get = reader.read("GET")
        head = reader.read("HEAD")
        sock.sendall(request_bytes("GET", "/bytes"))
        after = reader.read("GET")
    assert get is not None and head is not None and after is not None
    assert get.status == head.status == 200
    assert get.headers == head.headers
    assert head.body == b""
    assert after.body == b"hello world"  # nothing of the HEAD body leaked onto the connection


def test_head_releases_file_and_stream_bodies(server: RunningServer) -> None:
    for path in ("/file", "/stream"):
        exchange(server, request_bytes("HEAD", path), "HEAD")
    exchange(server, request_bytes("GET", "/bytes"))  # the server released bodies before this answer
    assert sorted(server.handler.released) == ["file", "stream"]


def test_file_bodies_arrive_whole_with_their_length(server: RunningServer) -> None:
    answer = exchange(server, request_bytes("GET", "/file"))
    assert answer is not None
    assert answer.header("content-length") == str(FILE_SIZE)
    assert answer.body == server.handler.file_path.read_bytes()


def test_clients_that_half_close_after_asking_get_whole_files_even_when_many_ask_at_once(
    server: RunningServer,
) -> None:
    expected = server.handler.file_path.read_bytes()
    answers: list[bytes | BaseException] = []

    def fetch() -> None:
        try:
            with server.connect() as sock:
                sock.sendall(request_bytes("GET", "/file") + request_bytes("GET", "/file"))
                sock.shutdown(socket.SHUT_WR)  # as the fuzz test does: our input ends here
                reader = AnswerReader(sock)
                for _ in range(2):
                    answer = reader.read()
                    answers.append(answer.body if answer is not None else b"")
                answers.append(b"eof" if reader.at_eof() else b"more")
        except BaseException as exc:  # reported by the assertion below
            answers.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 8 * 3
    assert all(a == expected for a in answers if a != b"eof"), "a file body was cut or failed"
    assert answers.count(b"eof") == 8


def test_keep_alive_serves_several_answers_on_one_connection_including_after_sendfile(
    server: RunningServer,
) -> None:
    expected = server.handler.file_path.read_bytes()
    with server.connect() as sock:
        reader = AnswerReader(sock)
        for path in ["/file", "/bytes", "/file", "/stream", "/file", "/bytes"]:
            sock.sendall(request_bytes("GET", path))
            answer = reader.read()
            assert answer is not None and answer.status == 200
            assert answer.header("connection") is None
            if path == "/file":
                assert answer.body == expected
        assert server.server.connection_count == 1


def test_pipelined_requests_are_answered_in_order(server: RunningServer) -> None:
    paths = ["/echo?n=1", "/file", "/echo?n=2", "/bytes", "/echo?n=3"]
    with server.connect() as sock:
        sock.sendall(b"".join(request_bytes("GET", p) for p in paths))
        reader = AnswerReader(sock)
        answers = [reader.read() for _ in paths]
    assert all(a is not None and a.status == 200 for a in answers)
    bodies = [a.body for a in answers if a is not None]
    assert bodies[0].startswith(b"GET /echo?n=1 ")
    assert bodies[1] == server.handler.file_path.read_bytes()
    assert bodies[2].startswith(b"GET /echo?n=2 ")
    assert bodies[3] == b"hello world"
    assert bodies[4].startswith(b"GET /echo?n=3 ")


def test_http_1_0_request_gets_a_whole_answer_and_the_connection_closes(server: RunningServer) -> None:
    with server.connect() as sock:
        sock.sendall(request_bytes("GET", "/bytes", version="1.0"))
        reader = AnswerReader(sock)
        answer = reader.read()
        assert answer is not None and answer.body == b"hello world"
        assert reader.at_eof()


def test_http_1_0_stream_of_unknown_length_is_close_delimited(server: RunningServer) -> None:
    with server.connect() as sock:
        sock.sendall(request_bytes("GET", "/stream-chunked", version="1.0"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert body == b"abc" * 10


def test_connection_close_request_gets_its_answer_then_the_connection_closes(server: RunningServer) -> None:
    with server.connect() as sock:
        sock.sendall(request_bytes("GET", "/file", [("connection", "close")]))
        reader = AnswerReader(sock)
        answer = reader.read()
        assert answer is not None and answer.header("connection") == "close"
        assert len(answer.body) == FILE_SIZE
        assert reader.at_eof()


def test_malformed_request_gets_400_and_the_server_stays_up(server: RunningServer) -> None:
    with server.connect() as sock:
        sock.sendall(b"this is not http\r\n\r\n")
        reader = AnswerReader(sock)
        answer = reader.read()
        assert answer is not None and answer.status == 400
        assert reader.at_eof()
    again = exchange(server, request_bytes("GET", "/bytes"))
    assert again is not None and again.status == 200


@pytest.mark.parametrize("in_pieces", [False, True])
def test_oversize_headers_get_431_and_the_server_stays_up(server: RunningServer, in_pieces: bool) -> None:
    raw = request_bytes("GET", "/bytes", [(f"x-pad-{i}", "v" * 1000) for i in range(20)])
    with server.connect() as sock:
        if in_pieces:
            for start in range(0, len(raw), 1000):
                sock.sendall(raw[start : start + 1000])
        else:
            sock.sendall(raw)
        reader = AnswerReader(sock)
        answer = reader.read()
        assert answer is not None and answer.status == 431
        assert reader.at_eof()
    again = exchange(server, request_bytes("GET", "/bytes"))
    assert again is not None and again.status == 200


def test_handler_exception_is_a_500_and_the_connection_lives_on(server: RunningServer) -> None:
    with server.connect() as sock:
        reader = AnswerReader(sock)
        sock.sendall(request_bytes("GET", "/boom"))
        failed = reader.read()
        sock.sendall(request_bytes("GET", "/bytes"))
        after = reader.read()
    assert failed is not None and failed.status == 500
    assert after is not None and after.body == b"hello world"


def test_unknown_path_answer_comes_from_the_handler(server: RunningServer) -> None:
    answer = exchange(server, request_bytes("GET", "/nope"))
    assert answer is not None and answer.status == 404


def test_request_body_reaches_the_handler(server: RunningServer) -> None:
    answer = exchange(server, request_bytes("POST", "/echo", body=b'{"a": 1}'))
    assert answer is not None and answer.body.endswith(b'{"a": 1}')


def test_expect_100_continue_gets_an_interim_answer_then_the_real_one(server: RunningServer) -> None:
    with server.connect() as sock:
        head = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n"
        sock.sendall(head)
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"body")
        answer = AnswerReader(sock).read()
    assert answer is not None and answer.body.endswith(b"body")


def test_request_body_over_the_limit_gets_413_and_close(handler: SampleHandler) -> None:
    with run_server(handler, ServerLimits(max_request_body=100)) as running, running.connect() as sock:
        sock.sendall(request_bytes("POST", "/echo", body=b"x" * 1000))
        reader = AnswerReader(sock)
        answer = reader.read()
        assert answer is not None and answer.status == 413
        assert reader.at_eof()


@pytest.mark.parametrize(
    "path", ["/stream-fail", "/stream-fail-chunked", "/file-short", "/stream-long", "/stream-short"]
)
def test_body_failing_mid_way_truncates_the_answer_and_closes_the_connection(
    server: RunningServer, path: str
) -> None:
    with server.connect() as sock:
        # a second request waits behind the first: it must never be answered on this connection
        sock.sendall(request_bytes("GET", path) + request_bytes("GET", "/bytes"))
        reader = AnswerReader(sock)
        with pytest.raises(TruncatedAnswer) as cut:
            reader.read()
        assert cut.value.status == 200
    again = exchange(server, request_bytes("GET", "/bytes"))
    assert again is not None and again.status == 200
    assert "stream" in server.handler.released or "file" in server.handler.released


def test_a_header_that_would_split_the_answer_gets_500_and_close(server: RunningServer) -> None:
    with server.connect() as sock:
        sock.sendall(request_bytes("GET", "/bad-header"))
        reader = AnswerReader(sock)
        answer = reader.read()
        assert answer is not None and answer.status == 500
        assert answer.header("set-cookie") is None and answer.header("x-injected") is None
        assert reader.at_eof()


def test_stream_failing_before_its_first_byte_gets_502_and_close(server: RunningServer) -> None:
    with server.connect() as sock:
        sock.sendall(request_bytes("GET", "/stream-fail-first"))
        reader = AnswerReader(sock)
        answer = reader.read()
        assert answer is not None and answer.status == 502
        assert reader.at_eof()


def test_slowloris_client_is_closed_after_the_header_deadline_while_others_are_served(
    handler: SampleHandler,
) -> None:
    with run_server(handler, ServerLimits(header_timeout=0.5)) as running, running.connect() as slow:
        slow.sendall(b"GET /bytes HTTP/1.1\r\nhost: x\r\nx-slow: ")
        for _ in range(5):
            answer = exchange(running, request_bytes("GET", "/bytes"))
            assert answer is not None and answer.body == b"hello world"
        slow.sendall(b"a")
        assert AnswerReader(slow).at_eof()  # closed without an answer (never 408)


def test_silent_connection_is_closed_after_the_header_deadline(handler: SampleHandler) -> None:
    with run_server(handler, ServerLimits(header_timeout=0.3)) as running, running.connect() as sock:
        assert sock.recv(100) == b""


def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout(handler: SampleHandler) -> None:
    with run_server(handler, ServerLimits(idle_timeout=0.3)) as running, running.connect() as sock:
        sock.sendall(request_bytes("GET", "/bytes"))
        reader = AnswerReader(sock)
        assert reader.read() is not None
        assert reader.at_eof()


def test_connections_past_the_maximum_get_a_quick_503(handler: SampleHandler) -> None:
    with run_server(handler, ServerLimits(max_connections=2)) as running:
        held = [running.connect(), running.connect()]
        try:
            for sock in held:  # make sure both are accepted and counted
                sock.sendall(request_bytes("GET", "/bytes"))
                assert AnswerReader(sock).read() is not None
            with running.connect() as extra:
                reader = AnswerReader(extra)
                answer = reader.read()
                assert answer is not None and answer.status == 503
                assert reader.at_eof()
        finally:
            for sock in held:
                sock.close()
        answer = _retry_until_served(running)
        assert answer.status == 200


def _retry_until_served(running: RunningServer, attempts: int = 50) -> object:
    """Once the held connections are gone the server has room again (it notices their EOF)."""
    for _ in range(attempts):
        answer = exchange(running, request_bytes("GET", "/bytes"))
        if answer is not None and answer.status == 200:
            return answer
        time.sleep(0.05)
    raise AssertionError("server never accepted a new connection after the old ones closed")


def test_client_that_closes_mid_answer_does_not_hurt_the_server(server: RunningServer) -> None:
    sock = server.connect()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(request_bytes("GET", "/file"))
    sock.recv(100)
    sock.close()
    answer = exchange(server, request_bytes("GET", "/bytes"))
    assert answer is not None and answer.status == 200


def test_a_reader_that_stops_reading_a_file_is_cut_off_after_the_write_timeout(
    handler: SampleHandler,
) -> None:
    limits = ServerLimits(write_timeout=0.3, send_buffer=4096)  # the file cannot hide in buffers
    with run_server(handler, limits) as running, running.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(request_bytes("GET", "/file"))
        for _ in range(200):  # bounded: at most ~10 s
            if running.server.connection_count == 0:
                break
            time.sleep(0.05)
        assert running.server.connection_count == 0
        with pytest.raises((TruncatedAnswer, ConnectionResetError)):
            AnswerReader(sock).read()


def test_a_slow_but_steady_reader_gets_the_whole_file_however_long_it_takes(
    handler: SampleHandler,
) -> None:
    # Buffers of 256 KiB on both sides hold far less than the 3 MiB file, so the server waits for the
    # reader throughout. Reads of at most 16 KiB with a 10 ms pause each make the transfer last at least
    # 3 MiB / 16 KiB x 10 ms (about 2 s, twice the write timeout), while the server never waits longer
    # than the reader takes to drain half its buffer (about 0.2 s).
    limits = ServerLimits(write_timeout=1.0, send_buffer=256 * 1024)
    with run_server(handler, limits) as running, running.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        sock.sendall(request_bytes("GET", "/file"))
        data = bytearray()
        head_end = -1
        while head_end < 0 or len(data) - head_end - 4 < FILE_SIZE:
            chunk = sock.recv(16384)
            if not chunk:
                break
            data += chunk
            head_end = data.find(b"\r\n\r\n")
            time.sleep(0.01)
    assert head_end > 0
    assert bytes(data[head_end + 4 :]) == handler.file_path.read_bytes()


def test_client_quitting_mid_request_body_does_not_hurt_the_server(server: RunningServer) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc")
        sock.shutdown(socket.SHUT_WR)
        assert AnswerReader(sock).read() is None
    answer = exchange(server, request_bytes("GET", "/bytes"))
    assert answer is not None and answer.status == 200


def test_bad_chunked_request_body_gets_400_and_close(server: RunningServer) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
        reader = AnswerReader(sock)
        answer = reader.read()
        assert answer is not None and answer.status == 400
        assert reader.at_eof()

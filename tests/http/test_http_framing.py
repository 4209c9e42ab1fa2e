"""The pure parts: request targets, queries, response framing, canned answers, limits."""

from __future__ import annotations

import h11
import pytest

from sidecar.http import FileBody, Request, Response, ServerLimits, StreamBody
from sidecar.http.framing import (
    BadResponse,
    BodyFraming,
    ResponseHead,
    canned_response,
    chunk,
    error_response,
    read_request,
    response_head,
)
from sidecar.http.messages import parse_query, split_target


def _stream(length: int | None) -> StreamBody:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b""

    return StreamBody(chunks(), length)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/v2/", ("/v2/", "")),
        ("/v2/a/blobs/sha256:ab?ns=docker.io", ("/v2/a/blobs/sha256:ab", "ns=docker.io")),
        ("/p?a=1?b=2", ("/p", "a=1?b=2")),
        ("http://host:5000/v2/x?ns=q", ("/v2/x", "ns=q")),
        ("http://host:5000", ("/", "")),
        ("http://host?x=1", ("/", "x=1")),
        ("*", ("*", "")),
    ],
)
def test_split_target_gives_raw_path_and_query(target: str, expected: tuple[str, str]) -> None:
    assert split_target(target) == expected


def test_query_keeps_repeated_and_blank_values() -> None:
    assert parse_query("ns=docker.io&a=1&a=2&b=") == {"ns": ["docker.io"], "a": ["1", "2"], "b": [""]}
    assert parse_query("") == {}
    assert parse_query("bad=%zz%ff") == {"bad": ["%zz\ufffd"]}


def test_request_path_stays_raw_and_decoding_is_explicit() -> None:
    request = Request("GET", "/a%2Fb?x=%20", "/a%2Fb", "x=%20", [("range", "bytes=0-")], "1.1", ("::1", 1))
    assert request.path == "/a%2Fb"
    assert request.decoded_path() == "/a/b"
    assert request.query == {"x": [" "]}
    assert request.header("Range") == "bytes=0-"
    assert request.header("missing") is None


def response_headers(
    response: Response, *, is_head: bool, closing: bool, http11: bool = True
) -> list[tuple[str, str]]:
    """The header lines of the head `response_head` writes, as (name, value) in order."""
    head = response_head(response, method="HEAD" if is_head else "GET", keep_alive=not closing, http11=http11)
    text = head.data.decode("latin-1")
    assert text.endswith("\r\n\r\n")
    lines = text[: -len("\r\n\r\n")].split("\r\n")[1:]
    return [(name, value) for name, _, value in (line.partition(": ") for line in lines)]


def test_get_content_length_comes_from_the_body_not_the_handler() -> None:
    response = Response(200, [("Content-Length", "999"), ("x-a", "1")], b"abc")
    assert response_headers(response, is_head=False, closing=False) == [("x-a", "1"), ("content-length", "3")]


def test_head_keeps_the_handler_content_length() -> None:
    response = Response(200, [("content-length", "12345")], b"")
    assert response_headers(response, is_head=True, closing=False) == [("content-length", "12345")]


def test_head_without_a_handler_length_uses_the_body_length() -> None:
    response = Response(200, [], FileBody(fd=-1, offset=0, length=77))
    assert response_headers(response, is_head=True, closing=False) == [("content-length", "77")]


def test_stream_of_unknown_length_gets_no_content_length() -> None:
    assert response_headers(Response(200, [], _stream(None)), is_head=False, closing=False) == [
        ("transfer-encoding", "chunked")
    ]
    assert response_headers(Response(200, [], _stream(None)), is_head=False, closing=True, http11=False) == [
        ("connection", "close")
    ]
    assert response_headers(Response(200, [], _stream(5)), is_head=False, closing=False) == [
        ("content-length", "5")
    ]


def test_no_content_answers_never_get_a_content_length() -> None:
    assert response_headers(Response(304, [("content-length", "3")]), is_head=False, closing=False) == []


def test_closing_adds_connection_close() -> None:
    assert ("connection", "close") in response_headers(Response(200), is_head=False, closing=True)


def test_transfer_encoding_from_a_handler_is_dropped() -> None:
    response = Response(200, [("Transfer-Encoding", "chunked")], b"x")
    assert response_headers(response, is_head=False, closing=False) == [("content-length", "1")]


@pytest.mark.parametrize("status", [400, 431, 503, 599])
def test_canned_answers_are_complete_http_responses(status: int) -> None:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(canned_response(status))
    head = conn.next_event()
    assert isinstance(head, h11.Response) and head.status_code == status
    assert (b"connection", b"close") in list(head.headers)
    assert isinstance(conn.next_event(), h11.Data)
    assert isinstance(conn.next_event(), h11.EndOfMessage)


def test_error_response_is_short_text() -> None:
    response = error_response(404)
    assert response.body == b"Not Found\n"


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_header_bytes", 0), ("header_timeout", -1.0), ("max_connections", 2.5), ("drain_timeout", "5")],
)
def test_bad_limits_are_refused_with_the_field_name(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        ServerLimits(**{field: value})  # type: ignore[arg-type]


def test_default_limits_are_the_documented_ones() -> None:
    limits = ServerLimits()
    assert limits.max_header_bytes == 16 * 1024
    assert limits.header_timeout == 10.0
    assert limits.send_buffer == 4 * 1024 * 1024


def _head(
    response: Response, method: str = "GET", keep_alive: bool = True, http11: bool = True
) -> ResponseHead:
    return response_head(response, method=method, keep_alive=keep_alive, http11=http11)


def _parsed(head: ResponseHead, method: str = "GET") -> h11.Response:
    """The head as h11's client side reads it (so every head we write is one h11 accepts)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(head.data)
    event = conn.next_event()
    assert isinstance(event, h11.Response)
    return event


def test_a_known_length_answer_is_framed_by_content_length_and_keeps_the_connection() -> None:
    head = _head(Response(200, [("Content-Type", "text/plain")], b"hello"))
    assert head.data == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 5\r\n\r\n"
    assert head.framing is BodyFraming.LENGTH and head.keep_alive


def test_unknown_length_is_chunked_for_http11_and_close_delimited_for_http10() -> None:
    chunked = _head(Response(200, [], _stream(None)))
    assert chunked.framing is BodyFraming.CHUNKED and chunked.keep_alive
    assert (b"transfer-encoding", b"chunked") in list(_parsed(chunked).headers)
    old = _head(Response(200, [], _stream(None)), http11=False, keep_alive=False)
    assert old.framing is BodyFraming.UNTIL_CLOSE and not old.keep_alive
    assert (b"connection", b"close") in list(_parsed(old).headers)
    assert b"transfer-encoding" not in old.data and b"content-length" not in old.data


def test_head_and_no_content_answers_have_no_body_bytes() -> None:
    assert _head(Response(200, [], b"abc"), method="HEAD").framing is BodyFraming.NONE
    assert _head(Response(204, [], b""), method="GET").framing is BodyFraming.NONE
    assert _head(Response(304, [("content-length", "9")], b"")).data == b"HTTP/1.1 304 Not Modified\r\n\r\n"


def test_a_handler_connection_close_ends_the_connection_with_one_close_header() -> None:
    head = _head(Response(400, [("Connection", "close")], b"x"), keep_alive=True)
    assert not head.keep_alive
    assert head.data.lower().count(b"connection:") == 1
    draining = _head(Response(200, [("connection", "keep-alive")], b"x"), keep_alive=False)
    assert not draining.keep_alive
    assert [v for k, v in _parsed(draining).headers if k == b"connection"] == [b"close"]


@pytest.mark.parametrize(
    "response",
    [
        Response(199, [], b""),
        Response(1000, [], b""),
        Response(200, [("bad name", "x")], b""),
        Response(200, [("x-a", "evil\r\nx-b: 1")], b""),
        Response(200, [("x-a", " padded")], b""),
        Response(200, [("x-a", "\u20ac")], b""),
    ],
)
def test_answers_h11_would_refuse_are_refused(response: Response) -> None:
    with pytest.raises(BadResponse):
        _head(response)


def test_a_head_answer_with_a_non_numeric_handler_length_is_refused() -> None:
    with pytest.raises(BadResponse):
        _head(Response(200, [("content-length", "12, 12")], b""), method="HEAD")


def test_unknown_statuses_get_an_empty_reason_and_chunks_are_hex_framed() -> None:
    assert _head(Response(299, [], b"")).data.startswith(b"HTTP/1.1 299 \r\n")
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"


@pytest.mark.parametrize(
    ("raw", "keep_alive", "http11"),
    [
        (b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", True, True),
        (b"GET / HTTP/1.1\r\nhost: x\r\nconnection: keep-alive, Close\r\n\r\n", False, True),
        (b"GET / HTTP/1.0\r\n\r\n", False, False),
        (b"CONNECT x:1 HTTP/1.1\r\nhost: x\r\n\r\n", False, True),
    ],
)
def test_request_keep_alive_follows_h11(raw: bytes, keep_alive: bool, http11: bool) -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    request, head = read_request(event, ("127.0.0.1", 1))
    assert (head.keep_alive, head.http11) == (keep_alive, http11)
    assert head.size >= len(raw) - 4
    assert request.header("host") == ("x" if http11 else None)

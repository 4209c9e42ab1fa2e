"""Pure decisions about what goes on the wire: requests from h11 events, response heads, error answers.

h11 parses requests; the server writes its answers itself (h11's response path costs more per answer than
the rest of a 64 KiB request). So this module decides what h11 would: the framing, keep-alive, and
whether a status or header may be sent at all.

Rules:
- No sockets, no clock: every function here takes values and returns values, and is tested directly.
- The server owns the framing headers (Content-Length, Transfer-Encoding). A handler's Content-Length is
  kept only on HEAD, where there is no body to measure (so HEAD and GET agree).
- 204, 304 and 1xx answers never carry a body nor a Content-Length. A body of unknown length is chunked
  for HTTP/1.1 clients and close-delimited for HTTP/1.0 ones.
- Keep-alive as h11 does it: only HTTP/1.1 clients, and neither side said `Connection: close`; the answer
  then carries `Connection: close`. A status or header h11 would refuse raises `BadResponse`.
- An error answer that does not go through h11 (the request could not be parsed, or the server is full)
  is a complete, self-contained response that says `Connection: close`.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from http import HTTPStatus

import h11

from sidecar.http.messages import Request, Response, split_target

_FRAMING = ("content-length", "transfer-encoding")
_NO_BODY_STATUSES = frozenset({204, 304})
# RFC 9110 token and field-value, as h11 checks them before sending.
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_VCHAR = r"[\x21-\x7e\x80-\xff]"
_FIELD_VALUE = re.compile(rf"(?:{_FIELD_VCHAR}+(?:[ \t]+{_FIELD_VCHAR}+)*)?")
_DIGITS = re.compile(r"[0-9]+")


class BadResponse(ValueError):
    """The handler's answer cannot be put on the wire (a bad status, header name or header value)."""


class BodyFraming(enum.Enum):
    """How the body bytes of an answer are delimited on the wire."""

    NONE = "none"  # HEAD, 204, 304: the head is the whole answer
    LENGTH = "length"  # Content-Length
    CHUNKED = "chunked"  # Transfer-Encoding: chunked (HTTP/1.1 client, unknown length)
    UNTIL_CLOSE = "until-close"  # HTTP/1.0 client, unknown length: the end of the connection ends it


@dataclass(slots=True)
class RequestHead:
    """What the server needs from a request head besides the handler's `Request`."""

    size: int  # request line plus headers, as sent
    content_length: int | None  # the declared body length (h11 has checked it)
    has_body: bool  # a Content-Length above 0 or a Transfer-Encoding: else the head is the whole request
    keep_alive: bool  # whether the client lets us serve another request on this connection
    http11: bool  # HTTP/1.1 (else 1.0: no chunked answers)


@dataclass(slots=True)
class ResponseHead:
    """The serialized head of an answer and how its body and the connection go on."""

    data: bytes
    framing: BodyFraming
    keep_alive: bool


def read_request(event: h11.Request, client: tuple[str, int]) -> tuple[Request, RequestHead]:
    """The handler's view of h11's request event, and the facts the server needs, in one pass."""
    method = event.method
    raw_target = event.target
    size = len(method) + len(raw_target) + 12
    content_length: int | None = None
    chunked = False
    modern = event.http_version >= b"1.1"  # as h11 decides: 1.0 never keeps alive nor gets chunks
    keep_alive = modern and method != b"CONNECT"  # we never tunnel: a CONNECT answer ends the connection
    headers: list[tuple[str, str]] = []
    for name, value in event.headers:
        size += len(name) + len(value) + 4
        if name == b"content-length":
            content_length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"connection" and keep_alive and has_close_token(value):
            keep_alive = False
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    target = raw_target.decode("latin-1")
    path, query = split_target(target)
    version = event.http_version.decode("latin-1")
    request = Request(method.decode("latin-1"), target, path, query, headers, version, client)
    has_body = chunked or bool(content_length)
    return request, RequestHead(size, content_length, has_body, keep_alive, modern)


def response_head(response: Response, *, method: str, keep_alive: bool, http11: bool) -> ResponseHead:
    """Frame `response` to a request of `method`: the head bytes, the body framing, and whether the
    connection may go on (`keep_alive`: the client and the server both allow it).

    The handler's headers are kept, except the framing ones: on HEAD a handler's Content-Length wins
    (there is no body to measure); otherwise Content-Length is the body's length when known, else
    Transfer-Encoding: chunked (HTTP/1.1) or nothing (close-delimited, HTTP/1.0). A closing answer
    carries one `Connection: close` instead of the handler's Connection headers.
    Raises `BadResponse` for a status or header h11 would refuse to send.
    """
    status = response.status
    status_line = _STATUS_LINES.get(status) if type(status) is int else None
    if status_line is None:
        if type(status) is not int or not 200 <= status <= 999:
            raise BadResponse(f"status {status!r} is not a final status code")
        status_line = f"HTTP/1.1 {status} {reason_phrase(status).decode('ascii')}\r\n"
    lines = [status_line]
    handler_length: str | None = None
    connection: list[str] | None = None  # the handler's Connection lines, sent only if we keep alive
    for name, value in response.headers:
        if type(name) is not str or type(value) is not str:
            raise BadResponse(f"header {name!r} must be text, with a text value")
        lowered = name.lower()
        if lowered in _FRAMING:
            if lowered == "content-length":
                handler_length = value
            continue
        line = _header_line(name, value)
        if lowered == "connection":
            if has_close_token(value.encode("latin-1")):
                keep_alive = False
            connection = [*(connection or []), line]
            continue
        lines.append(line)
    body = response.body
    length = len(body) if isinstance(body, bytes) else body.length
    if method == "HEAD" or status in _NO_BODY_STATUSES:
        framing = BodyFraming.NONE
    elif length is not None:
        framing = BodyFraming.LENGTH
    elif http11:
        framing = BodyFraming.CHUNKED
    else:
        framing = BodyFraming.UNTIL_CLOSE
        keep_alive = False
    if status not in _NO_BODY_STATUSES:
        if method == "HEAD" and handler_length is not None:
            if _DIGITS.fullmatch(handler_length) is None:
                raise BadResponse(f"content-length {handler_length!r} is not a number")
            lines.append(f"content-length: {handler_length}\r\n")
        elif length is not None:
            lines.append(f"content-length: {length}\r\n")
        elif http11:
            lines.append("transfer-encoding: chunked\r\n")
    if not keep_alive:
        lines.append("connection: close\r\n\r\n")
    else:
        if connection:
            lines += connection
        lines.append("\r\n")
    return ResponseHead("".join(lines).encode("latin-1"), framing, keep_alive)


@functools.lru_cache(maxsize=1024)
def _header_line(name: str, value: str) -> str:
    """`name: value` and its line end, checked as strictly as h11 checks it (handlers repeat the same
    headers, so the check is remembered)."""
    if _TOKEN.fullmatch(name) is None or _FIELD_VALUE.fullmatch(value) is None:
        raise BadResponse(f"header {name!r}: {value!r} is not a valid HTTP header")
    return f"{name}: {value}\r\n"


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (never empty: an empty chunk ends the body)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def has_close_token(value: bytes) -> bool:
    """Whether a Connection header value names the `close` option (a token, not a substring)."""
    return any(token.strip().lower() == b"close" for token in value.split(b","))


def error_response(status: int, text: str | None = None, *, closing: bool = False) -> Response:
    """A short text/plain error answer sent through h11 (the request was understood)."""
    body = ((text or _reason(status)) + "\n").encode()
    headers = [("content-type", "text/plain; charset=utf-8")]
    if closing:
        headers.append(("connection", "close"))
    return Response(status=status, headers=headers, body=body)


def canned_response(status: int, text: str | None = None) -> bytes:
    """A complete HTTP/1.1 error answer as bytes, ending the connection."""
    body = ((text or _reason(status)) + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {_reason(status)}\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase of `status` ("Not Found"), b"" for an unknown status."""
    return _REASONS.get(status, b"")


_REASONS = {int(status): status.phrase.encode("ascii") for status in HTTPStatus}
# Status lines of the final statuses, built once (h11 would build and check one per answer).
_STATUS_LINES = {
    status: f"HTTP/1.1 {status} {reason.decode('ascii')}\r\n"
    for status, reason in _REASONS.items()
    if status >= 200
}


def _reason(status: int) -> str:
    return reason_phrase(status).decode("ascii") or "Error"

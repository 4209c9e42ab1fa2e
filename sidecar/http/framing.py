"""Pure decisions about what goes on the wire: requests from h11 events, response headers, error answers.

Rules:
- No sockets, no clock: every function here takes values and returns values, and is tested directly.
- The server owns the framing headers (Content-Length, Transfer-Encoding). A handler's Content-Length is
  kept only on HEAD, where there is no body to measure (so HEAD and GET agree).
- 204, 304 and 1xx answers never carry a body nor a Content-Length.
- An error answer that does not go through h11 (the request could not be parsed, or the server is full)
  is a complete, self-contained response that says `Connection: close`.
"""

from __future__ import annotations

from http import HTTPStatus

import h11

from sidecar.http.messages import Request, Response, body_length, split_target

_FRAMING = ("content-length", "transfer-encoding")
_NO_BODY_STATUSES = frozenset({204, 304})


def request_from_event(event: h11.Request, client: tuple[str, int]) -> Request:
    """The handler's view of h11's request event (names lowercase, text decoded as latin-1)."""
    target = event.target.decode("latin-1")
    path, query = split_target(target)
    return Request(
        method=event.method.decode("latin-1"),
        target=target,
        path=path,
        query_string=query,
        headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers],
        http_version=event.http_version.decode("latin-1"),
        client=client,
    )


def head_size(event: h11.Request) -> int:
    """The size of the request line and headers as sent (h11 only bounds *incomplete* heads)."""
    size = len(event.method) + len(event.target) + 12
    for name, value in event.headers:
        size += len(name) + len(value) + 4
    return size


def declared_body_length(event: h11.Request) -> int | None:
    """The request's Content-Length, if it has one (h11 has already checked that it is valid)."""
    for name, value in event.headers:
        if name == b"content-length":
            return int(value)
    return None


def response_headers(response: Response, *, is_head: bool, closing: bool) -> list[tuple[str, str]]:
    """The headers to send for `response`: the handler's, with framing set by the server.

    On HEAD a handler's Content-Length wins; otherwise Content-Length is the body's length when known
    (h11 picks chunked or close-delimited when it is not).
    """
    status = response.status
    headers: list[tuple[str, str]] = []
    handler_length: str | None = None
    for name, value in response.headers:
        lowered = name.lower()
        if lowered in _FRAMING:
            if lowered == "content-length":
                handler_length = value
            continue
        headers.append((name, value))
    if status not in _NO_BODY_STATUSES:
        if is_head and handler_length is not None:
            headers.append(("content-length", handler_length))
        else:
            length = body_length(response.body)
            if length is not None:
                headers.append(("content-length", str(length)))
    if closing:
        headers.append(("connection", "close"))
    return headers


def may_have_body(status: int, method: str) -> bool:
    """Whether body bytes may follow the head of this answer."""
    return method != "HEAD" and status not in _NO_BODY_STATUSES


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


def _reason(status: int) -> str:
    return reason_phrase(status).decode("ascii") or "Error"

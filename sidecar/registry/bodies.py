"""Hooks on response bodies: run something once a body is done (sent, failed, or released on HEAD)."""

from __future__ import annotations

from collections.abc import Callable

from sidecar.http.messages import FileBody, Response, StreamBody


def on_body_done(response: Response, done: Callable[[], None]) -> Response:
    """Call `done` once the response body has been sent, failed, or been released (HEAD)."""
    body = response.body
    if isinstance(body, FileBody):
        inner_close = body.close

        def close() -> None:
            try:
                if inner_close is not None:
                    inner_close()
            finally:
                done()

        response.body = FileBody(body.fd, body.offset, body.length, close)
    elif isinstance(body, StreamBody):
        inner_aclose = body.aclose

        async def aclose() -> None:
            try:
                if inner_aclose is not None:
                    await inner_aclose()
            finally:
                done()

        response.body = StreamBody(body.chunks, body.length, aclose)
    else:
        done()
    return response

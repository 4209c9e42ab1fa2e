"""One accepted connection: read requests with h11, call the handler, write responses.

Theory of operation: the connection is a loop of h11 cycles on a socket this task alone owns. Each cycle
reads a request head (bounded in size and time), reads the small request body, calls the handler, sends
the response (bytes, sendfile or a stream) and starts the next cycle. Pipelined requests simply wait in
h11's buffer for their cycle.

Rules:
- Time limits: the head must be complete `header_timeout` after its first byte (or after accept); a
  keep-alive connection idle for `idle_timeout` is closed; a reader that takes nothing for
  `write_timeout` is cut off. A timed-out head gets no answer (never 408: containerd would retry us).
- Anything that breaks a response half-way (a stream raising, sendfile failing, a short file) closes the
  connection: the client sees a truncated body, never a wrong next response.
- Every body is released (FileBody.close, StreamBody.aclose) exactly once, whatever happened.
- A handler exception is a 500 and a log line, never a dead server.
- A checkpoint after every response keeps one pipelining client from starving the others.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable

import anyio
import anyio.lowlevel
import h11

from sidecar.http import framing, sockio
from sidecar.http.limits import ServerLimits
from sidecar.http.messages import Body, FileBody, Handler, Response, StreamBody
from sidecar.logs import log_event


class _Close(Exception):
    """End this connection now (after whatever was already sent)."""


class _BodyPlaceholder:
    """Stands in for a sendfile body in h11's accounting (h11 only needs its length)."""

    __slots__ = ("_length",)

    def __init__(self, length: int) -> None:
        self._length = length

    def __len__(self) -> int:
        return self._length


class HttpConnection:
    """Serves one accepted socket until it closes. `run` never raises for client misbehaviour."""

    def __init__(
        self,
        sock: socket.socket,
        client: tuple[str, int],
        handler: Handler,
        limits: ServerLimits,
        logger: logging.Logger,
        is_draining: Callable[[], bool],
    ) -> None:
        self._sock = sock
        self._client = client
        self._handler = handler
        self._limits = limits
        self._logger = logger
        self._is_draining = is_draining
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._idle_scope: anyio.CancelScope | None = None

    def close_if_idle(self) -> None:
        """Shutdown: end the connection now if it is waiting for a new request (else after this one)."""
        if self._idle_scope is not None:
            self._idle_scope.cancel()

    async def run(self) -> None:
        linger = False
        try:
            await self._serve_cycles()
        except _Close:
            linger = True
        except (OSError, TimeoutError, h11.ProtocolError):
            pass  # the client went away, stalled, or a body broke mid-way: nothing more to say
        except Exception as exc:  # a bug here must cost one connection, never the server
            log_event(
                self._logger,
                "http_connection_error",
                logging.ERROR,
                client=self._client[0],
                error_type=type(exc).__name__,
                error=str(exc),
            )
        finally:
            await self._close(linger)

    async def _serve_cycles(self) -> None:
        conn = self._h11
        header_deadline: float | None = anyio.current_time() + self._limits.header_timeout
        while True:
            event = await self._read_head(header_deadline)
            if event is None:
                return
            keep_going = await self._answer(event)
            if not keep_going or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                raise _Close
            conn.start_next_cycle()
            header_deadline = None
            await anyio.lowlevel.checkpoint()

    async def _read_head(self, header_deadline: float | None) -> h11.Request | None:
        """The next request head, or None when the connection should end quietly."""
        conn = self._h11
        limits = self._limits
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if conn.their_state is h11.ERROR and self._peer_closed():
                    return None
                await self._send_canned(exc.error_status_hint, str(exc))
                raise _Close from exc
            if event is h11.NEED_DATA:
                if header_deadline is None:
                    if conn.trailing_data[0]:
                        header_deadline = anyio.current_time() + limits.header_timeout
                    else:
                        data = await self._recv_idle()
                        if not data:
                            return None
                        header_deadline = anyio.current_time() + limits.header_timeout
                        conn.receive_data(data)
                        continue
                try:
                    data = await sockio.recv_until(self._sock, header_deadline)
                except TimeoutError:
                    log_event(self._logger, "http_header_timeout", logging.DEBUG, client=self._client[0])
                    return None
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                return event
            return None  # ConnectionClosed

    def _peer_closed(self) -> bool:
        return self._h11.trailing_data[1]

    async def _recv_idle(self) -> bytes:
        """Bytes of a new request on a keep-alive connection; b"" on idle timeout, EOF or shutdown."""
        if self._is_draining():
            return b""
        try:
            return self._sock.recv(sockio.RECV_SIZE)
        except BlockingIOError:
            pass
        with anyio.CancelScope(deadline=anyio.current_time() + self._limits.idle_timeout) as scope:
            self._idle_scope = scope
            try:
                await anyio.wait_readable(self._sock)
            finally:
                self._idle_scope = None
        if scope.cancelled_caught or scope.cancel_called:
            return b""
        try:
            return self._sock.recv(sockio.RECV_SIZE)
        except BlockingIOError:
            return await self._recv_idle()

    async def _answer(self, event: h11.Request) -> bool:
        """Read the body, run the handler and send its response. False: close the connection."""
        limits = self._limits
        if framing.head_size(event) > limits.max_header_bytes:
            return await self._send(framing.error_response(431, closing=True), event.method.decode("latin-1"))
        request = framing.request_from_event(event, self._client)
        declared = framing.declared_body_length(event)
        if declared is not None and declared > limits.max_request_body:
            return await self._send(framing.error_response(413, closing=True), request.method)
        if self._h11.their_state is h11.SEND_BODY:
            body = await self._read_body()
            if body is None:
                return await self._send(framing.error_response(413, closing=True), request.method)
            request.body = body
        try:
            response = await self._handler(request)
        except Exception as exc:
            log_event(
                self._logger,
                "http_handler_error",
                logging.ERROR,
                method=request.method,
                path=request.path,
                error_type=type(exc).__name__,
                error=str(exc),
            )
            response = framing.error_response(500)
        return await self._send(response, request.method)

    async def _read_body(self) -> bytes | None:
        """The whole request body, or None if it is larger than allowed."""
        conn = self._h11
        if conn.they_are_waiting_for_100_continue:
            data = conn.send(h11.InformationalResponse(status_code=100, headers=[]))
            await sockio.send_all(self._sock, data, self._limits.write_timeout)
        deadline = anyio.current_time() + self._limits.body_timeout
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:  # bad chunked framing, or the client quit mid-body
                if not self._peer_closed():
                    await self._send_canned(exc.error_status_hint, str(exc))
                raise _Close from exc
            if event is h11.NEED_DATA:
                conn.receive_data(await sockio.recv_until(self._sock, deadline))
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._limits.max_request_body:
                    return None
                parts.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:  # ConnectionClosed mid-body
                raise _Close

    async def _send(self, response: Response, method: str) -> bool:
        """Send `response` through h11; release its body in all cases. False: close the connection."""
        body = response.body
        try:
            return await self._send_unreleased(response, method)
        finally:
            await _release(body, self._logger)

    async def _send_unreleased(self, response: Response, method: str) -> bool:
        conn = self._h11
        sock = self._sock
        timeout = self._limits.write_timeout
        closing = self._is_draining()
        headers = framing.response_headers(response, is_head=method == "HEAD", closing=closing)
        try:
            reason = framing.reason_phrase(response.status)
            head = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        except h11.LocalProtocolError as exc:
            log_event(
                self._logger, "http_bad_response", logging.ERROR, status=response.status, error=str(exc)
            )
            await self._send_canned(500)
            raise _Close from exc
        body = response.body
        if not framing.may_have_body(response.status, method):
            await sockio.send_all(sock, head + conn.send(h11.EndOfMessage()), timeout)
            return True
        if isinstance(body, bytes):
            if body:
                conn.send_with_data_passthrough(h11.Data(data=body))
            conn.send(h11.EndOfMessage())
            if len(body) <= 256 * 1024:
                await sockio.send_all(sock, head + body, timeout)
            else:
                await sockio.send_all(sock, head, timeout, sockio.MSG_MORE)
                await sockio.send_all(sock, body, timeout)
            return True
        if isinstance(body, FileBody):
            return await self._send_file(head, body)
        return await self._send_stream(head, body)

    async def _send_file(self, head: bytes, body: FileBody) -> bool:
        conn = self._h11
        timeout = self._limits.write_timeout
        if body.length:
            # Account for the bytes in h11 without handing them to it; the header rides with them.
            conn.send_with_data_passthrough(h11.Data(data=_BodyPlaceholder(body.length)))  # type: ignore[arg-type]
            await sockio.send_all(self._sock, head, timeout, sockio.MSG_MORE)
            try:
                await sockio.send_file(self._sock, body.fd, body.offset, body.length, timeout)
            except OSError as exc:
                if not isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                    log_event(self._logger, "http_sendfile_failed", logging.WARNING, error=str(exc))
                raise _Close from exc
        else:
            await sockio.send_all(self._sock, head, timeout)
        conn.send(h11.EndOfMessage())
        return True

    async def _send_stream(self, head: bytes, body: StreamBody) -> bool:
        conn = self._h11
        sock = self._sock
        timeout = self._limits.write_timeout
        pending: bytes | None = head  # the head goes out with the first chunk
        chunks = body.chunks
        while True:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except Exception as exc:
                log_event(
                    self._logger,
                    "http_stream_failed",
                    logging.WARNING,
                    error_type=type(exc).__name__,
                    error=str(exc),
                )
                if pending is not None:
                    await self._send_canned(502, "upstream body failed")
                raise _Close from exc
            if not chunk:
                continue
            try:
                parts = conn.send_with_data_passthrough(h11.Data(data=chunk)) or []
            except h11.LocalProtocolError as exc:
                log_event(self._logger, "http_stream_too_long", logging.WARNING, error=str(exc))
                raise _Close from exc
            data = b"".join(parts) if len(parts) != 1 else parts[0]
            if pending is not None:
                data = pending + data
                pending = None
            await sockio.send_all(sock, data, timeout)
        try:
            tail = conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            log_event(self._logger, "http_stream_too_short", logging.WARNING, error=str(exc))
            raise _Close from exc
        await sockio.send_all(sock, tail if pending is None else pending + tail, timeout)
        return True

    async def _send_canned(self, status: int, text: str | None = None) -> None:
        """A self-contained error answer for when h11 cannot frame one; best effort."""
        with contextlib.suppress(OSError, TimeoutError):
            answer = framing.canned_response(status, text)
            await sockio.send_all(self._sock, answer, self._limits.write_timeout)

    async def _close(self, linger: bool) -> None:
        """Close the socket. With `linger`, first let the client read our last answer: stop sending,
        then drop its remaining input for a moment, so the kernel does not reset the connection."""
        sock = self._sock
        try:
            if linger:
                sock.shutdown(socket.SHUT_WR)
                deadline = anyio.current_time() + self._limits.linger_timeout
                dropped = 0
                with anyio.CancelScope(shield=True):
                    while dropped < 1 << 20:
                        data = await sockio.recv_until(sock, deadline)
                        if not data:
                            break
                        dropped += len(data)
        except (OSError, TimeoutError):
            pass
        finally:
            sock.close()


async def _release(body: Body, logger: logging.Logger) -> None:
    """Give the body's resources back; a failing release is logged, never raised."""
    try:
        if isinstance(body, FileBody):
            if body.close is not None:
                body.close()
        elif isinstance(body, StreamBody) and body.aclose is not None:
            with anyio.CancelScope(shield=True):
                await body.aclose()
    except Exception as exc:
        log_event(
            logger, "http_body_release_failed", logging.WARNING, error_type=type(exc).__name__, error=str(exc)
        )

"""One accepted connection: read requests with h11, call the handler, write responses.

Theory of operation: the connection is a loop of request cycles on a socket this task alone owns. Each
cycle parses one request with a fresh h11 connection (head bounded in size and time, then the small
request body), calls the handler, and writes the response itself: the head as `framing` builds it, then
the body (bytes, sendfile or a stream) framed as `framing` decided. Pipelined requests simply wait in
h11's buffer and are handed to the next cycle's parser.

Rules:
- Time limits: the head must be complete `header_timeout` after its first byte (or after accept); a
  connection counts as idle until its request's first byte (a new one too), and one idle for
  `idle_timeout` is closed (by the server's idle sweep, which calls
  `close_if_idle`); a reader that takes nothing for `write_timeout` is cut off. A timed-out head gets
  no answer (never 408: containerd would retry us).
- Anything that breaks a response half-way (a stream raising, sendfile failing, a short file) closes the
  connection: the client sees a truncated body, never a wrong next response.
- Every body is released (FileBody.close, StreamBody.aclose) exactly once, whatever happened.
- A handler exception is a 500 and a log line, never a dead server.
- A request that is already there when we look (pipelined, or sent before we asked) costs a checkpoint,
  so a client that keeps its pipe full cannot starve the others; waiting for one yields anyway.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable

import anyio
import anyio.lowlevel
import h11

from sidecar.http import framing, sockio
from sidecar.http.limits import ServerLimits
from sidecar.http.messages import Body, FileBody, Handler, Response, StreamBody
from sidecar.logs import log_event

# A body this small that was written whole counts as received: it is not worth a wait for the ACK.
_TRUST_WRITTEN_UP_TO = 256 * 1024


class _Close(Exception):
    """End this connection now (after whatever was already sent)."""


class _BodyFailed(Exception):
    """The body itself failed (a stream raised or had the wrong length, a file ended short): the cause
    of a `_Close` that is our side's fault, not the client's."""


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
        self._idle_since: float | None = None  # set while waiting for a new request
        self._waiter = sockio.SocketWaiter()  # made in the accept loop, inside the event loop

    def close_if_idle(self, idle_since: float | None = None) -> None:
        """End the connection now if it is waiting for a new request (else after this one); with
        `idle_since` (time.monotonic()), only if it has been waiting since then or longer."""
        since = self._idle_since
        if since is not None and (idle_since is None or since <= idle_since):
            # Wakes the waiting task: the socket reads as ended (a request that raced in is still read
            # and answered). Cheaper than a cancel scope around every keep-alive wait.
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RD)

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
        max_head = self._limits.max_header_bytes
        # The first head is due `header_timeout` after accept; later ones after their first byte.
        deadline: float | None = anyio.current_time() + self._limits.header_timeout
        # Until its first byte a connection is idle, the first one too: Go's client (containerd) dials
        # spare connections it may never use, and shutdown must close those at once, not drain them.
        started = False  # bytes of the next request are here
        leftover, peer_closed = b"", False
        while True:
            # A fresh parser per request: it costs less than walking h11's server side through a
            # response we write ourselves, and a cycle's leftover bytes carry over unchanged.
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
            if leftover:
                conn.receive_data(leftover)
                if not started:
                    # A pipelined request: yield once, so a client that keeps its pipe full cannot
                    # starve the other connections.
                    started = True
                    await anyio.lowlevel.checkpoint()
            if peer_closed:
                conn.receive_data(b"")
            event = await self._read_head(conn, deadline, started)
            if event is None:
                return
            if not await self._answer(conn, event):
                raise _Close
            leftover, peer_closed = conn.trailing_data
            deadline, started = None, False

    async def _read_head(
        self, conn: h11.Connection, deadline: float | None, started: bool
    ) -> h11.Request | None:
        """The next request head, or None when the connection should end quietly.

        `started` False: nothing of the request is here yet (an idle keep-alive connection). Once it
        has started, `deadline` None means the head's clock starts at its first wait for more bytes
        (microseconds after the first byte: a whole head then costs no clock read).
        """
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if conn.their_state is h11.ERROR and conn.trailing_data[1]:
                    return None
                await self._send_canned(exc.error_status_hint, str(exc))
                raise _Close from exc
            if event is h11.NEED_DATA:
                if not started:
                    data = await self._recv_idle(deadline)
                    if not data:
                        return None
                    started = True
                    conn.receive_data(data)
                    continue
                if deadline is None:
                    deadline = anyio.current_time() + self._limits.header_timeout
                try:
                    data = await sockio.recv_until(self._sock, deadline)
                except TimeoutError:
                    log_event(self._logger, "http_header_timeout", logging.DEBUG, client=self._client[0])
                    return None
                conn.receive_data(data)
                continue
            if type(event) is h11.Request:
                return event
            return None  # ConnectionClosed

    async def _recv_idle(self, deadline: float | None = None) -> bytes:
        """Bytes of a new request on a keep-alive connection; b"" on idle timeout, EOF or shutdown.

        The idle timeout and shutdown come from the server (`close_if_idle`), not from a scope here;
        `deadline` bounds the wait for a new connection's first request (the header timeout).
        """
        if self._is_draining():
            return b""
        sock = self._sock
        try:
            data = sock.recv(sockio.RECV_SIZE)
        except BlockingIOError:
            pass
        else:
            # The next request was already here: yield once (see _serve_cycles), as waiting would have.
            await anyio.lowlevel.checkpoint()
            return data
        self._idle_since = time.monotonic()  # only the server's idle sweep reads it (same clock)
        try:
            if deadline is None:
                await self._waiter.readable(sock)
            else:
                with anyio.move_on_at(deadline) as scope:
                    await self._waiter.readable(sock)
                if scope.cancelled_caught:
                    log_event(self._logger, "http_header_timeout", logging.DEBUG, client=self._client[0])
                    return b""
        finally:
            self._idle_since = None
        try:
            return sock.recv(sockio.RECV_SIZE)
        except BlockingIOError:
            return await self._recv_idle(deadline)

    async def _answer(self, conn: h11.Connection, event: h11.Request) -> bool:
        """Read the body, run the handler and send its response. False: close the connection."""
        limits = self._limits
        request, head = framing.read_request(event, self._client)
        if head.size > limits.max_header_bytes:
            return await self._send(framing.error_response(431, closing=True), request.method, head)
        if head.content_length is not None and head.content_length > limits.max_request_body:
            return await self._send(framing.error_response(413, closing=True), request.method, head)
        # Without a body (a GET), h11 has nothing more to say about this request, and what it holds
        # beyond the head is the next request: skip asking it for the empty body's end.
        if head.has_body and conn.their_state is h11.SEND_BODY:
            body = await self._read_body(conn)
            if body is None:
                return await self._send(framing.error_response(413, closing=True), request.method, head)
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
        return await self._send(response, request.method, head)

    async def _read_body(self, conn: h11.Connection) -> bytes | None:
        """The whole request body, or None if it is larger than allowed."""
        if conn.they_are_waiting_for_100_continue:
            await sockio.send_all(self._sock, framing.CONTINUE, self._limits.write_timeout)
        deadline: float | None = None  # set on the first wait: a GET's empty body never waits
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:  # bad chunked framing, or the client quit mid-body
                if not conn.trailing_data[1]:
                    await self._send_canned(exc.error_status_hint, str(exc))
                raise _Close from exc
            if event is h11.NEED_DATA:
                if deadline is None:
                    deadline = anyio.current_time() + self._limits.body_timeout
                conn.receive_data(await sockio.recv_until(self._sock, deadline))
            elif type(event) is h11.Data:
                size += len(event.data)
                if size > self._limits.max_request_body:
                    return None
                parts.append(event.data)
            elif type(event) is h11.EndOfMessage:
                return b"".join(parts) if parts else b""
            else:  # ConnectionClosed mid-body
                raise _Close

    async def _send(self, response: Response, method: str, request: framing.RequestHead) -> bool:
        """Send `response`; release its body in all cases. False: close the connection."""
        body = response.body
        try:
            return await self._send_unreleased(response, method, request)
        finally:
            await _release(body, self._logger)

    async def _send_unreleased(self, response: Response, method: str, request: framing.RequestHead) -> bool:
        sock = self._sock
        timeout = self._limits.write_timeout
        try:
            head = framing.response_head(
                response,
                method=method,
                keep_alive=request.keep_alive and not self._is_draining(),
                http11=request.http11,
            )
        except framing.BadResponse as exc:
            log_event(
                self._logger, "http_bad_response", logging.ERROR, status=response.status, error=str(exc)
            )
            await self._send_canned(500)
            raise _Close from exc
        body = response.body
        body_framing = head.framing
        if body_framing is framing.BodyFraming.NONE:
            await sockio.send_all(sock, head.data, timeout)
        elif isinstance(body, bytes):
            if len(body) <= 256 * 1024:
                await sockio.send_all(sock, head.data + body, timeout)
            else:
                await sockio.send_all(sock, head.data, timeout, sockio.MSG_MORE)
                await sockio.send_all(sock, body, timeout)
        else:
            await self._send_body(response, body, head.data, body_framing)
        return head.keep_alive

    async def _send_body(
        self, response: Response, body: FileBody | StreamBody, head: bytes, body_framing: framing.BodyFraming
    ) -> None:
        """Send a file or stream body and record on `response` how much of it the client received.

        Written is not received: a client that reads one chunk of an open-ended range and hangs up
        leaves the rest in the socket buffers. So a body that broke off counts what the client's TCP
        acknowledged, and a large 206 waits for the acknowledgement once it is out (a poll or two when
        the client reads on; at once when it hung up and reset the connection).
        """
        sock = self._sock
        acked_before = sockio.bytes_acked(sock)
        written = [0]  # stream body bytes handed to the kernel
        try:
            if isinstance(body, FileBody):
                await self._send_file(head, body)
                written[0] = body.length
            else:
                await self._send_stream(head, body, body_framing, written)
        except BaseException as exc:
            promised = body.length if isinstance(body, FileBody) else written[0]
            response.sent = _delivered(acked_before, sockio.bytes_acked(sock), len(head), promised)
            response.body_failed = isinstance(exc, _BodyFailed) or isinstance(exc.__cause__, _BodyFailed)
            raise
        response.sent = written[0]
        # Only a partial answer waits: clients hang up on those by design (2.1's chunks); a whole body's
        # client reads it to the end, and a keep-alive client's next request must not wait on a poll.
        if acked_before is not None and response.status == 206 and written[0] > _TRUST_WRITTEN_UP_TO:
            acked = await sockio.wait_acknowledged(sock, self._limits.write_timeout)
            response.sent = _delivered(acked_before, acked, len(head), written[0])

    async def _send_file(self, head: bytes, body: FileBody) -> None:
        timeout = self._limits.write_timeout
        if not body.length:
            await sockio.send_all(self._sock, head, timeout)
            return
        # MSG_MORE: the head waits for the first file bytes and leaves in the same segment.
        await sockio.send_all(self._sock, head, timeout, sockio.MSG_MORE)
        try:
            await sockio.send_file(self._sock, body.fd, body.offset, body.length, timeout, self._waiter)
        except sockio.FileBodyShort as exc:
            log_event(self._logger, "http_sendfile_failed", logging.WARNING, error=str(exc))
            raise _Close from _BodyFailed(str(exc))
        except OSError as exc:
            if not isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                log_event(self._logger, "http_sendfile_failed", logging.WARNING, error=str(exc))
            raise _Close from exc

    async def _send_stream(
        self, head: bytes, body: StreamBody, body_framing: framing.BodyFraming, written: list[int]
    ) -> None:
        sock = self._sock
        timeout = self._limits.write_timeout
        chunked = body_framing is framing.BodyFraming.CHUNKED
        remaining = body.length  # None: unknown, chunked or close-delimited
        pending: bytes | None = head  # the head goes out with the first chunk
        chunks = body.chunks
        while True:
            try:
                data = await chunks.__anext__()
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
                raise _Close from _BodyFailed(str(exc))
            if not data:
                continue
            if remaining is not None:
                if len(data) > remaining:
                    log_event(
                        self._logger,
                        "http_stream_too_long",
                        logging.WARNING,
                        error=f"a {len(data)}-byte chunk with {remaining} bytes left of the length",
                    )
                    raise _Close from _BodyFailed("stream longer than its length")
                remaining -= len(data)
            size = len(data)
            if chunked:
                data = framing.chunk(data)
            if pending is not None:
                data = pending + data
                pending = None
            await sockio.send_all(sock, data, timeout)
            written[0] += size
        if remaining:
            log_event(
                self._logger,
                "http_stream_too_short",
                logging.WARNING,
                error=f"the stream ended {remaining} bytes short of its length",
            )
            raise _Close from _BodyFailed("stream shorter than its length")
        tail = framing.LAST_CHUNK if chunked else b""
        if pending is not None:
            tail = pending + tail
        if tail:
            await sockio.send_all(sock, tail, timeout)

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


def _delivered(acked_before: int | None, acked_now: int | None, head: int, promised: int) -> int:
    """Body bytes that reached the client: what its TCP acknowledged since the head went out, at most
    what was handed to the kernel. Without TCP_INFO, the bytes handed over."""
    if acked_before is None or acked_now is None:
        return promised
    return max(0, min(promised, acked_now - acked_before - head))


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

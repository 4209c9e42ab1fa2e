"""The peer client against the real server: streamed GETs, POSTs, limits, timeouts, pooling, abort."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.abc
import pytest
from http_support import FILE_SIZE, RunningServer, SampleHandler, run_server

from sidecar.http import ServerLimits
from sidecar.http.client import (
    PeerClient,
    PeerConnectError,
    PeerProtocolError,
    PeerTimeout,
    ResponseTooLarge,
)

pytestmark = pytest.mark.anyio


async def test_get_streams_the_whole_body_with_status_and_headers(server: RunningServer) -> None:
    async with PeerClient() as client:
        response = await client.get("127.0.0.1", server.port, "/file")
        async with response:
            body = b"".join([chunk async for chunk in response.iter_chunks()])
    assert response.status == 200
    assert response.header("content-length") == str(FILE_SIZE)
    assert body == server.handler.file_path.read_bytes()


async def test_get_sends_the_extra_headers(server: RunningServer) -> None:
    async with PeerClient() as client:
        response = await client.get("127.0.0.1", server.port, "/echo?x=1", [("Range", "bytes=5-")])
        async with response:
            body = await response.read(1000)
    assert body.startswith(b"GET /echo?x=1 bytes=5- 127.0.0.1")


async def test_head_returns_headers_and_an_empty_body(server: RunningServer) -> None:
    async with PeerClient() as client:
        response = await client.get("127.0.0.1", server.port, "/file", method="HEAD")
        async with response:
            assert await response.read(10) == b""
    assert response.header("content-length") == str(FILE_SIZE)


async def test_post_returns_status_and_bytes(server: RunningServer) -> None:
    async with PeerClient() as client:
        answer = await client.post("127.0.0.1", server.port, "/echo", b'{"keys": []}')
    assert answer.status == 200
    assert answer.body.startswith(b"POST /echo ")
    assert answer.body.endswith(b'{"keys": []}')


async def test_post_refuses_an_answer_larger_than_allowed(server: RunningServer) -> None:
    async with PeerClient() as client:
        with pytest.raises(ResponseTooLarge):
            await client.post("127.0.0.1", server.port, "/file", b"{}", max_response_bytes=1000)


async def test_keep_alive_connections_are_reused_for_the_same_peer(server: RunningServer) -> None:
    async with PeerClient() as client:
        ports = []
        for _ in range(3):
            response = await client.get("127.0.0.1", server.port, "/echo")
            async with response:
                await response.read(1000)
            ports.append(response.header("x-client-port"))
    assert len(set(ports)) == 1


async def test_a_pooled_connection_the_peer_closed_is_replaced_transparently(handler: SampleHandler) -> None:
    with run_server(handler, ServerLimits(idle_timeout=0.1)) as running:
        async with PeerClient() as client:
            first = await client.get("127.0.0.1", running.port, "/echo")
            async with first:
                await first.read(1000)
            with anyio.fail_after(5):  # until the server has closed the idle connection
                while running.server.connection_count:
                    await anyio.sleep(0.01)
            second = await client.get("127.0.0.1", running.port, "/echo")
            async with second:
                await second.read(1000)
    assert second.status == 200
    assert second.header("x-client-port") != first.header("x-client-port")


async def test_time_to_headers_is_bounded(server: RunningServer) -> None:
    async with PeerClient() as client:
        with pytest.raises(PeerTimeout):
            await client.get("127.0.0.1", server.port, "/slow?seconds=5", headers_timeout=0.2)


async def test_unreachable_peer_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: connection refused
        async with PeerClient() as client:
            with pytest.raises(PeerConnectError):
                await client.get("127.0.0.1", port, "/", connect_timeout=1.0)


async def test_a_body_cut_by_the_peer_is_an_error_not_a_short_read(server: RunningServer) -> None:
    async with PeerClient() as client:
        response = await client.get("127.0.0.1", server.port, "/stream-fail")
        received = b""
        with pytest.raises(PeerProtocolError):
            async with response:
                async for chunk in response.iter_chunks():
                    received += chunk
    assert received == b"x" * 30


async def test_abort_closes_the_connection_mid_body_and_the_client_stays_usable(
    server: RunningServer,
) -> None:
    async with PeerClient() as client:
        response = await client.get("127.0.0.1", server.port, "/file")
        async for _chunk in response.iter_chunks():
            break
        await response.abort()
        again = await client.get("127.0.0.1", server.port, "/bytes")
        async with again:
            assert await again.read(100) == b"hello world"


# -- peers that answer with exact bytes: framing the client must get right ---------------------------


ConnectionHandler = Callable[[anyio.abc.SocketStream, int], Awaitable[None]]


@contextlib.asynccontextmanager
async def peer_serving(handle: ConnectionHandler) -> AsyncIterator[tuple[int, list[int]]]:
    """A listener on 127.0.0.1 that calls `handle(stream, n)` for its n-th connection.
    Yields (port, the indexes of the connections accepted so far)."""
    accepted: list[int] = []

    async def serve(stream: anyio.abc.SocketStream) -> None:
        index = len(accepted)
        accepted.append(index)
        async with stream:
            await handle(stream, index)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, serve)
            yield port, accepted
            tg.cancel_scope.cancel()
    finally:
        await listener.aclose()


async def read_request_head(stream: anyio.abc.SocketStream) -> None:
    request = b""
    while b"\r\n\r\n" not in request:
        request += await stream.receive()


def scripted_peer(
    *answers: list[bytes], pause: float = 0.0
) -> contextlib.AbstractAsyncContextManager[tuple[int, list[int]]]:
    """A peer that answers every request on its n-th connection with `answers[n]` (the last one for later
    connections), written piece by piece, `pause` seconds apart. Yields (port, connections accepted)."""

    async def answer(stream: anyio.abc.SocketStream, index: int) -> None:
        pieces = answers[min(index, len(answers) - 1)]
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            while True:  # every request on this connection gets the same answer
                await read_request_head(stream)
                for piece in pieces:
                    await stream.send(piece)
                    await anyio.sleep(pause)

    return peer_serving(answer)


async def get_body(client: PeerClient, port: int, stall_timeout: float | None = None) -> bytes:
    response = await client.get("127.0.0.1", port, "/x", headers_timeout=2.0)
    async with response:
        return b"".join([chunk async for chunk in response.iter_chunks(stall_timeout)])


async def test_a_head_that_arrives_byte_by_byte_with_the_body_in_its_last_packet() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    pieces = [bytes([b]) for b in head[:-1]] + [head[-1:] + b"hello"]
    async with scripted_peer(pieces, pause=0.001) as (port, accepted), PeerClient() as client:
        assert await get_body(client, port) == b"hello"
        assert await get_body(client, port) == b"hello"
        assert len(accepted) == 1  # read to its exact end, the connection went back to the pool


async def test_an_informational_answer_before_the_final_one_is_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with scripted_peer([answer]) as (port, _), PeerClient() as client:
        assert await get_body(client, port) == b"ok"


async def test_a_chunked_body_is_read_through_h11_and_not_pooled() -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    async with scripted_peer([answer]) as (port, accepted), PeerClient() as client:
        assert await get_body(client, port) == b"abcde"
        assert await get_body(client, port) == b"abcde"
        assert len(accepted) == 2


async def test_bytes_beyond_the_content_length_are_an_error_and_the_connection_is_dropped() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcXYZ"
    good = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
    async with scripted_peer([answer], [good]) as (port, accepted), PeerClient() as client:
        with pytest.raises(PeerProtocolError, match="more than its Content-Length"):
            await get_body(client, port)
        assert await get_body(client, port) == b"abc"
        assert len(accepted) == 2


async def test_a_peer_that_asks_to_close_is_not_pooled() -> None:
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with scripted_peer([answer]) as (port, accepted), PeerClient() as client:
        assert await get_body(client, port) == b"ok"
        assert await get_body(client, port) == b"ok"
        assert len(accepted) == 2


async def test_a_body_that_stalls_is_a_timeout() -> None:
    pieces = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]
    async with scripted_peer(pieces) as (port, _), PeerClient() as client:
        with pytest.raises(PeerTimeout, match="stalled"):
            await get_body(client, port, stall_timeout=0.2)


async def test_an_endless_head_is_a_protocol_error() -> None:
    pieces = [b"HTTP/1.1 200 OK\r\n"] + [b"x-filler: " + b"a" * 1000 + b"\r\n"] * 80
    async with scripted_peer(pieces) as (port, _), PeerClient() as client:
        with pytest.raises(PeerProtocolError, match="head over"):
            await get_body(client, port)


async def test_an_answer_without_a_length_ends_with_the_close() -> None:
    async def close_after(stream: anyio.abc.SocketStream, index: int) -> None:
        await read_request_head(stream)
        await stream.send(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")

    async with peer_serving(close_after) as (port, _), PeerClient() as client:
        assert await get_body(client, port) == b"until the end"


async def test_a_pooled_connection_is_checked_before_it_carries_a_request() -> None:
    read = [anyio.Event() for _ in range(3)]  # the client has read answer n to its end
    spoiled = [anyio.Event() for _ in range(3)]  # connection n is closed, or talked out of turn, since

    async def answer_then(stream: anyio.abc.SocketStream, index: int) -> None:
        await read_request_head(stream)
        await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await read[index].wait()  # only then: the connection sits idle in the client's pool
        if index == 0:
            await stream.aclose()  # closes the pooled connection, as a peer's idle timeout does
        else:
            await stream.send(b"unasked")  # bytes while idle: the connection cannot be trusted
        spoiled[index].set()
        await anyio.sleep_forever()

    async with peer_serving(answer_then) as (port, accepted), PeerClient() as client:
        for request in range(3):
            assert await get_body(client, port) == b"ok"
            read[request].set()
            with anyio.fail_after(5):
                await spoiled[request].wait()
    # Each request found its pooled connection unusable and opened a fresh one at once: never a
    # request sent into a closed connection and retried, never an answer parsed from stray bytes.
    assert len(accepted) == 3

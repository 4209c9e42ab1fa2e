"""The peer client against the real server: streamed GETs, POSTs, limits, timeouts, pooling, abort."""

from __future__ import annotations

import socket

import anyio
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
            await anyio.sleep(0.5)  # the server closes the idle connection meanwhile
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

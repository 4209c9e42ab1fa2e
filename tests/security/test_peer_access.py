"""Peer tokens and the upload limit at the handler. Every 127.x address is loopback, which never needs
a token, so a peer's address is given directly; the lab tests check the same over real namespaces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecar.containerd import MemoryStore
from sidecar.http.messages import Request
from sidecar.registry import RegistryHandler, Relay, RouteConfig
from sidecar.registry.handler import LOCAL_ONLY_HEADER
from sidecar.security import Gate, PeerTokens
from sidecar.security.tokens import TOKEN_HEADER

pytestmark = pytest.mark.anyio
NS = "registry.example"
TOKEN = "peer-token-0123456789abcdef"


def request(client: str, path: str, *headers: tuple[str, str]) -> Request:
    route, _, query = path.partition("?")
    return Request("GET", path, route, query, list(headers), "1.1", (client, 1))


async def handler_with_blob(tmp_path: Path) -> tuple[RegistryHandler, str]:
    store = MemoryStore()
    digest = store.add_blob(b"x" * 1000)
    handler = RegistryHandler(store, RouteConfig(mirrored_registries=(NS,)), Relay())
    (tmp_path / "t").write_text(TOKEN)
    handler.peer_auth = PeerTokens(str(tmp_path / "t")).accepts
    return handler, f"/v2/app/blobs/{digest}?ns={NS}"


async def test_a_peer_without_the_token_is_refused_and_with_it_served(tmp_path: Path) -> None:
    handler, path = await handler_with_blob(tmp_path)
    refused = await handler(request("10.1.0.5", path, (LOCAL_ONLY_HEADER, "1")))
    assert refused.status == 403 and json.loads(refused.body)["errors"][0]["code"] == "DENIED"  # type: ignore[arg-type]
    wrong = await handler(request("10.1.0.5", path, (TOKEN_HEADER, TOKEN + "x")))
    assert wrong.status == 403
    served = await handler(request("10.1.0.5", path, (TOKEN_HEADER, TOKEN), (LOCAL_ONLY_HEADER, "1")))
    assert served.status == 200
    advertise = await handler(request("10.1.0.5", "/_lokal/v1/advertise"))
    assert advertise.status == 403  # the peer protocol needs the token too


async def test_containerd_on_loopback_needs_no_token(tmp_path: Path) -> None:
    handler, path = await handler_with_blob(tmp_path)
    assert (await handler(request("127.0.0.1", path))).status == 200
    assert (await handler(request("::1", path))).status == 200


async def test_past_the_upload_limit_a_peer_gets_a_fast_503_and_a_finished_body_frees_its_slot(
    tmp_path: Path,
) -> None:
    handler, path = await handler_with_blob(tmp_path)
    handler.peer_auth = None
    handler.uploads = Gate("peer_uploads", 1)
    first = await handler(request("127.0.0.1", path, (LOCAL_ONLY_HEADER, "1")))
    assert first.status == 200
    second = await handler(request("127.0.0.1", path, (LOCAL_ONLY_HEADER, "1")))
    assert second.status == 503
    assert (await handler(request("127.0.0.1", path))).status == 200  # containerd is never limited
    first.body.close()  # type: ignore[union-attr]  # the server releases the body when it is sent
    third = await handler(request("127.0.0.1", path, (LOCAL_ONLY_HEADER, "1")))
    assert third.status == 200
    third.body.close()  # type: ignore[union-attr]

"""The relay path between real HTTP servers: providers ranked by topology, hedging, resume, digest
verification, and the fast miss."""

from __future__ import annotations

import http.client
import json
from collections.abc import AsyncIterator

import anyio
import pytest

from sidecar.caps.bucket import TokenBucket
from sidecar.caps.pacer import FROM_OTHER_REGIONS, Cap
from sidecar.containerd import MemoryStore, OpenBlob, StreamBlob
from sidecar.membership import CrossRegion, Peer, TopologyMode
from sidecar.oci import Digest, digest_of
from sidecar.registry.suspicion import MixedMismatches
from sidecar.topology.policy import TopologyPolicy
from tests.nodes import holding as held
from tests.registry.peers import NS, cluster

pytestmark = pytest.mark.anyio

LAYER = bytes((i * 7) % 251 for i in range(3_000_000))
LAYER_DIGEST = digest_of(LAYER)

A = Peer("a", "127.0.0.2", "r1", "z1")
B = Peer("b", "127.0.0.3", "r1", "z1")
C = Peer("c", "127.0.0.4", "r1", "z2")
D = Peer("d", "127.0.0.5", "r2", "z3")


async def holding(data: bytes = LAYER, store: MemoryStore | None = None) -> MemoryStore:
    return await held(data, store)


def fetch(address: str, port: int, digest: Digest, headers: dict[str, str] | None = None
          ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(address, port, timeout=30)
    try:
        conn.request("GET", f"/v2/app/blobs/{digest}?ns={NS}", headers=headers or {})
        response = conn.getresponse()
        try:
            body = response.read()
        except http.client.IncompleteRead as exc:
            body = exc.partial
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


async def get(address: str, port: int, digest: Digest = LAYER_DIGEST, **headers: str
              ) -> tuple[int, dict[str, str], bytes]:
    return await anyio.to_thread.run_sync(lambda: fetch(address, port, digest, headers))


async def test_a_same_zone_holder_is_preferred_to_an_other_zone_holder() -> None:
    stores = {"b": await holding(), "c": await holding()}
    async with cluster([A, B, C, D], stores) as (nodes, port):
        status, headers, body = await get(A.address or "", port)
    assert status == 200 and body == LAYER
    assert nodes["a"].book.snapshot()["b"].throughput_bps  # type: ignore[attr-defined]
    assert "c" not in nodes["a"].book.snapshot()  # type: ignore[attr-defined]
    assert headers["docker-content-digest"] == str(LAYER_DIGEST)


async def test_cross_region_is_used_only_when_the_policy_allows_it() -> None:
    stores = {"d": await holding()}
    async with cluster([A, B, C, D], stores) as (_, port):
        status, _, body = await get(A.address or "", port)
    assert status == 200 and body == LAYER

    never = TopologyPolicy(TopologyMode.PREFER, CrossRegion.NEVER)
    async with cluster([A, B, C, D], {"d": await holding()}, never) as (_, port):
        status, _, body = await get(A.address or "", port)
    assert status == 404 and json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"


async def test_isolate_mode_never_relays_from_another_region() -> None:
    isolate = TopologyPolicy(TopologyMode.ISOLATE)
    async with cluster([A, B, C, D], {"d": await holding()}, isolate) as (_, port):
        status, _, _ = await get(A.address or "", port)
    assert status == 404


async def test_a_digest_nobody_holds_is_a_404_and_the_server_stays_up() -> None:
    async with cluster([A, B, C], {}) as (_, port):
        status, _, body = await get(A.address or "", port, digest_of(b"nobody"))
        assert status == 404 and json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"
        assert (await get(A.address or "", port, digest_of(b"again")))[0] == 404


async def test_a_peer_request_is_never_forwarded_again() -> None:
    async with cluster([A, B], {"b": await holding()}) as (_, port):
        status, _, _ = await get(A.address or "", port, **{"X-Lokal-Local-Only": "1"})
    assert status == 404


async def test_a_range_request_is_relayed_as_206() -> None:
    async with cluster([A, B], {"b": await holding()}) as (_, port):
        status, headers, body = await get(A.address or "", port, Range="bytes=1000-")
    assert status == 206
    assert headers["content-range"] == f"bytes 1000-{len(LAYER) - 1}/{len(LAYER)}"
    assert body == LAYER[1000:]


class CorruptStore(MemoryStore):
    """Serves other bytes of the right length under the right digest (a lying peer)."""

    async def open_blob(self, digest: Digest) -> OpenBlob | None:
        blob = await super().open_blob(digest)
        if blob is None:
            return None
        blob.close()
        bad = bytearray(LAYER)
        bad[len(bad) // 2] ^= 0xFF

        async def read(offset: int, length: int) -> AsyncIterator[bytes]:
            yield bytes(bad[offset : offset + length])

        return StreamBlob(len(bad), read)


class DyingStore(MemoryStore):
    """Sends half of the blob, then breaks (a provider killed mid-layer). `lying`: that half is corrupt."""

    def __init__(self, lying: bool = False) -> None:
        super().__init__()
        self.lying = lying

    async def open_blob(self, digest: Digest) -> OpenBlob | None:
        blob = await super().open_blob(digest)
        if blob is None:
            return None
        blob.close()

        async def read(offset: int, length: int) -> AsyncIterator[bytes]:
            half = bytearray(LAYER[offset : offset + length // 2])
            half[0] ^= 0xFF if self.lying else 0
            yield bytes(half)
            raise ConnectionError("provider died")

        return StreamBlob(len(LAYER), read)


class SilentStore(MemoryStore):
    """Accepts the request and never answers (a hung provider)."""

    async def open_blob(self, digest: Digest) -> OpenBlob | None:
        await anyio.sleep(3600)
        return None


async def test_a_lying_peer_is_detected_the_body_is_cut_and_the_retry_completes() -> None:
    stores = {"b": await holding(store=CorruptStore()), "c": await holding()}
    async with cluster([A, B, C], stores) as (nodes, port):
        status, _, body = await get(A.address or "", port)
        # The corrupt copy is cut short: the last chunk was held back until the digest check failed.
        assert status == 200 and len(body) < len(LAYER)
        assert nodes["a"].book.marked_bad == 1
        assert nodes["a"].book.quarantined() == {"b"}  # b sent the whole body: shown to have lied
        # containerd's ingest holds the bad prefix: lokal aborts it so that the next attempt starts clean.
        assert nodes["a"].store.aborted == [LAYER_DIGEST]  # type: ignore[attr-defined]
        # That next attempt asks again; the bad peer now ranks last, so the bytes come from c.
        status, _, again = await get(A.address or "", port)
    assert status == 200 and again == LAYER


async def test_a_mismatch_across_a_resume_quarantines_nobody_then_the_retry_shows_the_liar() -> None:
    # b (same zone, asked first) sends corrupt bytes and dies; c, honest, sends the rest.
    stores = {"b": await holding(store=DyingStore(lying=True)), "c": await holding()}
    async with cluster([A, B, C], stores) as (nodes, port):
        status, _, body = await get(A.address or "", port)
        assert status == 200 and len(body) < len(LAYER)  # the mixed body is still never completed
        book = nodes["a"].book
        assert book.quarantined() == frozenset() and book.marked_bad == 0  # c must not be blamed
        assert book.suspects() == {"b", "c"} and book.marked_suspect == 2
        assert nodes["a"].store.aborted == [LAYER_DIGEST]  # type: ignore[attr-defined]
        # containerd tries again: the tail sender goes first, sends it whole and right, and so shows b.
        status, _, again = await get(A.address or "", port)
        assert status == 200 and again == LAYER
        assert book.quarantined() == {"b"} and book.marked_bad == 1


async def test_when_the_tail_sender_lied_the_retry_shows_it_by_its_whole_body() -> None:
    stores = {"b": await holding(store=DyingStore()), "c": await holding(store=CorruptStore())}
    async with cluster([A, B, C], stores) as (nodes, port):
        assert len((await get(A.address or "", port))[2]) < len(LAYER)
        book = nodes["a"].book
        assert book.quarantined() == frozenset() and book.suspects() == {"b", "c"}
        assert len((await get(A.address or "", port))[2]) < len(LAYER)  # c first, whole, and wrong
        assert book.quarantined() == {"c"}


async def test_a_provider_dying_mid_layer_is_resumed_from_another() -> None:
    stores = {"b": await holding(store=DyingStore()), "c": await holding()}
    async with cluster([A, B, C], stores) as (_, port):
        status, _, body = await get(A.address or "", port)
    assert status == 200 and body == LAYER


async def test_a_provider_that_never_answers_is_hedged() -> None:
    stores = {"b": await holding(store=SilentStore()), "c": await holding()}
    async with cluster([A, B, C], stores) as (_, port):
        with anyio.fail_after(20):
            status, _, body = await get(A.address or "", port)
    assert status == 200 and body == LAYER


def test_with_two_other_contributors_a_clean_whole_body_shows_nobody_and_suspicions_expire() -> None:
    now = [0.0]
    mixed = MixedMismatches(lambda: now[0], window=10)
    mixed.record(str(LAYER_DIGEST), ["a", "b", "c"])
    assert mixed.first_to_ask(str(LAYER_DIGEST)) == "c"
    assert mixed.verified(str(LAYER_DIGEST), "c") is None  # a or b: not shown which
    mixed.record(str(LAYER_DIGEST), ["a", "b"])
    now[0] = 10
    assert mixed.first_to_ask(str(LAYER_DIGEST)) is None and mixed.verified(str(LAYER_DIGEST), "b") is None


async def test_a_backed_up_cross_region_cap_sends_the_blob_upstream_at_once_instead_of_waiting() -> None:
    async with cluster([A, B, C, D], {"d": await holding()}) as (nodes, port):
        cap = Cap(FROM_OTHER_REGIONS, TokenBucket(1_000_000))
        cap.bucket.reserve(3_000_000, cap.clock())  # other relays already hold 3 s of it
        gate = nodes["a"].crossing
        gate.caps.from_other_regions = cap
        started = anyio.current_time()
        status, _, body = await get(A.address or "", port)
        assert status == 404 and anyio.current_time() - started < 1.0  # containerd goes upstream now
        assert cap.refused == 1
        cap.bucket = TokenBucket(50_000_000)  # the backlog is gone: the same blob crosses, paced
        status, _, body = await get(A.address or "", port)
    assert status == 200 and body == LAYER
    assert cap.bytes_moved == len(LAYER)

"""The holder index under hostile advertisements: a member floods the real advertise endpoint with the
most expensive keys the grammar allows (640-character tag keys, each new, one provider). The memory each
stored entry costs stays within `WORST_ENTRY_BYTES`, the figure the default bound is derived from; past
the bound everything new is refused and memory stops growing. And the default bound, at that cost, fits
the DaemonSet's memory limit with room for everything else."""

from __future__ import annotations

import gc
import json
import os
import re
from pathlib import Path

import anyio
import pytest

from sidecar.containerd import MemoryStore
from sidecar.http import HttpServer, ServerLimits
from sidecar.http.client import PeerClient
from sidecar.membership import Membership, Peer
from sidecar.registry import RegistryHandler, Relay, RouteConfig
from sidecar.routing import HolderStore
from sidecar.routing.holders import DEFAULT_MAX_ENTRIES, INDEX_MEMORY_BUDGET, WORST_ENTRY_BYTES
from sidecar.routing.http_endpoint import peer_endpoint
from sidecar.routing.keys import MAX_KEY_LENGTH, is_index_key
from sidecar.routing.protocol import ADVERTISE_PATH, MAX_BODY_BYTES
from sidecar.routing.service import IndexService

pytestmark = pytest.mark.anyio

DAEMONSET = Path(__file__).parents[2] / "manifests" / "base" / "daemonset" / "daemonset.yaml"
BOUND = 24_000  # test-sized: the per-entry cost does not depend on the bound
PER_REQUEST = 1400  # 640-character keys: as many as fit one body
# An idle `lokal serve` measured 49 MB RSS; relays, uploads and connections at their limits need more.
REST_OF_LOKAL_BYTES = 160 * 2**20


def rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def longest_tag_keys(start: int, count: int) -> list[str]:
    host = ".".join(["h" * 62] * 4)[:253]
    repository = "/".join(["r" * 60] * 6)[:255].rstrip("/")
    keys = [f"{host}/{repository}:{'t' * 120}{n:08d}" for n in range(start, start + count)]
    assert all(len(k) <= MAX_KEY_LENGTH and is_index_key(k) for k in keys[:1])
    return keys


async def test_hostile_advertisements_cost_at_most_the_worst_case_per_entry_and_stop_at_the_bound() -> None:
    hostile = Peer("hostile", "127.0.0.1", "r1", "z1")
    me = Peer("me", "127.0.0.2", "r1", "z1")
    service = IndexService(HolderStore(ttl=3600, max_entries=BOUND), Membership.of("me", [me, hostile]))
    handler = RegistryHandler(MemoryStore(), RouteConfig(mirrored_registries=None), Relay())
    handler.peer_handler = peer_endpoint(service)
    server = HttpServer(handler, ServerLimits(header_timeout=5))
    assert len(longest_tag_keys(0, 1)[0]) >= MAX_KEY_LENGTH - 20
    async with PeerClient() as client, anyio.create_task_group() as tg:
        _, port = await tg.start(server.serve, ("127.0.0.1", 0))

        async def advertise(start: int) -> dict[str, int]:
            body = json.dumps({"add": longest_tag_keys(start, PER_REQUEST)}).encode()
            assert len(body) <= MAX_BODY_BYTES
            response = await client.post("127.0.0.1", port, ADVERTISE_PATH, body)
            assert response.status == 200, response.body
            reply: dict[str, int] = json.loads(response.body)
            return reply

        await advertise(0)  # warm up the server's own allocations
        before, stored_before, sent = rss(), service.store.entries, PER_REQUEST
        for _ in range(BOUND // PER_REQUEST):  # bounded: one more than the bound needs
            await advertise(sent)
            sent += PER_REQUEST
        assert service.store.bound_hit
        at_bound = rss()
        per_entry = (at_bound - before) / (service.store.entries - stored_before)
        for _ in range(5):  # past the bound: refused, and no more memory
            assert (await advertise(sent))["refused"] == PER_REQUEST
            sent += PER_REQUEST
        after = rss()
        await server.shutdown()
        tg.cancel_scope.cancel()
    assert service.store.entries == BOUND and service.store.refused_total >= 5 * PER_REQUEST
    assert per_entry <= WORST_ENTRY_BYTES, f"{per_entry:.0f} bytes per entry"
    assert after - at_bound < 2 * 2**20


def test_the_default_bound_fits_the_daemonsets_memory_limit_with_a_margin() -> None:
    text = DAEMONSET.read_text()
    container = text[text.index("- name: lokal\n"):]
    limit = re.search(r"limits:\s*\n(?:\s+\w+: .*\n)*?\s+memory: (\d+)Mi", container)
    assert limit is not None
    limit_bytes = int(limit.group(1)) * 2**20
    assert DEFAULT_MAX_ENTRIES * WORST_ENTRY_BYTES <= INDEX_MEMORY_BUDGET
    assert 0.8 * limit_bytes >= INDEX_MEMORY_BUDGET + REST_OF_LOKAL_BYTES  # 20 % margin

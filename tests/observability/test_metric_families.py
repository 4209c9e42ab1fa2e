"""What a node's /metrics says about itself and about containerd's requests: the process collector and the
build info, and a hit ratio that counts each body once (HEADs and Range continuations kept out)."""

from __future__ import annotations

import os
import platform
from contextlib import AbstractAsyncContextManager

import anyio
import pytest

from sidecar.containerd import MemoryStore
from sidecar.metrics.definitions import lokal_version
from sidecar.registry.ranges import continues_a_body
from sidecar.serve import Node, running_node
from sidecar.settings import Discovery, ServeSettings
from tests.nodes import status_of

REGISTRY = "registry.lokal.test"


def node_with(store: MemoryStore) -> AbstractAsyncContextManager[Node]:
    settings = ServeSettings(discovery=Discovery.NONE, mirrored_registries=(REGISTRY,))
    return running_node(settings, store=store, listen=("127.0.0.1", 0))


def sample(node: Node, metric: str, **labels: str) -> float:
    assert node.observability is not None
    value = node.observability.metrics.registry.get_sample_value(metric, labels)
    return 0.0 if value is None else value


@pytest.mark.anyio
async def test_the_process_collector_and_the_build_info_are_exported() -> None:
    async with node_with(MemoryStore()) as node:
        pass
    assert sample(node, "lokal_process_resident_memory_bytes") > 0
    assert sample(node, "lokal_process_open_fds") > 0
    assert sample(node, "lokal_process_cpu_seconds_total") > 0
    assert sample(node, "lokal_process_start_time_seconds") > 0
    assert lokal_version() != "unknown"
    versions = {"version": lokal_version(), "python": platform.python_version()}
    assert sample(node, "lokal_build_info", **versions) == 1


@pytest.mark.parametrize(
    ("header", "continues"),
    [(None, False), ("bytes=0-", False), ("bytes=0-99", False), ("bytes=100-", True), ("bytes=-10", True),
     ("bytes=1-5,7-9", False), ("items=3-", False)],
)
def test_a_continuation_is_a_single_range_past_the_first_byte(header: str | None, continues: bool) -> None:
    # containerd 2.1 sends `bytes=0-` on every first GET: that one is a first request, not a continuation.
    assert continues_a_body(header) is continues


@pytest.mark.anyio
async def test_head_requests_and_range_continuations_stay_out_of_the_hit_ratio() -> None:
    store = MemoryStore()
    blob = store.add_blob(os.urandom(4096))
    absent = "sha256:" + "0" * 64
    path = f"/v2/app/blobs/{{}}?ns={REGISTRY}"
    async with node_with(store) as node:
        assert node.server.address is not None
        port = node.server.address[1]
        asked = [
            ("HEAD", blob, {}), ("GET", blob, {}), ("GET", blob, {"Range": "bytes=1000-"}),
            ("GET", blob, {"Range": "bytes=2000-"}), ("HEAD", absent, {}), ("GET", absent, {}),
        ]
        ask = status_of
        statuses = [await anyio.to_thread.run_sync(ask, port, path.format(d), m, h) for m, d, h in asked]
    assert statuses == [200, 200, 206, 206, 404, 404]
    # One body served, one missed: a hit ratio of 1/2, not 4/6.
    assert sample(node, "lokal_requests_total", kind="blob", result="local", tier="same_node") == 1
    assert sample(node, "lokal_requests_total", kind="blob", result="miss", tier="upstream") == 1
    assert sample(node, "lokal_followup_requests_total", kind="blob", request="head", result="local") == 1
    assert sample(node, "lokal_followup_requests_total", kind="blob", request="head", result="miss") == 1
    assert sample(node, "lokal_followup_requests_total", kind="blob", request="range", result="local") == 2
    served = sample(node, "lokal_bytes_total", direction="to_containerd", tier="same_node")
    assert served == 4096 + 3096 + 2096  # the continuations' bytes still count
    assert sample(node, "lokal_transfer_duration_seconds_count", tier="same_node") == 1
    assert node.observability is not None
    assert node.observability.pulls.tally.hit_ratio == 0.5

"""Diagnostics that say what is true: the reason of a miss while peers are not known yet, `lokal where` on
a bare digest and on a node without discovery, reasons that say each rule once, units in field names, and
the text log format."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import anyio
import pytest
from anyio.abc import TaskStatus

from sidecar.cluster.feed import MembershipFeed
from sidecar.containerd import MemoryStore
from sidecar.debug.render import format_where
from sidecar.debug.where import where_report
from sidecar.http.messages import Request
from sidecar.logs import TextFormatter, log_event
from sidecar.membership import CrossRegion, Membership, MembershipChange, Peer, TopologyMode
from sidecar.registry.providers import choose_providers
from sidecar.registry.pulls import Miss, PullRecord
from sidecar.serve import Node, running_node
from sidecar.settings import Discovery, ServeSettings
from sidecar.topology.policy import TopologyPolicy

REGISTRY = "registry.lokal.test"


def node_with(
    store: MemoryStore, membership: MembershipFeed | None = None, discovery: Discovery = Discovery.NONE
) -> AbstractAsyncContextManager[Node]:
    settings = ServeSettings(discovery=discovery, mirrored_registries=(REGISTRY,), node_name="n1")
    return running_node(settings, store=store, membership=membership, listen=("127.0.0.1", 0))


class NoAnswerYet:
    """A membership feed whose first Node list never arrives (the API server is unreachable)."""

    current = None

    async def run(self, *, task_status: TaskStatus[Membership] = anyio.TASK_STATUS_IGNORED) -> None:
        await anyio.sleep_forever()

    async def subscribe(self) -> AsyncIterator[tuple[Membership, MembershipChange]]:
        await anyio.sleep_forever()
        yield  # type: ignore[misc]


def blob_request(digest: str) -> Request:
    path = f"/v2/app/blobs/{digest}"
    return Request("GET", path, path, f"ns={REGISTRY}", [], "1.1", ("127.0.0.1", 1))


@pytest.mark.anyio
async def test_a_miss_before_the_first_node_list_says_peers_are_not_known_yet() -> None:
    # Discovery is kubernetes, but the API has not answered (the node serves before its first list).
    async with node_with(MemoryStore(), NoAnswerYet(), Discovery.KUBERNETES) as node:
        records: list[PullRecord] = []
        node.handler.pull_observer = records.append
        response = await node.handler(blob_request("sha256:" + "1" * 64))
    assert response.status == 404
    (record,) = records
    assert record.miss is Miss.NO_MEMBERSHIP
    assert "peers not known yet" in record.reason and "--discovery none" not in record.reason
    assert "peers not known yet" in bytes(response.body).decode()  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_where_on_a_bare_digest_invents_no_repository_and_names_the_node() -> None:
    store = MemoryStore()
    digest = store.add_blob(b"x" * 100)
    async with node_with(store) as node:  # --discovery none: the membership holds no Peer for this node
        doc = await where_report(node, str(digest))
    assert doc["registry"] is None and doc["repository"] is None
    assert doc["node"] == "n1"
    text = format_where(doc)
    assert text.splitlines()[0] == str(digest)
    assert "None" not in text and "lokal/where" not in text and "docker.io" not in text


def test_a_reason_names_each_rule_once() -> None:
    me = Peer("a", "10.0.0.1", region="r1", zone="z1", is_self=True)
    others = [Peer("b", "10.0.0.2", region="r2"), Peer("c", "10.0.0.3", region="r3")]
    membership = Membership.of("a", [me, *others])
    policy = TopologyPolicy(mode=TopologyMode.PREFER, cross_region=CrossRegion.NEVER)
    choice = choose_providers(me, ["b", "c"], membership, {}, policy, now=0.0)
    assert choice.miss is Miss.FORBIDDEN
    assert choice.reason == "forbidden by policy: cross-region never: region 'r2', region 'r3'"


def test_the_throughput_field_names_its_unit() -> None:
    record = PullRecord("blob", "GET", "app", REGISTRY, "sha256:1234", "127.0.0.1", started=0.0)
    record.result, record.bytes, record.elapsed = "local", 5_000_000, 2.0
    fields = record._build_fields()
    assert "mbps" not in fields and fields["megabytes_per_s"] == 2.5


def test_the_text_format_leaves_out_nulls_and_quotes_so_that_a_line_splits_back_into_its_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("lokal.test_text")
    with caplog.at_level(logging.INFO, logger="lokal"):
        log_event(logger, "pull", tier=None, reason='said "no" = refused', repo="library/nginx", ms=1.5,
                  by_region={"r 1": 2}, empty="")
    line = TextFormatter().format(caplog.records[-1])
    assert "tier=" not in line and "null" not in line and "None" not in line
    assert 'reason="said \\"no\\" = refused"' in line
    assert " repo=library/nginx " in line and " ms=1.5 " in line
    assert 'empty=""' in line
    assert f"by_region={json.dumps(json.dumps({'r 1': 2}, separators=(',', ':')))}" in line

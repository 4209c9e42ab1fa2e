"""`lokal status` and `lokal where` against running nodes of the known layout (tests/observability/
layout.py): the CLI's real HTTP call to the loopback debug endpoint, its JSON and its text."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from sidecar.cli import status as status_cli
from sidecar.cli import where as where_cli
from sidecar.membership import CrossRegion, Peer, TopologyMode
from sidecar.oci import digest_of
from sidecar.topology.policy import TopologyPolicy
from tests.observability.cluster import NS, Lab, lab
from tests.observability.layout import (
    CONFIG,
    HOLDINGS,
    IMAGE,
    IMAGES,
    LAYER1,
    LAYER2,
    LAYER3,
    MANIFEST,
    PEERS,
    blob_path,
)

pytestmark = pytest.mark.anyio

NEVER = TopologyPolicy(TopologyMode.PREFER, CrossRegion.NEVER)
C_NOT_READY = [p if p.name != "c" else Peer("c", p.address, p.region, p.zone, ready=False) for p in PEERS]


async def cli(
    run: Callable[[argparse.Namespace], int], capsys: pytest.CaptureFixture[str], **args: Any
) -> tuple[int, str, str]:
    code = await anyio.to_thread.run_sync(run, argparse.Namespace(**args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def server(cluster: Lab, name: str) -> str:
    return f"http://{cluster.address(name)}:{cluster.port}"


async def test_status_shows_the_node_policy_peers_by_zone_and_the_requests(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with lab(C_NOT_READY, HOLDINGS, NEVER, IMAGES) as cluster:
        assert (await cluster.get("a", blob_path(CONFIG)))[0] == 200
        assert (await cluster.get("a", blob_path(LAYER2)))[0] == 404  # only c (not ready) in r1 holds it
        await cluster.wait_finished({"a": 2})
        code, out, _ = await cli(status_cli.run, capsys, server=server(cluster, "a"), json=True)
        assert code == 0
        doc = json.loads(out)
        assert doc["node"] == {"name": "a", "region": "r1", "zone": "z1", "address": "127.0.0.2"}
        assert doc["policy"] == "prefer, cross-region never"
        peers = {p["name"]: p for p in doc["peers"]}
        assert [p["name"] for p in doc["peers"]] == ["b", "c", "d"]  # by region, zone, name
        assert (peers["b"]["health"], peers["b"]["tier"], peers["b"]["eligible"]) == (
            "ready",
            "same_zone",
            True,
        )
        assert (peers["c"]["health"], peers["c"]["eligible"], peers["c"]["policy"]) == (
            "not_ready",
            False,
            "not ready",
        )
        assert (peers["d"]["tier"], peers["d"]["eligible"], peers["d"]["policy"]) == (
            "other_region",
            False,
            "cross-region never: region 'r2'",
        )
        assert doc["index"]["keys_advertised"] == len(cluster.nodes["a"].store.keys())
        assert doc["containerd"]["state"] == "connected"
        requests = doc["requests"]
        assert requests["by_result"] == {"local": 1, "miss": 1} and requests["hit_ratio"] == 0.5
        assert requests["bytes_by_tier"] == {"same_node": len(CONFIG)}
        assert [r["result"] for r in requests["recent"]] == ["local", "miss"]
        assert requests["recent"][1]["reason"] == "forbidden by policy: not ready"
        assert (
            cluster.sample("a", "lokal_misses_total", registry=NS, kind="blob", reason="forbidden_by_policy")
            == 1
        )

        code, text, _ = await cli(status_cli.run, capsys, server=server(cluster, "a"), json=False)
        assert code == 0
        assert "policy    prefer, cross-region never" in text
        assert text.index("r1 / z1") < text.index("r1 / z2") < text.index("r2 / z3")
        assert "hit ratio 50.0%" in text


async def test_where_lists_each_blob_with_its_holders_in_the_order_lokal_tries_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with lab(PEERS, HOLDINGS, images=IMAGES) as cluster:
        code, out, _ = await cli(where_cli.run, capsys, target=IMAGE, server=server(cluster, "a"), json=True)
        assert code == 0
        doc = json.loads(out)
        assert doc["digest"] == str(digest_of(MANIFEST))
        blobs = {b["digest"]: b for b in doc["blobs"]}
        assert [b["kind"] for b in doc["blobs"]] == ["manifest", "config", "layer", "layer", "layer"]

        def order(blob: bytes) -> list[tuple[str, str]]:
            return [(s["node"], s["tier"]) for s in blobs[str(digest_of(blob))]["order"]]

        assert order(MANIFEST) == [("a", "same_node")] and order(CONFIG) == [("a", "same_node")]
        assert order(LAYER1) == [("b", "same_zone"), ("c", "same_region")]
        assert order(LAYER2) == [("c", "same_region")]  # r1 holds it: r2 is not asked
        assert order(LAYER3) == [("d", "other_region")]
        layer3 = blobs[str(digest_of(LAYER3))]
        assert layer3["verdict"] == "peer" and layer3["why"] == "relayed from d (other_region)"
        assert layer3["order"][0]["reason"].startswith("prefer: other_region")

        code, text, _ = await cli(
            where_cli.run, capsys, target=IMAGE, server=server(cluster, "a"), json=False
        )
        assert code == 0
        assert f"layer    {digest_of(LAYER1).short}" in text
        assert "    1. b " in text and "    2. c " in text


async def test_where_names_the_policy_that_sends_a_blob_upstream(capsys: pytest.CaptureFixture[str]) -> None:
    async with lab(PEERS, HOLDINGS, NEVER, IMAGES) as cluster:
        code, out, _ = await cli(
            where_cli.run,
            capsys,
            target=f"{NS}/app@{digest_of(MANIFEST)}",
            server=server(cluster, "a"),
            json=True,
        )
        assert code == 0
        layer3 = next(b for b in json.loads(out)["blobs"] if b["digest"] == str(digest_of(LAYER3)))
        assert layer3["order"] == [] and layer3["verdict"] == "upstream"
        assert [(s["node"], s["reason"]) for s in layer3["refused"]] == [
            ("d", "cross-region never: region 'r2'")
        ]
        assert layer3["why"] == "forbidden by policy: cross-region never: region 'r2'"


async def test_where_on_a_node_without_the_manifest_reads_it_through_a_peer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with lab(PEERS, HOLDINGS, images=IMAGES) as cluster:
        code, out, _ = await cli(
            where_cli.run,
            capsys,
            target=f"{NS}/app@{digest_of(MANIFEST)}",
            server=server(cluster, "d"),
            json=True,
        )
        assert code == 0
        blobs = json.loads(out)["blobs"]
        assert len(blobs) == 5
        assert (blobs[0]["verdict"], blobs[0]["order"][0]["node"]) == ("peer", "a")
        layer3 = next(b for b in blobs if b["digest"] == str(digest_of(LAYER3)))
        assert layer3["verdict"] == "local"


async def test_where_explains_a_tag_this_node_lacks_and_a_bad_reference(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with lab(PEERS, HOLDINGS, images=IMAGES) as cluster:
        code, _, err = await cli(where_cli.run, capsys, target=IMAGE, server=server(cluster, "b"), json=True)
        assert code == 1 and "resolves tags only from the local store" in err
        code, _, err = await cli(
            where_cli.run, capsys, target="sha256:zz", server=server(cluster, "a"), json=True
        )
        assert code == 1 and "400" in err
        code, out, _ = await cli(
            where_cli.run, capsys, target=str(digest_of(LAYER1)), server=server(cluster, "a"), json=True
        )
        assert code == 0
        [only] = json.loads(out)["blobs"]
        assert only["kind"] == "blob" and [s["node"] for s in only["order"]] == ["b", "c"]


async def test_the_cli_refuses_a_server_that_is_not_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await cli(status_cli.run, capsys, server="http://10.1.2.3:5050", json=False)
    assert code == 1 and "loopback only" in err

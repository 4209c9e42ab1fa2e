"""Access control against the running lab (real namespaces, containerd, registry, lokal with a peer token):
who may pull, who may use the peer protocol, and what a forged or false advertise can do.

Isolate mode refusing another region is covered in tests/lab/test_cluster.py
(`test_isolate_mode_sends_not_one_byte_across_regions_and_refuses_the_other_regions_requests`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lokal_lab.cluster import LabCluster
from lokal_lab.images import BuiltImage

from sidecar.routing.placement import home_nodes
from tests.reliability.conftest import REGION_A, MakeImage
from tests.reliability.labtools import (
    LOCAL_ONLY,
    Agent,
    advertise,
    agents,
    blob_path,
    fake_api,
    fetched_blobs,
    lookup,
    peer_names,
    pull_checked,
    wait_until,
    wait_until_listed,
    with_token,
)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def held(cluster: LabCluster, images: MakeImage, lab_agents: dict[str, Agent]) -> tuple[str, BuiltImage]:
    """An image that node-1 and node-2 hold (node-2 relayed it from node-1, through token-checked peers)."""
    image = images("access", 401)
    reference = cluster.push(image, "access/app")
    pull_checked(cluster, "node-1", reference, image)
    second = pull_checked(cluster, "node-2", reference, image)
    assert second.upstream_blobs == set()
    for digest in fetched_blobs(image):
        line = second.line(digest)
        assert (line["result"], line["provider"]) == ("peer", "node-1"), line
    wait_until_listed(cluster, lab_agents["node-3"], fetched_blobs(image), {"node-1", "node-2"}, REGION_A)
    return reference, image


@pytest.fixture(scope="module")
def lab_agents(cluster: LabCluster) -> Iterator[dict[str, Agent]]:
    with agents(cluster, *cluster.nodes) as started:
        yield started


def test_a_member_without_the_peer_token_is_refused_and_with_it_is_served(
    cluster: LabCluster, held: tuple[str, BuiltImage], lab_agents: dict[str, Agent]
) -> None:
    _, image = held
    layer = image.layers["linux/amd64"][0]
    path = blob_path(cluster, "access/app", layer.digest)
    node1 = cluster.lab.address("node-1")
    asker = lab_agents["node-3"]
    without = asker.request(node1, path, headers=LOCAL_ONLY)
    wrong = asker.request(node1, path, headers=with_token(LOCAL_ONLY, "x" * 40))
    right = asker.request(node1, path, headers=with_token(LOCAL_ONLY))
    peer_call, _ = lookup(asker, cluster, "node-1", layer.digest, token=False)
    assert (without["status"], wrong["status"], peer_call) == (403, 403, 403)
    assert right["status"] == 200 and right["complete"] and right["sha256"] == layer.digest


def test_a_lab_namespace_that_is_not_a_node_is_refused_on_the_pull_path_and_the_peer_protocol(
    cluster: LabCluster, held: tuple[str, BuiltImage], lab_agents: dict[str, Agent]
) -> None:
    _, image = held
    layer = image.layers["linux/amd64"][0].digest
    home = next(h for h in home_nodes(layer, REGION_A) if h != "node-4")
    before = lookup(lab_agents["node-2"], cluster, home, layer)
    watchers = [lab_agents[n] for n in ("node-1", "node-2", "node-3") if n != "node-4"]
    with fake_api(cluster) as api:
        original = api.node("node-4")
        api.delete("node-4")  # node-4's namespace and address stay: now it is an outsider
        try:
            wait_until(
                lambda: all("node-4" not in peer_names(a) for a in watchers), 30, "the members to drop node-4"
            )
            outsider = lab_agents["node-4"]
            pulled = outsider.request(
                cluster.lab.address("node-1"),
                blob_path(cluster, "access/app", layer),
                headers=with_token(LOCAL_ONLY),
            )
            looked, _ = lookup(outsider, cluster, home, layer)
            advertised = advertise(outsider, cluster, home, {"remove": [layer]})
            forged = advertise(outsider, cluster, home, {"add": [layer]})
            after = lookup(lab_agents["node-2"], cluster, home, layer)
        finally:
            api.put(original)
            wait_until(
                lambda: all("node-4" in peer_names(a) for a in watchers),
                30,
                "the members to know node-4 again",
            )
    assert (pulled["status"], looked, advertised, forged) == (403, 403, 403, 403)
    assert before == after == (200, {"node-1", "node-2"})
    assert cluster.lokal_running("node-4")  # losing its own Node object did not take it down


def test_a_forged_advertise_naming_another_node_is_refused_and_lookups_are_unchanged(
    cluster: LabCluster, held: tuple[str, BuiltImage], lab_agents: dict[str, Agent]
) -> None:
    _, image = held
    layer = image.layers["linux/amd64"][1].digest
    home = home_nodes(layer, REGION_A)[0]
    forger = lab_agents["node-3"]
    before = lookup(lab_agents["node-4"], cluster, home, layer)
    named = [
        advertise(forger, cluster, home, {"node": "node-1", "remove": [layer]}),
        advertise(forger, cluster, home, {"provider": "node-1", "remove": [layer]}),
        advertise(forger, cluster, home, {"remove": [layer], "name": "node-2"}),
        advertise(forger, cluster, home, b'{"remove": ["%s"], "remove": []}' % layer.encode()),
    ]
    # The sender is its source address, whatever a header claims: this withdraws node-3's (absent) entry.
    spoofed = advertise(
        forger,
        cluster,
        home,
        {"remove": [layer]},
        headers={
            "X-Forwarded-For": cluster.lab.address("node-1"),
            "Forwarded": f"for={cluster.lab.address('node-1')}",
        },
    )
    after = lookup(lab_agents["node-4"], cluster, home, layer)
    assert named == [400, 400, 400, 400]
    assert spoofed == 200
    assert before == after == (200, {"node-1", "node-2"})


def test_a_member_falsely_claiming_content_is_listed_as_itself_and_costs_only_a_wasted_request(
    cluster: LabCluster, images: MakeImage, lab_agents: dict[str, Agent]
) -> None:
    image = images("claim", 402)
    reference = cluster.push(image, "claim/app")
    pull_checked(cluster, "node-4", reference, image)  # the only holder, in zone-a2
    liar = lab_agents["node-3"]  # zone-a1, the same zone as the puller: it would be asked first
    wait_until_listed(cluster, liar, fetched_blobs(image), {"node-4"}, REGION_A)
    keys = sorted(fetched_blobs(image))
    homes = {key: home_nodes(key, REGION_A) for key in keys}
    try:
        for key in keys:
            for home in homes[key]:
                assert advertise(liar, cluster, home, {"add": [key]}) == 200
        listed = {key: lookup(lab_agents["node-1"], cluster, homes[key][0], key)[1] for key in keys}
        pulled = pull_checked(cluster, "node-2", reference, image)
    finally:
        for key in keys:
            for home in homes[key]:
                advertise(liar, cluster, home, {"remove": [key]})
    assert all(names == {"node-3", "node-4"} for names in listed.values()), listed
    assert pulled.upstream_blobs == set()
    for key in keys:
        line = pulled.line(key)
        assert (line["result"], line["provider"]) == ("peer", "node-4"), line

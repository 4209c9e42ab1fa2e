"""Node object -> Peer: labels with fallback, the listener's InternalIP family, readiness, odd input."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client
from lokal_lab.fake_apiserver import make_node

from sidecar.cluster.nodes import NodeProblemLog, parse_node


def test_a_well_formed_node_becomes_a_peer_without_problems() -> None:
    parsed = parse_node(make_node("n1", region="r1", zone="z1", address="10.0.0.7"), self_name="n0")
    assert parsed.peer is not None
    assert (parsed.peer.name, parsed.peer.address, parsed.peer.region, parsed.peer.zone) == (
        "n1",
        "10.0.0.7",
        "r1",
        "z1",
    )
    assert parsed.peer.ready and not parsed.peer.is_self
    assert parsed.problems == ()


def test_the_deprecated_failure_domain_labels_are_a_fallback_only() -> None:
    legacy = make_node("n1", region="old-r", zone="old-z", legacy_labels=True)
    peer = parse_node(legacy, self_name="n1").peer
    assert peer is not None and (peer.region, peer.zone, peer.is_self) == ("old-r", "old-z", True)
    both = make_node(
        "n1", region="new-r", zone="new-z", labels={"failure-domain.beta.kubernetes.io/region": "old"}
    )
    assert parse_node(both, self_name="x").peer.region == "new-r"  # type: ignore[union-attr]


def test_the_internal_ip_of_the_listeners_family_is_chosen_and_canonical() -> None:
    node = make_node("n1", region="r", zone="z", address="10.0.0.1", address_v6="fd00:0:0::0001")
    assert parse_node(node, self_name="x", family="ipv4").peer.address == "10.0.0.1"  # type: ignore[union-attr]
    assert parse_node(node, self_name="x", family="ipv6").peer.address == "fd00::1"  # type: ignore[union-attr]
    only_v4 = parse_node(make_node("n1", region="r", zone="z"), self_name="x", family="ipv6")
    assert only_v4.peer is not None and only_v4.peer.address is None
    assert only_v4.problems == ("no ipv6 InternalIP (only the other family)",)


def test_not_ready_and_terminating_nodes_are_not_ready() -> None:
    assert parse_node(make_node("n1", region="r", zone="z", ready=False), self_name="x").peer.ready is False  # type: ignore[union-attr]
    deleting = make_node("n1", region="r", zone="z")
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert parse_node(deleting, self_name="x").peer.ready is False  # type: ignore[union-attr]


def test_a_client_model_object_is_parsed_like_its_json() -> None:
    node = client.V1Node(
        metadata=client.V1ObjectMeta(name="n1", labels={"topology.kubernetes.io/region": "r1"}),
        status=client.V1NodeStatus(
            addresses=[client.V1NodeAddress(type="InternalIP", address="10.0.0.9")],
            conditions=[client.V1NodeCondition(type="Ready", status="True")],
        ),
    )
    parsed = parse_node(node, self_name="x")
    assert parsed.peer is not None
    assert (parsed.peer.address, parsed.peer.region, parsed.peer.ready) == ("10.0.0.9", "r1", True)
    assert parsed.problems == ("no topology.kubernetes.io/zone label",)


def test_problems_name_what_is_wrong() -> None:
    node: dict[str, Any] = {
        "metadata": {"name": "bad", "labels": {"topology.kubernetes.io/region": 5}},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0"}], "conditions": None},
    }
    parsed = parse_node(node, self_name="x")
    assert parsed.peer is not None and (parsed.peer.region, parsed.peer.address) == ("", None)
    assert parsed.problems == (
        "label topology.kubernetes.io/region has an invalid value 5",
        "no topology.kubernetes.io/zone label",
        "InternalIP '10.0.0' is not an IP address",
        "no InternalIP",
        "no Ready condition",
    )


def test_a_node_without_a_name_is_dropped_with_a_reason() -> None:
    assert parse_node({"metadata": {}}, self_name="x").peer is None
    assert parse_node("not a node", self_name="x").problems == ("not a Node object: str",)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=12,
)
label_maps = st.dictionaries(
    st.sampled_from(
        [
            "topology.kubernetes.io/region",
            "topology.kubernetes.io/zone",
            "failure-domain.beta.kubernetes.io/region",
            "x",
        ]
    ),
    json_values,
)


@settings(max_examples=300, deadline=None)
@given(
    name=json_values,
    labels=st.one_of(label_maps, json_values),
    addresses=json_values,
    conditions=json_values,
    family=st.sampled_from(["ipv4", "ipv6"]),
)
def test_odd_node_objects_never_crash(
    name: object, labels: object, addresses: object, conditions: object, family: str
) -> None:
    node = {
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": addresses, "conditions": conditions},
    }
    parsed = parse_node(node, self_name="x", family=family)  # type: ignore[arg-type]
    if parsed.peer is not None:
        assert isinstance(parsed.peer.region, str) and isinstance(parsed.peer.zone, str)


def test_a_node_problem_is_reported_once_until_it_changes() -> None:
    reports: list[tuple[str, tuple[str, ...]]] = []
    log = NodeProblemLog(lambda name, problems: reports.append((name, problems)))
    for _ in range(3):
        log.note("n1", ("no InternalIP",))
    log.note("n1", ("no InternalIP", "no Ready condition"))
    log.note("n1", ())
    log.note("n1", ("no InternalIP",))
    assert reports == [
        ("n1", ("no InternalIP",)),
        ("n1", ("no InternalIP", "no Ready condition")),
        ("n1", ("no InternalIP",)),
    ]

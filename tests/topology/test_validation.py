"""What a node without a region label means, as the startup warning says it."""

from __future__ import annotations

from sidecar.membership import Peer, TopologyLabels, TopologyMode
from sidecar.topology import TopologyPolicy, policy_warnings, unlabelled_node_warning

UNLABELLED = Peer("n1", "10.0.0.1", region="", zone="z1")


def test_an_unlabelled_node_in_isolate_mode_is_warned_to_be_a_region_of_its_own() -> None:
    warning = unlabelled_node_warning(TopologyMode.ISOLATE, UNLABELLED, TopologyLabels())
    assert warning is not None
    assert "'n1'" in warning and "topology.kubernetes.io/region" in warning and "region of its own" in warning


def test_the_warning_names_the_configured_label_key_and_prefer_mode_ranks_unknown() -> None:
    labels = TopologyLabels(region="example.com/site")
    warning = unlabelled_node_warning(TopologyMode.PREFER, UNLABELLED, labels)
    assert warning is not None and "example.com/site" in warning and "'unknown' tier" in warning
    assert "failure-domain" not in warning  # the deprecated fallback only goes with the standard key


def test_a_labelled_node_gets_no_warning_in_either_mode() -> None:
    for mode in TopologyMode:
        assert unlabelled_node_warning(mode, Peer("n1", "10.0.0.1", region="r1"), TopologyLabels()) is None


def test_isolate_with_unknown_clients_allowed_is_warned_about() -> None:
    assert policy_warnings(TopologyPolicy(mode=TopologyMode.ISOLATE, allow_unknown_clients=True))
    assert policy_warnings(TopologyPolicy(allow_unknown_clients=True)) == []

"""The startup check of the topology mode against this node's labels."""

from __future__ import annotations

import pytest

from sidecar.cluster.model import Peer
from sidecar.topology import TopologyConfigError, TopologyMode, validate_own_node


def test_isolate_mode_needs_a_region_label_on_this_node() -> None:
    with pytest.raises(
        TopologyConfigError, match=r"--topology-mode isolate.*'n1'.*topology.kubernetes.io/region"
    ):
        validate_own_node(TopologyMode.ISOLATE, Peer("n1", "10.0.0.1", region="", zone="z1"))


def test_prefer_mode_accepts_an_unlabelled_node_and_isolate_a_labelled_one() -> None:
    validate_own_node(TopologyMode.PREFER, Peer("n1", "10.0.0.1"))
    validate_own_node(TopologyMode.ISOLATE, Peer("n1", "10.0.0.1", region="r1"))


def test_isolate_with_unknown_clients_allowed_is_warned_about() -> None:
    from sidecar.topology import TopologyPolicy, policy_warnings

    assert policy_warnings(TopologyPolicy(mode=TopologyMode.ISOLATE, allow_unknown_clients=True))
    assert policy_warnings(TopologyPolicy(allow_unknown_clients=True)) == []

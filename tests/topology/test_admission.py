"""The serving side's admission: loopback, members, isolate mode, unknown clients."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.membership import Membership, Peer, TopologyMode
from sidecar.topology import TopologyPolicy, admit_request, normalize_address

MEMBERSHIP = Membership.of(
    "a1",
    [
        Peer("a1", "10.1.0.1", "r1", "z1", is_self=True),
        Peer("a2", "10.1.0.2", "r1", "z2"),
        Peer("b1", "10.2.0.1", "r2", "z1"),
        Peer("v6", "fd00::5", "r1", "z1"),
    ],
)
PREFER = TopologyPolicy()
ISOLATE = TopologyPolicy(mode=TopologyMode.ISOLATE)


def test_loopback_is_always_served() -> None:
    for source in ("127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1"):
        assert admit_request(source, MEMBERSHIP, ISOLATE).allowed


def test_members_are_served_and_named() -> None:
    verdict = admit_request("10.1.0.2", MEMBERSHIP, PREFER)
    assert verdict.allowed and verdict.peer is not None and verdict.peer.name == "a2"
    assert admit_request("10.2.0.1", MEMBERSHIP, PREFER).allowed


def test_isolate_mode_refuses_a_node_of_another_region() -> None:
    verdict = admit_request("10.2.0.1", MEMBERSHIP, ISOLATE)
    assert not verdict.allowed
    assert "isolate" in verdict.reason and "'b1'" in verdict.reason and "'r2'" in verdict.reason
    assert admit_request("10.1.0.2", MEMBERSHIP, ISOLATE).allowed


def test_unknown_addresses_are_refused_unless_allowed() -> None:
    refused = admit_request("10.9.9.9", MEMBERSHIP, PREFER)
    assert not refused.allowed and "--allow-unknown-clients" in refused.reason
    assert admit_request("10.9.9.9", MEMBERSHIP, TopologyPolicy(allow_unknown_clients=True)).allowed


def test_ipv4_mapped_and_scoped_addresses_are_recognised() -> None:
    assert admit_request("::ffff:10.1.0.2", MEMBERSHIP, PREFER).peer == MEMBERSHIP.peers["a2"]
    assert admit_request("fd00:0::5", MEMBERSHIP, PREFER).allowed
    assert normalize_address("fe80::1%eth0") == "fe80::1"


def test_garbage_source_addresses_are_refused_with_a_reason() -> None:
    for source in ("", "not-an-ip", "10.1.0", "[::1"):
        verdict = admit_request(source, MEMBERSHIP, TopologyPolicy(allow_unknown_clients=True))
        assert not verdict.allowed and "not an IP" in verdict.reason


@settings(max_examples=200, deadline=None)
@given(source=st.text(max_size=40), mode=st.sampled_from(list(TopologyMode)), unknown=st.booleans())
def test_admission_never_crashes_on_any_source_text(source: str, mode: TopologyMode, unknown: bool) -> None:
    verdict = admit_request(source, MEMBERSHIP, TopologyPolicy(mode=mode, allow_unknown_clients=unknown))
    assert verdict.reason

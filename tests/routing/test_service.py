"""The holder-side service: senders are identified by address, never by the body."""

from __future__ import annotations

import json

import pytest

from sidecar.membership import Membership, Peer
from sidecar.routing import HolderStore, IndexService, NotAMember, ProtocolError
from sidecar.routing.protocol import MAX_PROVIDERS
from tests.routing.cluster import digest

A = digest("a")


def service() -> IndexService:
    peers = [
        Peer("holder", "10.0.0.1", "r1", "z1"),
        Peer("alice", "10.0.0.2", "r1", "z1"),
        Peer("bob", "10.0.0.3", "r1", "z2"),
    ]
    return IndexService(HolderStore(ttl=100), Membership.of("holder", peers))


def test_the_provider_is_the_node_at_the_source_address_not_a_name_in_the_body() -> None:
    svc = service()
    forged = json.dumps({"add": [A], "node": "bob", "provider": "bob"}).encode()
    with pytest.raises(ProtocolError):  # unknown fields are refused outright
        svc.handle_advertise("10.0.0.2", forged, now=0)
    svc.handle_advertise("10.0.0.2", json.dumps({"add": [A]}).encode(), now=0)
    reply = json.loads(svc.handle_lookup("10.0.0.3", json.dumps({"keys": [A]}).encode(), now=1))
    assert reply == {"providers": {A: ["alice"]}}


def test_requests_from_non_members_are_refused_before_parsing() -> None:
    svc = service()
    with pytest.raises(NotAMember) as refused:
        svc.handle_advertise("10.9.9.9", b"not even json", now=0)
    assert refused.value.status == 403
    with pytest.raises(NotAMember):
        svc.handle_lookup("10.9.9.9", json.dumps({"keys": [A]}).encode(), now=0)
    assert svc.store.entries == 0


def test_providers_that_left_the_membership_are_not_returned() -> None:
    svc = service()
    svc.handle_advertise("10.0.0.2", json.dumps({"add": [A]}).encode(), now=0)
    svc.handle_advertise("10.0.0.3", json.dumps({"add": [A]}).encode(), now=0)
    peers = [p for p in svc.membership.peers.values() if p.name != "alice"]
    svc.update_membership(Membership.of("holder", peers))
    reply = json.loads(svc.handle_lookup("10.0.0.3", json.dumps({"keys": [A]}).encode(), now=1))
    assert reply == {"providers": {A: ["bob"]}}


def test_a_popular_key_returns_at_most_the_cap_with_the_askers_zone_first() -> None:
    peers = [Peer("asker", "10.1.0.1", "r1", "z1")]
    peers += [Peer(f"p{i}", f"10.2.{i // 200}.{i % 200 + 1}", "r1", f"z{i % 4}") for i in range(400)]
    svc = IndexService(HolderStore(ttl=100), Membership.of("asker", peers))
    for p in peers[1:]:
        assert p.address is not None
        svc.handle_advertise(p.address, json.dumps({"add": [A]}).encode(), now=0)
    reply = json.loads(svc.handle_lookup("10.1.0.1", json.dumps({"keys": [A]}).encode(), now=1))
    found = reply["providers"][A]
    assert len(found) == MAX_PROVIDERS
    assert all(svc.membership.peers[n].zone == "z1" for n in found)


def test_a_miss_lists_no_key() -> None:
    reply = service().handle_lookup("10.0.0.2", json.dumps({"keys": [A]}).encode(), now=0)
    assert json.loads(reply) == {"providers": {}}

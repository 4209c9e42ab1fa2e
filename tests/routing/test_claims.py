"""Share while downloading, the pure parts and the one-process cluster: the claim table (claimant, followers,
fan-out, leases), the lease decisions, and lookup + claim in one round with one claimant per scope."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import pytest

from sidecar.containerd.ingest import IngestProgress
from sidecar.routing import RoutingSettings
from sidecar.routing.claims import CLUSTER, ClaimTable
from sidecar.routing.leases import Lease, lease_action
from sidecar.routing.protocol import (
    FetchingRequest,
    LookupReply,
    LookupRequest,
    ProtocolError,
    decode_fetching,
    decode_lookup,
    decode_lookup_reply,
    encode_fetching,
    encode_lookup,
    encode_lookup_reply,
)
from tests.routing.cluster import build_cluster, digest

KEY = digest("new-layer")


# ---- the claim table ------------------------------------------------------------------------------------


def test_the_first_asker_claims_and_later_ones_follow_it() -> None:
    table = ClaimTable(lease=5.0, fan_out=3)
    assert table.claim("r1", KEY, "a", 0.0).claimant
    answer = table.claim("r1", KEY, "b", 0.1)
    assert not answer.claimant and answer.fetching == ("a",)
    assert table.claims_total == 1 and table.follows_total == 1
    assert set(table.fetching("r1", KEY, 0.2)) == {"a", "b"}  # a follower is an in-progress provider too


def test_scopes_are_separate() -> None:
    table = ClaimTable()
    assert table.claim("r1", KEY, "a", 0.0).claimant
    assert table.claim("r2", KEY, "x", 0.0).claimant
    assert table.claim(CLUSTER, KEY, "y", 0.0).claimant


def test_a_claimant_that_asks_again_stays_the_claimant() -> None:
    table = ClaimTable()
    table.claim("r1", KEY, "a", 0.0)
    table.claim("r1", KEY, "b", 0.0)
    assert table.claim("r1", KEY, "a", 1.0).claimant


def test_a_follower_asking_again_is_never_sent_to_its_own_followers() -> None:
    table = ClaimTable(fan_out=1)
    table.claim("r1", KEY, "a", 0.0)
    assert table.claim("r1", KEY, "b", 0.0).fetching[0] == "a"
    assert table.claim("r1", KEY, "c", 0.0).fetching[0] == "b"  # a is full: c follows b
    assert table.claim("r1", KEY, "b", 1.0).fetching == ("a",)  # b again: a, never c (c follows b)
    table.release("r1", [KEY], "a")
    assert table.claim("r1", KEY, "b", 2.0).claimant  # its source is gone: b fetches upstream itself
    assert table.claim("r1", KEY, "c", 2.0).fetching == ("b",)


def test_fan_out_builds_a_tree_not_a_star() -> None:
    table = ClaimTable(fan_out=2, offer=1)
    table.claim("r1", KEY, "n0", 0.0)
    firsts = [table.claim("r1", KEY, f"n{i}", 0.0).fetching[0] for i in range(1, 8)]
    assert firsts.count("n0") == 2  # the claimant serves at most fan_out followers
    assert max(firsts.count(name) for name in set(firsts)) <= 2


def test_nearer_fetchers_are_offered_first_within_the_fan_out() -> None:
    table = ClaimTable(fan_out=3)
    table.claim(CLUSTER, KEY, "far", 0.0)
    table.claim(CLUSTER, KEY, "near", 0.0)
    answer = table.claim(CLUSTER, KEY, "me", 0.0, prefer=lambda name: 0 if name == "near" else 2)
    assert answer.fetching[0] == "near"


def test_leases_expire_unless_renewed_and_releases_end_them() -> None:
    table = ClaimTable(lease=5.0)
    table.claim("r1", KEY, "a", 0.0)
    table.claim("r1", KEY, "b", 0.0)
    assert table.renew("r1", [KEY], "a", 4.0) == 1
    assert set(table.fetching("r1", KEY, 6.0)) == {"a"}  # b's lease ran out
    assert table.expired_total == 1
    table.release("r1", [KEY], "a")
    assert table.claim("r1", KEY, "c", 6.5).claimant  # nobody fetches any more: c claims
    assert len(table) == 1


def test_a_full_table_records_nothing() -> None:
    table = ClaimTable(max_keys=1)
    table.claim("r1", KEY, "a", 0.0)
    answer = table.claim("r1", digest("other"), "a", 0.0)
    assert not answer.claimant and not answer.recorded and answer.fetching == ()


# ---- lease decisions ------------------------------------------------------------------------------------


def grown(offset: int) -> IngestProgress:
    return IngestProgress(offset, 1000, None, None)


def test_a_lease_lives_while_the_download_grows_and_ends_when_it_stalls() -> None:
    lease = Lease("r1", ("h",), claimed_at=0.0, claimant=True)
    assert lease_action(lease, grown(10), False, False, 1.0) == "renew"
    assert lease_action(lease, grown(20), False, False, 2.0) == "renew"
    assert lease_action(lease, grown(20), False, False, 4.9, stall=3.0) == "renew"
    assert lease_action(lease, grown(20), False, False, 5.1, stall=3.0) == "drop"


def test_a_lease_waits_for_the_ingest_to_appear_within_its_bound() -> None:
    lease = Lease("r1", ("h",), claimed_at=0.0, claimant=True)
    assert lease_action(lease, None, False, False, 4.0, appear=5.0) == "renew"
    assert lease_action(lease, None, False, False, 5.5, appear=5.0) == "drop"


def test_a_committed_blob_stays_followable_until_it_is_indexed() -> None:
    lease = Lease("r1", ("h",), claimed_at=0.0, claimant=True)
    assert lease_action(lease, None, True, False, 10.0, commit_grace=60.0) == "renew"
    assert lease_action(lease, None, True, False, 69.0, commit_grace=60.0) == "renew"
    assert lease_action(lease, None, True, False, 71.0, commit_grace=60.0) == "drop"
    assert lease_action(Lease("r1", (), 0.0, True), None, True, True, 1.0) == "drop"


# ---- the protocol ---------------------------------------------------------------------------------------


def test_claim_messages_round_trip_and_bad_scopes_are_refused() -> None:
    request = LookupRequest((KEY,), "region-a")
    assert decode_lookup(encode_lookup(request)) == request
    reply = LookupReply({}, {KEY: ("n1", "n2")}, (digest("x"),))
    assert decode_lookup_reply(encode_lookup_reply(reply)) == reply
    fetching = FetchingRequest(CLUSTER, (KEY,), (digest("y"),))
    assert decode_fetching(encode_fetching(fetching)) == fetching
    for body in (b'{"keys":["' + KEY.encode() + b'"],"claim":"a b"}', b'{"scope":5}', b'{"renew":[]}'):
        with pytest.raises(ProtocolError):
            (decode_lookup if b"keys" in body else decode_fetching)(body)


# ---- one process, many nodes ----------------------------------------------------------------------------


@dataclass
class Probe:
    growing: dict[str, int] = field(default_factory=dict)

    def progress(self, key: str) -> IngestProgress | None:
        return grown(self.growing[key]) if key in self.growing else None

    def committed(self, key: str) -> bool:
        return False

    def indexed(self, key: str) -> bool:
        return False


@pytest.mark.anyio
@pytest.mark.parametrize("scope", ["region", "cluster"])
async def test_simultaneous_misses_end_with_one_claimant_per_scope(scope: str) -> None:
    cluster = build_cluster({"r1": 6, "r2": 4}, probe=Probe())
    results = {}

    async def ask(name: str) -> None:
        router = cluster.routers[name]
        others = ["r2" if router.region == "r1" else "r1"] if scope == "cluster" else []
        claim = CLUSTER if scope == "cluster" else router.region
        results[name] = await router.find(KEY, others, claim=claim)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for name in cluster.routers:
                tg.start_soon(ask, name)
    claimants = sorted(n for n, found in results.items() if found.claimed)
    if scope == "cluster":
        assert len(claimants) == 1
    else:
        assert sorted(n.split("-")[0] for n in claimants) == ["r1", "r2"]
    for name, found in results.items():
        assert found.claimed or found.fetching, name
        assert name not in found.fetching
        if scope == "region":
            assert all(n.split("-")[0] == name.split("-")[0] for n in found.fetching)


@pytest.mark.anyio
async def test_the_first_home_that_answers_decides_when_homes_disagree() -> None:
    cluster = build_cluster({"r1": 8}, probe=Probe())
    homes = cluster.routers["r1-n0"].rings.ring("r1").home_names(KEY)
    now = cluster.clock()
    # Each home saw a different first fetcher (messages raced): the first home in rendezvous order wins.
    for home, fetcher in zip(homes, ("r1-n5", "r1-n6", "r1-n7"), strict=True):
        cluster.routers[home].service.claims.claim("r1", KEY, fetcher, now)
    askers = [n for n in cluster.routers if n not in homes and n not in ("r1-n5", "r1-n6", "r1-n7")]
    found = await cluster.routers[askers[0]].find(KEY, claim="r1")
    assert found.fetching[0] == "r1-n5" and not found.claimed
    cluster.network.down.add(cluster.membership.peers[homes[0]].address or "")
    found = await cluster.routers[askers[1]].find(KEY, claim="r1")
    assert found.fetching[0] == "r1-n6"  # the first home is down: the next one decides


@pytest.mark.anyio
async def test_holders_win_over_claims_and_a_dead_claim_frees_the_key() -> None:
    probe = Probe()
    cluster = build_cluster({"r1": 6}, RoutingSettings(claim_lease=2.0), probe=probe)
    a, b, c = (cluster.routers[n] for n in ("r1-n1", "r1-n2", "r1-n3"))
    assert (await a.find(KEY, claim="r1")).claimed
    assert a.leases is not None and a.leases.holding(KEY) is not None
    # a's containerd never starts: its lease keeper drops the claim after the appear bound...
    cluster.clock.now += 6.0
    await a.leases.tick()
    assert a.leases.holding(KEY) is None
    assert (await b.find(KEY, claim="r1")).claimed  # ...so the next asker claims instead of following a
    await c.advertise([KEY])
    found = await a.find(KEY, claim="r1")
    assert found.providers == ("r1-n3",) and not found.claimed and not found.fetching


@pytest.mark.anyio
async def test_a_plain_lookup_sees_downloads_in_progress_without_claiming() -> None:
    cluster = build_cluster({"r1": 6}, probe=Probe())
    fetcher, asker = cluster.routers["r1-n1"], cluster.routers["r1-n2"]
    assert (await fetcher.find(KEY, claim="r1")).claimed
    assert await asker.in_progress(KEY, "r1") == ("r1-n1",)  # what `lokal where` shows
    assert (await asker.find(KEY, claim="r1")).fetching == ("r1-n1",)  # the plain look claimed nothing

"""Scale simulation of the one-hop index with the REAL routing code over the in-process transport.

What is real: placement (`Ring`), the holder store and service, the advertiser's planning and sender
(batching, one request per home node), and the lookup (parallel round to the k homes). What is simulated:
the network (an in-process transport, messages not JSON-encoded for speed: the codec is tested and fuzzed
separately), the workload (images drawn from a Zipf-popular catalogue, plus a few node-unique keys), and
time (an injected clock).

Every region is simulated in full, one after the other: each region keeps its own index, so regions share
no state, and running them in turn bounds memory. Cross-region lookups are covered by the tests, not here.

One process stands in for every node of a region, so they share one `Ring` per snapshot and its memo: a
key's homes are computed once per snapshot, by the first node that needs them, as a real node computes its
own. The per-node CPU of a membership change is measured apart, as one real node pays it (`rehome`: a
1-join/1-leave change at the full run's region size, the full recompute the advertiser used to do versus
the incremental one it does now, interleaved, on cold rings, with the longest event-loop stall).

Usage: bench/scale [--quick] [--json PATH]   (prints one JSON document on stdout)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sidecar.membership import Membership, Peer
from sidecar.routing import (
    Advertiser,
    AdvertiseReply,
    AdvertiseRequest,
    HolderStore,
    HomeTable,
    IndexService,
    InProcessNetwork,
    Lookup,
    LookupReply,
    LookupRequest,
    Ring,
    plan_full,
    plan_membership_push,
)

INTERVAL = 600.0


def digest(label: str) -> str:
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


class Catalogue:
    """Images as key lists: manifest + config + own layers + the layers of a shared base image."""

    def __init__(self, rng: random.Random, images: int, bases: int) -> None:
        base_layers = [[digest(f"base{b}-l{i}") for i in range(rng.randint(1, 3))] for b in range(bases)]
        self.images: list[list[str]] = []
        for i in range(images):
            keys = [digest(f"img{i}-manifest"), digest(f"img{i}-config")]
            keys += [digest(f"img{i}-l{j}") for j in range(rng.randint(2, 8))]
            keys += base_layers[int(rng.paretovariate(1.2)) % bases]  # a few bases dominate
            self.images.append(keys)
        weights = [1.0 / (rank + 1) ** 1.0 for rank in range(images)]  # Zipf popularity
        self.cumulative = list(_accumulate(weights))

    def node_keys(self, rng: random.Random, count: int, unique: int, node: str) -> list[str]:
        keys: dict[str, None] = {digest(f"{node}-own{i}"): None for i in range(unique)}
        while len(keys) < count:
            image = rng.choices(self.images, cum_weights=self.cumulative)[0]
            keys.update(dict.fromkeys(image))
        return list(keys)[:count]


def _accumulate(values: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def deep_size_of_store(store: HolderStore) -> int:
    """Bytes of one holder's index: the dicts, each key string (a holder owns its copy, decoded from
    JSON) and each distinct expiry float. Provider names are the membership's strings, not counted."""
    entries: dict[str, dict[str, float]] = store._entries
    size = sys.getsizeof(entries)
    expiries: set[int] = set()
    for key, providers in entries.items():
        size += sys.getsizeof(key) + sys.getsizeof(providers)
        for expiry in providers.values():
            if id(expiry) not in expiries:
                expiries.add(id(expiry))
                size += sys.getsizeof(expiry)
    return size


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def simulate_region(  # noqa: PLR0915 (one linear scenario, read top to bottom)
    region: str, index: int, nodes: int, catalogue: Catalogue, args: argparse.Namespace, rng: random.Random
) -> dict[str, Any]:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    peers = [
        Peer(f"{region}-n{i}", f"10.{index}.{i // 250}.{i % 250 + 1}", region, f"{region}-z{i % 3}")
        for i in range(nodes)
    ]
    membership = Membership.of(peers[0].name, peers)  # one snapshot shared by every simulated service
    clock = Clock()
    network = InProcessNetwork(clock, codec=False)
    ring = Ring(membership.region_ring(region), args.k, memo_size=10_000_000)
    ttl = 3 * INTERVAL
    services: dict[str, IndexService] = {}
    advertisers: dict[str, Advertiser] = {}
    local_keys: dict[str, list[str]] = {}
    for p in peers:
        assert p.address is not None
        services[p.name] = IndexService(HolderStore(ttl, args.max_entries), membership)
        network.attach(p.address, services[p.name])
        local_keys[p.name] = catalogue.node_keys(rng, args.keys_per_node, args.unique_keys, p.name)
    unique_keys = {k for keys in local_keys.values() for k in keys}
    timings["workload_s"] = time.perf_counter() - started

    # placement: each node's home table; every distinct key is scored once (the shared ring memoises it)
    t = time.perf_counter()
    for p in peers:
        advertisers[p.name] = Advertiser(
            network.transport(p.address or ""), ring, local_keys.pop(p.name), workers=1
        )
    timings["placement_s"] = time.perf_counter() - t

    # startup: every node advertises every key to its homes, one request per home node
    t = time.perf_counter()
    requests_per_full = []
    for advertiser in advertisers.values():
        report = await advertiser.advertise_all()
        requests_per_full.append(report.requests)
    timings["startup_advertise_s"] = time.perf_counter() - t
    startup_messages = network.messages["advertise"]

    entries = [s.store.entries for s in services.values()]
    sample = rng.sample(list(services.values()), min(args.size_sample, nodes))
    sample.append(max(services.values(), key=lambda s: s.store.entries))
    sizes = {id(s): deep_size_of_store(s.store) for s in sample}
    bytes_per_entry = sum(sizes.values()) / max(1, sum(s.store.entries for s in sample))
    biggest = sizes[id(sample[-1])]

    # lookups from random nodes: held keys (hits) and digests nobody has (misses); cache off: raw cost
    t = time.perf_counter()
    names = list(advertisers)
    held = list(unique_keys)
    lookups = {
        p: Lookup(network.transport(membership.peers[p].address or ""), lambda _r: ring, region, cache_ttl=0)
        for p in rng.sample(names, min(200, nodes))
    }
    askers = list(lookups.values())
    before = network.messages["lookup"]
    hits = 0
    for i in range(args.lookups):
        found = await askers[i % len(askers)].find(rng.choice(held))
        hits += bool(found.providers)
    misses_found = 0
    for i in range(args.lookups // 4):
        misses_found += bool((await askers[i % len(askers)].find(digest(f"nobody-{i}"))).providers)
    lookup_count = args.lookups + args.lookups // 4
    messages_per_lookup = (network.messages["lookup"] - before) / lookup_count
    timings["lookups_s"] = time.perf_counter() - t

    # churn: 10% of the nodes leave and as many fresh (empty) nodes join; the survivors push
    t = time.perf_counter()
    churned = max(1, round(args.churn * nodes))
    leavers = set(rng.sample(names, churned))
    joiners = [
        Peer(f"{region}-j{i}", f"10.{index + 100}.{i // 250}.{i % 250 + 1}", region, f"{region}-z{i % 3}")
        for i in range(churned)
    ]
    new_peers = [p for p in peers if p.name not in leavers] + joiners
    new_membership = Membership.of(new_peers[0].name, new_peers)
    new_ring = Ring(new_membership.region_ring(region), args.k, memo_size=10_000_000)
    # the distinct keys moved to the new ring incrementally, as each node moves its own: this also fills
    # the shared memo, so the nodes below reuse it
    every_key: HomeTable[Peer] = HomeTable(ring)
    for key in unique_keys:
        every_key.add(key)
    change = every_key.change(new_ring)
    for key in change.keys:
        change.apply(key)
    change.commit()
    moved = sum(1 for key in unique_keys if set(ring.home_names(key)) != set(every_key.home_names(key)))
    rescored = change.rescored
    del every_key, change
    timings["churn_rehome_s"] = time.perf_counter() - t
    for name in leavers:
        network.detach(membership.peers[name].address or "")
        del services[name], advertisers[name]
    for p in joiners:
        assert p.address is not None
        services[p.name] = IndexService(HolderStore(ttl, args.max_entries), new_membership)
        network.attach(p.address, services[p.name])
    for service in services.values():
        service.update_membership(new_membership)
    clock.now += 60
    before_push = network.messages["advertise"]
    for advertiser in advertisers.values():
        await advertiser.membership_changed(new_ring)
    push_messages = network.messages["advertise"] - before_push
    pushed_entries = sum(s.store.entries for n, s in services.items() if n.startswith(f"{region}-j"))
    total_entries_after = sum(s.store.entries for s in services.values())
    # after the push (before any re-advertise), lookups still find held keys
    still_held = list({k for a in advertisers.values() for k in a.keys})
    new_askers = [
        Lookup(
            network.transport(new_membership.peers[n].address or ""), lambda _r: new_ring, region, cache_ttl=0
        )
        for n in rng.sample(list(advertisers), min(200, len(advertisers)))
    ]
    hits_after = 0
    for i in range(args.lookups):
        hits_after += bool((await new_askers[i % len(new_askers)].find(rng.choice(still_held))).providers)
    timings["churn_s"] = time.perf_counter() - t

    return {
        "region": region,
        "nodes": nodes,
        "unique_keys": len(unique_keys),
        "entries": entries,
        "requests_per_full": requests_per_full,
        "startup_messages": startup_messages,
        "bytes_per_entry": bytes_per_entry,
        "biggest_store_bytes": biggest,
        "biggest_store_entries": sample[-1].store.entries,
        "lookups": lookup_count,
        "messages_per_lookup": messages_per_lookup,
        "hit_rate": hits / args.lookups,
        "false_hits_on_misses": misses_found,
        "churned_nodes": churned,
        "keys_moved": moved,
        "keys_rescored_on_whole_ring": rescored,
        "push_messages": push_messages,
        "pushed_entries_to_joiners": pushed_entries,
        "entries_after_churn": total_entries_after,
        "hit_rate_after_churn_push": hits_after / args.lookups,
        "refused_entries": sum(s.store.refused_total for s in services.values()),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }


class NullTransport:
    """Every request succeeds at once: the rehome measure counts placement CPU, not the network."""

    async def advertise(self, peer: Peer, request: AdvertiseRequest) -> AdvertiseReply:
        return AdvertiseReply(len(request.add) + len(request.remove), 0)

    async def lookup(self, peer: Peer, request: LookupRequest) -> LookupReply:
        return LookupReply({})


async def on_loop(work: Awaitable[object]) -> tuple[float, float]:
    """(CPU seconds, longest event-loop stall) of `work`, with a task that wants the loop all the time.

    The stall is the most CPU time the loop spent elsewhere before that task got it back: CPU rather than
    wall time, so that other processes on a shared machine do not inflate it."""
    done = False
    stall = 0.0

    async def ticker() -> None:
        nonlocal stall
        while not done:
            t = time.process_time()
            await asyncio.sleep(0)
            stall = max(stall, time.process_time() - t)

    ticking = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    cpu = time.process_time()
    await work
    cpu = time.process_time() - cpu
    done = True
    await ticking
    return cpu, stall


async def _full_recompute(
    old: Ring[Peer], new: Ring[Peer], keys: list[str], transport: NullTransport
) -> None:
    # what Advertiser.membership_changed did before the home table: every key against the whole new ring
    for batch in plan_membership_push(old, new, keys):
        await transport.advertise(batch.home, batch.request)


async def _full_advertise(ring: Ring[Peer], keys: list[str], transport: NullTransport) -> None:
    # the startup of the advertiser before the home table: plan_full on the ring, in one go
    for batch in plan_full(ring, keys):
        await transport.advertise(batch.home, batch.request)


async def measure_rehome(nodes: int, keys_count: int, repetitions: int, seed: int) -> dict[str, Any]:
    """One node's membership change (1 join, 1 leave) before and after incremental placement."""
    rng = random.Random(seed)
    peers = [Peer(f"m-n{i}", f"10.200.{i // 250}.{i % 250 + 1}", "m", f"m-z{i % 3}") for i in range(nodes)]
    keys = [digest(f"m-key-{i}") for i in range(keys_count)]
    transport = NullTransport()
    before: list[tuple[float, float]] = []
    after: list[tuple[float, float]] = []
    rescored: list[int] = []
    old = Ring(peers)
    for key in keys:  # the old ring knows the local keys: the advertiser placed them when they arrived
        old.home_names(key)
    for rep in range(repetitions):
        leaver = rng.randrange(nodes)
        new_peers = [p for i, p in enumerate(peers) if i != leaver]
        new_peers.append(Peer(f"m-join{rep}", f"10.201.0.{rep + 1}", "m", "m-z0"))
        advertiser = Advertiser(transport, old, keys)  # its home table, from the old ring's memo
        for side in ("before", "after") if rep % 2 == 0 else ("after", "before"):
            new = Ring(new_peers)  # cold: a snapshot's rings are built when it arrives
            if side == "before":
                before.append(await on_loop(_full_recompute(old, new, keys, transport)))
            else:
                after.append(await on_loop(advertiser.membership_changed(new)))
                rescored.append(sum(1 for k in keys if peers[leaver].name in old.home_names(k)))
    startup_before = await on_loop(_full_advertise(Ring(peers), keys, transport))
    startup = await on_loop(Advertiser(transport, Ring(peers)).load(keys))
    before_cpu = statistics.median(c for c, _ in before)
    after_cpu = statistics.median(c for c, _ in after)
    return {
        "nodes_per_region": nodes,
        "keys": keys_count,
        "change": "1 node leaves and 1 joins this node's region",
        "repetitions": repetitions,
        "method": "time.process_time of one node's work (placement and planning; a transport that answers "
        "at once), cold new ring, before/after interleaved, medians; stall = the most CPU time the event "
        "loop spent before a task waiting for it got it back",
        "full_recompute_cpu_s": round(before_cpu, 4),
        "incremental_cpu_s": round(after_cpu, 4),
        "speedup": round(before_cpu / after_cpu, 1) if after_cpu else None,
        "full_recompute_max_loop_stall_cpu_s": round(max(s for _, s in before), 4),
        "incremental_max_loop_stall_cpu_s": round(max(s for _, s in after), 4),
        "keys_that_lost_a_home_per_repetition": rescored,
        "startup": "placing every local key on a cold ring (unavoidably keys x ring size): the advertiser "
        "used to do it in one go (full advertise plan), it now does it in slices",
        "startup_place_keys_cpu_s_before": round(startup_before[0], 3),
        "startup_place_keys_max_loop_stall_cpu_s_before": round(startup_before[1], 4),
        "startup_place_keys_cpu_s": round(startup[0], 3),
        "startup_place_keys_max_loop_stall_cpu_s": round(startup[1], 4),
    }


def summarise(
    regions: list[dict[str, Any]], rehome: dict[str, Any], args: argparse.Namespace, elapsed: float
) -> dict[str, Any]:
    nodes = sum(r["nodes"] for r in regions)
    entries = [e for r in regions for e in r["entries"]]
    requests = [q for r in regions for q in r["requests_per_full"]]
    bytes_per_entry = sum(r["bytes_per_entry"] * sum(r["entries"]) for r in regions) / max(1, sum(entries))
    lookups = sum(r["lookups"] for r in regions)
    unique = sum(r["unique_keys"] for r in regions)
    mean_entries = sum(entries) / len(entries)
    log2n = math.log2(nodes)
    return {
        "nodes": nodes,
        "regions": len(regions),
        "keys_per_node": args.keys_per_node,
        "k": args.k,
        "advertise_interval_s": INTERVAL,
        "distinct_keys_per_region": [r["unique_keys"] for r in regions],
        "messages_per_lookup": round(
            sum(r["messages_per_lookup"] * r["lookups"] for r in regions) / lookups, 3
        ),
        "lookup_rounds": 1,
        "lookup_hit_rate": round(min(r["hit_rate"] for r in regions), 4),
        "index_entries_per_node": round(mean_entries, 1),
        "index_entries_per_node_p99": percentile(entries, 0.99),
        "index_entries_per_node_max": max(entries),
        "index_bytes_per_entry": round(bytes_per_entry, 1),
        "index_bytes_per_node": round(mean_entries * bytes_per_entry),
        "index_bytes_per_node_max": max(r["biggest_store_bytes"] for r in regions),
        "index_bytes_method": "sys.getsizeof walk of holder stores (dicts, key strings, expiry floats), "
        "sampled nodes plus the largest store",
        "holder_refused_entries": sum(r["refused_entries"] for r in regions),
        "advertise_requests_per_full_round_per_node": round(sum(requests) / len(requests), 1),
        "advertise_requests_per_second_per_node": round(sum(requests) / len(requests) / INTERVAL, 3),
        "advertise_requests_per_second_per_node_max": round(max(requests) / INTERVAL, 3),
        "startup_advertise_messages": sum(r["startup_messages"] for r in regions),
        "churn_fraction_of_nodes": args.churn,
        "churn_model": "in each region, this fraction of nodes leaves and as many new empty nodes join",
        "churn_keys_moved_fraction": round(sum(r["keys_moved"] for r in regions) / unique, 4),
        "churn_keys_rescored_fraction": round(
            sum(r["keys_rescored_on_whole_ring"] for r in regions) / unique, 4
        ),
        "churn_push_messages": sum(r["push_messages"] for r in regions),
        "churn_push_messages_per_surviving_node": round(
            sum(r["push_messages"] for r in regions) / sum(r["nodes"] - r["churned_nodes"] for r in regions),
            1,
        ),
        "churn_entries_pushed_to_joiners": sum(r["pushed_entries_to_joiners"] for r in regions),
        "churn_entries_pushed_fraction": round(
            sum(r["pushed_entries_to_joiners"] for r in regions)
            / sum(r["entries_after_churn"] for r in regions),
            4,
        ),
        "lookup_hit_rate_after_churn_push": round(min(r["hit_rate_after_churn_push"] for r in regions), 4),
        "membership_change_cpu_s_before": rehome["full_recompute_cpu_s"],
        "membership_change_cpu_s_after": rehome["incremental_cpu_s"],
        "membership_change": rehome,
        "kademlia_computed": {
            "measured": False,
            "note": "computed from textbook Kademlia bounds for the same N, not measured",
            "lookup_hops": round(log2n, 1),
            "lookup_messages_alpha3": round(3 * log2n, 1),
            "replication_k": 20,
            "provider_records_per_node": args.keys_per_node * 20,
            "republish_messages_per_key_per_interval": round(20 + 3 * log2n, 1),
        },
        "simulated": {
            "transport": "in-process, messages not JSON-encoded",
            "placement": "one ring per snapshot shared by all simulated nodes of a region (a key's homes "
            "computed once per snapshot); per-node CPU is in membership_change",
            "regions_run": "each region in full, one after another (indices are per region)",
            "workload": f"{args.images} images Zipf(1.0) over {args.bases} shared bases, "
            f"{args.unique_keys} node-unique keys per node",
        },
        "per_region": [
            {k: v for k, v in r.items() if k not in ("entries", "requests_per_full")} for r in regions
        ],
        "elapsed_s": round(elapsed, 1),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--regions", type=int, default=3)
    parser.add_argument("--keys-per-node", type=int)
    parser.add_argument("--unique-keys", type=int, default=15, help="node-unique keys per node")
    parser.add_argument("--images", type=int)
    parser.add_argument("--bases", type=int, default=40)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--lookups", type=int, default=3000, help="lookups per region")
    parser.add_argument("--churn", type=float, default=0.10)
    parser.add_argument("--max-entries", type=int, default=400_000)
    parser.add_argument("--size-sample", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rehome-nodes", type=int, default=1667, help="ring size of the rehome measure")
    parser.add_argument("--rehome-keys", type=int, default=3000, help="local keys of the rehome measure")
    parser.add_argument("--rehome-repetitions", type=int, help="interleaved before/after pairs")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    args.nodes = args.nodes or (600 if args.quick else 5000)
    args.keys_per_node = args.keys_per_node or (1000 if args.quick else 3000)
    args.images = args.images or (1000 if args.quick else 3000)
    args.rehome_repetitions = args.rehome_repetitions or (3 if args.quick else 7)
    if args.nodes < args.regions * 4 or args.keys_per_node < 1 or not 0 < args.churn < 1:
        parser.error("need --nodes >= 4 per region, --keys-per-node >= 1 and 0 < --churn < 1")
    if args.rehome_nodes < 2 or args.rehome_keys < 1 or args.rehome_repetitions < 1:
        parser.error("need --rehome-nodes >= 2, --rehome-keys >= 1 and --rehome-repetitions >= 1")
    started = time.perf_counter()
    rng = random.Random(args.seed)
    catalogue = Catalogue(rng, args.images, args.bases)
    results = []
    for index in range(args.regions):
        count = args.nodes // args.regions + (1 if index < args.nodes % args.regions else 0)
        results.append(asyncio.run(simulate_region(f"region{index}", index, count, catalogue, args, rng)))
        gc.collect()
        print(f"region{index} done in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    rehome = asyncio.run(
        measure_rehome(args.rehome_nodes, args.rehome_keys, args.rehome_repetitions, args.seed)
    )
    print(f"rehome measure done in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    report = summarise(results, rehome, args, time.perf_counter() - started)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

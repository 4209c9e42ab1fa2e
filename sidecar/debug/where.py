"""`lokal where`: for each blob of an image, the nodes that hold it and the order lokal would try them in,
with each entry's tier and the policy's reason. The answer to "why did this pull go upstream?".

Rules:
- `plan_sources` is pure and makes the relay's own choice (`sidecar/registry/providers.py`): the local
  store first, then the allowed holders best first (the relay asks at most `MAX_PROVIDERS_TRIED`);
  holders it would not ask are listed with the reason (policy, quarantine).
- `where_report` asks the index about every region the membership knows, even when the policy would not
  cross: a holder in another region then shows up as refused, with the reason, instead of being invisible.
- Manifests are read from the local store, else through the node's relay (verified like any relay).
  Here tags resolve only locally (the registry path also asks peers); a tag this node lacks is an
  error that says so.
- Downloads in progress (share while downloading) are listed as `in_progress`: the nodes a pull would
  follow now, read from the claim homes without claiming anything.
- Bounded: at most `MAX_ENTRIES` blobs and the walker's `MAX_DEPTH` manifest levels.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from sidecar.containerd import StoreUnavailable
from sidecar.debug.view import NodeView
from sidecar.hosts.settings import DEFAULT_REGISTRY_DIR
from sidecar.membership import Membership, Peer, Tier
from sidecar.oci import Digest, ImageReference, parse_image_reference
from sidecar.oci.walk import Visit, walk_documents
from sidecar.registry.crossing import cap_share, plan_crossing
from sidecar.registry.providers import MAX_PROVIDERS_TRIED, choose_providers
from sidecar.registry.pulls import PullRecord
from sidecar.registry.routes import ManifestRequest
from sidecar.registry.speeds import SpeedBook
from sidecar.topology.policy import PeerStats, TopologyPolicy, tier_of

MAX_ENTRIES = 256
DEFAULT_REGISTRY = "docker.io"
PLACEHOLDER_REPOSITORY = "lokal/where"  # peers serve by digest; a bare digest still needs a valid path


class BadTarget(ValueError):
    """The IMAGE|DIGEST argument cannot be parsed; the message says why."""


@dataclass(frozen=True, slots=True)
class Source:
    node: str
    tier: str
    region: str
    zone: str
    reason: str


@dataclass(frozen=True, slots=True)
class SourcePlan:
    order: tuple[Source, ...]  # what lokal would try, best first
    refused: tuple[Source, ...]  # holders the policy forbids, each with its reason
    strangers: tuple[str, ...]  # holders named by the index that are not in the membership
    verdict: str  # "local" | "peer" | "upstream"
    why: str
    auto: dict[str, object] | None = None  # the cross-region auto decision, when one was needed


def parse_target(text: str, default_registry: str = DEFAULT_REGISTRY) -> ImageReference:
    """`sha256:...`, or `[registry/]repository[:tag][@digest]` (docker.io's `library/` rule included)."""
    text = text.strip()
    if not text:
        raise BadTarget("give an image reference or a digest")
    try:
        return parse_image_reference(text, default_registry)
    except ValueError as exc:  # InvalidReference, InvalidDigest
        raise BadTarget(str(exc)) from None


def plan_sources(
    me: Peer,
    holders: Sequence[str],
    membership: Membership,
    stats: Mapping[str, PeerStats],
    policy: TopologyPolicy,
    *,
    now: float,
    held_locally: bool,
    quarantined: Collection[str] = (),
    speeds: SpeedBook | None = None,
    size: int | None = None,
    registry: str = "",
    region_rate_cap: float | None = None,
) -> SourcePlan:
    """The order the relay would try the holders in, what it would not ask, and the verdict. With
    `speeds`, other-region holders go through the relay's crossing rule too (auto, sidecar/registry/
    crossing.py), for a blob of `size` from `registry`."""
    order: list[Source] = []
    if held_locally:
        here = "in this node's content store"
        order.append(Source(me.name, Tier.SAME_NODE.value, me.region, me.zone, here))
    choice = choose_providers(me, holders, membership, stats, policy, now=now, quarantined=quarantined)
    ranked = list(choice.ranked)
    crossing = None
    if speeds is not None and not held_locally:
        crossing = plan_crossing(ranked, policy=policy, size=size, registry=registry, speeds=speeds,
                                 now=speeds.clock(), region_rate_cap=region_rate_cap)
        dropped = [p for p in ranked if p not in crossing.kept]
        ranked = list(crossing.kept)
        why_dropped = crossing.dropped_reason or "auto: a closer provider is best, no cross-region fallback"
        choice = replace(choice, refused=choice.refused + tuple((p.peer, why_dropped) for p in dropped))
    auto = crossing.decision.fields() if crossing is not None and crossing.decision is not None else None
    for position, provider in enumerate(ranked):
        reason = provider.reason
        if position >= MAX_PROVIDERS_TRIED:
            reason += f"; not tried (the relay asks at most {MAX_PROVIDERS_TRIED})"
        peer = provider.peer
        order.append(Source(peer.name, provider.tier.value, peer.region, peer.zone, reason))
    refused = tuple(
        Source(peer.name, tier_of(me, peer).value, peer.region, peer.zone, why)
        for peer, why in choice.refused
    )
    if held_locally:
        return SourcePlan(tuple(order), refused, choice.strangers, "local", "held by this node")
    if ranked:
        best = ranked[0]
        why = f"relayed from {best.peer.name} ({best.tier.value})"
        if auto is not None:
            why += f"; auto: {auto['auto_reason']}"
        return SourcePlan(tuple(order), refused, choice.strangers, "peer", why, auto)
    why = "no node holds it" if not holders else choice.reason
    if crossing is not None and crossing.dropped_reason:
        why = crossing.dropped_reason
    return SourcePlan(tuple(order), refused, choice.strangers, "upstream", why, auto)


# -- the I/O shell ------------------------------------------------------------------------------------


async def where_report(node: NodeView, text: str) -> dict[str, Any]:
    """Every blob of `text`'s image with its sources; raises BadTarget for an unusable argument."""
    mirrored = [r for r in node.settings.mirrored_registries if r != DEFAULT_REGISTRY_DIR]
    target = parse_target(text, DEFAULT_REGISTRY)
    registry = target.registry or (mirrored[0] if mirrored else DEFAULT_REGISTRY)
    repository = target.repository or PLACEHOLDER_REPOSITORY
    root = target.digest
    if root is None:
        assert target.tag is not None
        try:
            root = await node.store.resolve_tag(registry, repository, target.tag)
        except StoreUnavailable:
            root = None
        if root is None:
            raise BadTarget(f"{registry}/{repository}:{target.tag} is not held on this node, and lokal "
                            "resolves tags only from the local store: pass IMAGE@DIGEST or the digest")
    walker = _Walker(node, registry, repository)
    await walker.walk(root, bare=target.repository == "")
    membership = node.current_membership()
    bare = target.repository == ""  # a digest alone names no registry or repository: none is made up
    return {
        "target": text,
        "registry": None if bare else registry,
        "repository": None if bare else repository,
        "digest": str(root),
        "node": _node_name(node, membership),
        "mode": node.policy.mode.value,
        "cross_region": node.policy.cross_region.value,
        "blobs": walker.entries,
        "truncated": walker.truncated,
    }


def _node_name(node: NodeView, membership: Membership | None) -> str:
    """This node's name: from the membership (with --discovery none it holds no Peer), else the setting."""
    if membership is not None and membership.self_name:
        return membership.self_name
    return node.settings.node_name or "this node"


class _Walker:
    def __init__(self, node: NodeView, registry: str, repository: str) -> None:
        self.node, self.registry, self.repository = node, registry, repository
        self.entries: list[dict[str, Any]] = []
        self.truncated = False
        self.seen: set[Digest] = set()

    async def walk(self, root: Digest, bare: bool) -> None:
        """Each node of the image under `root` (oci.walk_documents), each digest once, MAX_ENTRIES at most."""

        async def read(digest: Digest) -> bytes | None:
            return None if digest in self.seen else await self._manifest(digest)

        async def visit(node: Visit) -> bool:
            if node.digest in self.seen:
                return False
            if len(self.entries) >= MAX_ENTRIES:
                self.truncated = True
                return False
            self.seen.add(node.digest)
            kind = node.kind or ("blob" if bare else "manifest")  # the root, unreadable
            entry = await self._entry(node.digest, kind, node.media_type, node.size)
            if node.data is None and kind in ("manifest", "index"):
                entry["note"] = "manifest not readable here or from a peer: its blobs are not listed"
            self.entries.append(entry)
            return True

        await walk_documents(root, read, visit)

    async def _entry(
        self, digest: Digest, kind: str, media_type: str | None, size: int | None
    ) -> dict[str, Any]:
        node = self.node
        membership = node.current_membership()
        me = membership.me if membership else None
        held = await self._held(digest)
        entry: dict[str, Any] = {"digest": str(digest), "short": digest.short, "kind": kind,
                                 "media_type": media_type, "size": size, "held_locally": held}
        if membership is None or me is None:
            entry.update(holders=[], order=[], refused=[], strangers=[],
                         verdict="local" if held else "upstream",
                         why="held by this node" if held else "membership not known yet")
            return entry
        holders: tuple[str, ...] = ()
        if node.router is not None:
            other_regions = [r for r in membership.regions() if r and r != me.region]
            try:
                holders = tuple(await node.router.lookup(str(digest), other_regions))
            except Exception as exc:  # a failed lookup is a miss, as in the relay
                entry["lookup_error"] = str(exc)[:200]
        in_progress: tuple[str, ...] = ()
        scope_of = getattr(node.relay, "claim_scope", None)
        scope = scope_of(membership) if scope_of is not None else None
        if scope is not None and not held and node.router is not None:
            try:
                in_progress = tuple(await node.router.in_progress(str(digest), scope))
            except Exception as exc:  # a report, never a crash
                entry["lookup_error"] = str(exc)[:200]
        entry["in_progress"] = list(in_progress)
        plan = plan_sources(me, holders, membership, node.book.snapshot(), node.policy,
                            now=time.monotonic(), held_locally=held, quarantined=node.book.quarantined(),
                            speeds=node.speeds, size=size, registry=self.registry,
                            region_rate_cap=cap_share(node.caps.from_other_regions))
        entry.update(
            holders=list(holders),
            order=[asdict(s) for s in plan.order],
            refused=[asdict(s) for s in plan.refused],
            strangers=list(plan.strangers),
            verdict=plan.verdict,
            why=plan.why,
            auto=plan.auto,
        )
        if in_progress and not holders and not held:
            entry.update(verdict="follow", why="no node holds it yet; being downloaded by "
                         + ", ".join(in_progress) + ": a pull now follows that download")
        return entry

    async def _held(self, digest: Digest) -> bool:
        try:
            return await self.node.store.info(digest) is not None
        except StoreUnavailable:
            return str(digest) in self.node.store.keys()  # noqa: SIM118 (a frozenset, not a dict)

    async def _manifest(self, digest: Digest) -> bytes | None:
        try:
            manifest = await self.node.store.read_manifest(digest)
        except StoreUnavailable:
            manifest = None
        if manifest is not None:
            return manifest.data
        record = PullRecord("manifest", "GET", self.repository, self.registry, digest.short, "lokal-where")
        plan = ManifestRequest(self.registry, self.repository, digest)
        try:
            response = await self.node.relay.fetch(plan, digest, None, record)
        except Exception:  # where is a report: a broken relay is a missing manifest, never a crash
            return None
        if response is None or not isinstance(response.body, bytes):
            return None
        return response.body


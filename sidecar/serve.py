"""`lokal serve`: assemble the store, the registry endpoint, discovery, the index and the relay, and run
them until SIGTERM, which drains in-flight responses (bounded) and exits 0.

Rules:
- Startup logs one `config` line with the effective settings; nothing secret is in it.
- The parts are built here and nowhere else; each part takes plain values, never the settings dict.
- Order matters: the store's change stream is subscribed before the first advertise, and the server
  listens before this node advertises, so a peer that learns of us can already fetch.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from sidecar.caps.pacer import TierCaps
from sidecar.cluster import ClusterConfig, MembershipSource
from sidecar.containerd import ContainerdStore, KeyChange, Store
from sidecar.containerd.cri_config import (
    check_containerd,
    read_config_files,
    read_containerd_version,
    read_cri_config,
)
from sidecar.containerd.ingest import IngestProbe
from sidecar.containerd.upstream_watch import UpstreamWatcher, ingest_size
from sidecar.debug import Observability, observe, start_observability
from sidecar.debug.status import all_warnings
from sidecar.http import HttpServer, ServerLimits
from sidecar.http.client import PeerClient
from sidecar.logs import get_logger, log_event
from sidecar.membership import CrossRegion, Membership, TopologyLabels, TopologyMode
from sidecar.oci import Digest
from sidecar.registry import RegistryHandler, Relay, RouteConfig
from sidecar.registry.crossing import CrossingGate
from sidecar.registry.growing import GrowingSource
from sidecar.registry.handler import Admission, PeersNotKnownYet, ReadinessCheck
from sidecar.registry.peerstats import PeerBook
from sidecar.registry.relay import PeerRelay
from sidecar.registry.speeds import SpeedBook
from sidecar.routing.http_endpoint import peer_endpoint
from sidecar.routing.http_transport import HttpPeerTransport, LocalIndex
from sidecar.routing.router import OneHopRouter, RoutingSettings
from sidecar.security import Gate, LimitReporter, PeerTokens
from sidecar.topology.admission import admit_request
from sidecar.topology.policy import TopologyPolicy
from sidecar.topology.validation import policy_warnings

log = get_logger("serve")


@dataclass
class Node:
    """One running lokal: what `lokal status`, the tests and the lab inspect."""

    store: Store
    handler: RegistryHandler
    server: HttpServer
    policy: TopologyPolicy
    settings: dict[str, Any] = field(default_factory=dict)
    membership: Membership | None = None
    source: MembershipSource | None = None
    router: OneHopRouter | None = None
    book: PeerBook = field(default_factory=PeerBook)
    config_warnings: list[str] = field(default_factory=list)
    limits: LimitReporter = field(default_factory=LimitReporter)
    tokens: PeerTokens | None = None
    observability: Observability | None = None  # metrics, /metrics and /_lokal/debug/ (sidecar/debug)
    speeds: SpeedBook = field(default_factory=SpeedBook)  # upstream and region estimates (auto)
    caps: TierCaps = field(default_factory=TierCaps)
    crossing: CrossingGate | None = None

    def auth_headers(self) -> list[tuple[str, str]]:
        return [self.tokens.header] if self.tokens is not None else []

    def current_membership(self) -> Membership | None:
        return self.source.current if self.source is not None else self.membership


def build_node(settings: dict[str, Any], store: Store | None = None) -> Node:
    if store is None:
        store = ContainerdStore(
            settings["containerd_socket"],
            namespace=settings["containerd_namespace"],
            content_root=settings["content_root"],
        )
    routes = RouteConfig(
        mirrored_registries=settings["mirrored_registries"],
        resolve_tags=settings["resolve_tags"],
        resolve_latest=settings["resolve_latest"],
    )
    policy = TopologyPolicy(
        mode=TopologyMode(settings["topology_mode"]),
        cross_region=CrossRegion(settings["cross_region"]),
        allow_unknown_clients=settings["allow_unknown_clients"],
        cross_region_bias=settings["cross_region_bias"],
    )
    # Until the first Node list arrives (the API may be unreachable), a miss says so, not "--discovery none".
    waiting = Relay() if settings["discovery"] == "none" else PeersNotKnownYet()
    handler = RegistryHandler(store, routes, waiting)
    limits = ServerLimits(
        header_timeout=settings["header_timeout"],
        idle_timeout=settings["idle_timeout"],
        max_connections=settings["max_connections"],
        drain_timeout=settings["drain_timeout"],
    )
    node = Node(store, handler, HttpServer(handler, limits), policy, settings)
    if settings["discovery"] == "none":
        # Single-node mode: no peers, so only loopback (or, if allowed, anyone) may pull.
        node.membership = Membership.of(settings["node_name"] or "local", [])
    else:
        node.source = MembershipSource(
            ClusterConfig(
                node_name=settings["node_name"] or "",
                kubeconfig=Path(settings["kubeconfig"]) if settings["kubeconfig"] else None,
                topology_mode=policy.mode,
                address_family="ipv6" if ":" in settings["listen"][0] else "ipv4",
                labels=TopologyLabels(settings["region_label"], settings["zone_label"]),
            )
        )
    handler.admit = _admission(node)
    handler.readiness = _readiness(node)
    handler.uploads = Gate("peer_uploads", settings["max_peer_uploads"], node.limits)
    node.caps = TierCaps.of(settings["cap_from_other_regions"], settings["cap_to_peers"])
    handler.upload_cap = node.caps.to_peers
    node.crossing = CrossingGate(policy, node.speeds, node.caps, size_of=lambda d: ingest_size(store, d))
    if settings["peer_token_file"]:
        node.tokens = PeerTokens(settings["peer_token_file"])  # TokenFileError names the setting
        handler.peer_auth = node.tokens.accepts
    for warning in policy_warnings(policy):
        log_event(log, "config_warning", level=30, warning=warning)
    node.observability = observe(node)
    return node


def _admission(node: Node) -> Admission:
    def admit(client: str) -> tuple[bool, str]:
        membership = node.current_membership() or Membership.of("local", [])
        verdict = admit_request(client, membership, node.policy)
        return verdict.allowed, verdict.reason

    return admit


def _readiness(node: Node) -> ReadinessCheck:
    async def check() -> tuple[bool, dict[str, object]]:
        reachable = await node.store.ready()
        details: dict[str, object] = {"containerd": "connected" if reachable else "unreachable"}
        warnings = [*node.config_warnings, *getattr(node.store, "warnings", ())]
        absent = getattr(node.store, "absent_blobs", 0)
        if absent:
            warnings.append(f"{absent} layers named by local manifests are absent from the content store")
        if warnings:
            details["warnings"] = warnings
        return reachable, details

    return check


async def check_containerd_config(node: Node) -> None:
    """Read containerd's CRI configuration once it answers, and warn about what would make lokal
    useless on this node. Logged once; kept for /readyz and `lokal status`."""
    socket_path = node.settings["containerd_socket"]
    while True:  # containerd may not be up yet: the store's loop says so; here we just wait
        config = await read_cri_config(socket_path)
        if config is not None:
            break
        await anyio.sleep(2.0)
    hosts_dir = node.settings["config_path"]
    config_file = node.settings["containerd_config"]
    version = await read_containerd_version(socket_path)
    files = {} if "registry" in config else read_config_files(config_file)
    check = check_containerd(config, hosts_dir, config_file, files, version)
    node.config_warnings = check.warnings
    # `warnings` counts what `lokal status` lists now (settings, containerd, node), as lokal_config_warnings
    # does; `containerd_config_warnings` only this check's, logged just below.
    log_event(log, "config_checked", hosts_dir=hosts_dir, warnings=len(all_warnings(node)),
              containerd_config_warnings=len(node.config_warnings), containerd_version=version or None,
              source=check.source or None, checked=check.unchecked is None)
    if check.unchecked is not None:  # said plainly, never a warning: a warning must never be false
        log_event(log, "config_unchecked", reason=check.unchecked)
    for warning in node.config_warnings:
        log_event(log, "config_warning", level=30, warning=warning)


async def run_node(
    node: Node, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    settings = node.settings
    log_event(log, "config", **{k: v for k, v in settings.items() if v is not None})
    async with PeerClient() as client, anyio.create_task_group() as tg:
        run = getattr(node.store, "run", None)
        if run is not None:
            await tg.start(run)
        changes = node.store.subscribe()
        if isinstance(node.store, ContainerdStore):
            tg.start_soon(check_containerd_config, node)
        await tg.start(node.server.serve, settings["listen"])
        if node.observability is not None:
            await start_observability(node, node.observability, tg)
        if node.source is not None:
            await _start_peering(node, client, tg, changes)
        task_status.started()
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log_event(log, "shutdown", signal=signal.Signals(signum).name)
                break
        await node.server.shutdown()
        tg.cancel_scope.cancel()
    close = getattr(node.store, "aclose", None)
    if close is not None:
        await close()
    log_event(log, "stopped")


async def _in_namespace(store: Store, digest: Digest) -> bool:
    return await store.info(digest) is not None


async def _start_peering(
    node: Node, client: PeerClient, tg: TaskGroup, changes: MemoryObjectReceiveStream[KeyChange]
) -> None:
    """Discovery, the one-hop index and the relay; returns once the first advertise is under way."""
    assert node.source is not None
    source = node.source
    settings = node.settings
    port = settings["listen"][1]
    membership: Membership = await tg.start(source.run)
    me = membership.me
    routers: list[OneHopRouter] = []  # the transport needs the router's service, built just below
    # A node without an address is in no ring, so it is never its own home: nothing to short-cut.
    local = LocalIndex(me.name, me.address, lambda: routers[0].service) if me and me.address else None
    store = node.store
    probe = None
    if settings["share_downloads"] and isinstance(store, ContainerdStore):
        probe = IngestProbe(
            lambda: store.content_root, store.namespace, lambda key: key in store.keys()  # noqa: SIM118
        )
        node.handler.growing = GrowingSource(
            lambda: store.content_root,
            store.namespace,
            lambda digest: _in_namespace(store, digest),
            Gate("follower_uploads", 2 * settings["claim_fan_out"], node.limits),
        )
    router = OneHopRouter(
        membership,
        HttpPeerTransport(client, port, extra_headers=node.auth_headers, local=local),
        RoutingSettings(
            advertise_interval=settings["advertise_interval"],
            max_entries=settings["index_max_entries"],
            claim_fan_out=settings["claim_fan_out"],
        ),
        probe=probe,
    )
    routers.append(router)
    node.router = router
    node.handler.peer_handler = peer_endpoint(lambda: router.service)
    node.handler.relay = relay = PeerRelay(
        router, node.current_membership, node.policy, client, port, node.book,
        on_mismatch=node.store.abort_ingests,
        relays=Gate("relays", settings["max_relays"], node.limits),
        max_per_peer=settings["max_relays_per_peer"],
        auth_headers=node.auth_headers,
        crossing=node.crossing,
        claims=probe is not None,
    )
    if isinstance(store, ContainerdStore):  # learn upstream speed from containerd's fetches after our 404s
        watcher = UpstreamWatcher(lambda: store.content_root, store.namespace, node.speeds.upstream_seen)
        relay.on_blob_miss = watcher.missed
        tg.start_soon(watcher.run)

    async def advertise_local_content() -> None:
        await router.start(node.store.keys())
        async for change in changes:
            if change.added:
                await router.advertise(change.added)
            if change.removed:
                await router.withdraw(change.removed)

    async def follow_membership() -> None:
        first = True
        async for current, _change in source.subscribe():
            if first:  # the subscription opens with the state the router was built from
                first = False
                continue
            await router.membership_changed(current)

    tg.start_soon(advertise_local_content)
    tg.start_soon(router.run)
    tg.start_soon(follow_membership)

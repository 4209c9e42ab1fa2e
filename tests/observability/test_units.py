"""The pure parts: miss categories, what one finished request counts, target parsing, warnings, the
label bound; and the two /metrics doors (main listener, --metrics-listen) and the debug door's rule."""

from __future__ import annotations

import pytest

from sidecar.containerd import MemoryStore
from sidecar.debug import parse_target
from sidecar.debug.warnings import settings_warnings
from sidecar.debug.where import BadTarget
from sidecar.http.client import PeerClient
from sidecar.http.messages import Request
from sidecar.membership import CrossRegion, Membership, Peer, TopologyMode
from sidecar.metrics.definitions import RegistryLabels
from sidecar.metrics.pulls import classify
from sidecar.registry.providers import choose_providers
from sidecar.registry.pulls import Miss, PullRecord
from sidecar.registry.routes import OperatorCall
from sidecar.serve import running_node
from sidecar.settings import Discovery, ServeSettings, read
from sidecar.topology.policy import PeerStats, TopologyPolicy


def record(**fields: object) -> PullRecord:
    base = PullRecord("blob", "GET", "app", "registry.example", "sha256:abc", "127.0.0.1")
    for name, value in fields.items():
        setattr(base, name, value)
    return base


ME = Peer("a", "10.0.0.1", "r1", "z1", True, True)
SAME_ZONE = Peer("b", "10.0.0.2", "r1", "z1")
OTHER_REGION = Peer("d", "10.0.0.4", "r2", "z3")
NEVER = TopologyPolicy(TopologyMode.PREFER, CrossRegion.NEVER)


@pytest.mark.parametrize(
    ("holders", "quarantined", "busy", "miss"),
    [
        ((), (), False, Miss.NOT_FOUND),
        (("d",), (), False, Miss.FORBIDDEN),
        (("b",), ("b",), False, Miss.QUARANTINED),
        (("d",), ("d",), False, Miss.FORBIDDEN),  # quarantine is moot: the policy forbids d anyway
        (("b", "d"), (), True, Miss.PER_PEER_CAP),  # without the cap, b would have been asked
    ],
)
def test_when_no_holder_can_be_asked_the_choice_says_why_by_type(
    holders: tuple[str, ...], quarantined: tuple[str, ...], busy: bool, miss: Miss
) -> None:
    membership = Membership.of("a", [ME, SAME_ZONE, OTHER_REGION])
    stats = {"b": PeerStats(in_flight=2)} if busy else {}
    choice = choose_providers(ME, list(holders), membership, stats, NEVER, now=0.0,
                              quarantined=quarantined, per_peer_cap=2)
    assert choice.ranked == () and choice.miss is miss and choice.reason


def test_a_relay_cut_off_mid_body_counts_the_bytes_sent_as_an_error_at_its_tier() -> None:
    cut = record(result="error", tier="same_zone", provider="b", bytes=1000, responded_at=1.0)
    outcome = classify(cut)
    assert (outcome.counter, outcome.result, outcome.tier) == ("requests", "error", "same_zone")
    assert outcome.bytes == (("to_containerd", "same_zone", 1000), ("from_peer", "same_zone", 1000))
    assert outcome.ttfb is None and outcome.transfer is None and outcome.miss is None


def test_a_head_request_counts_no_bytes_and_no_transfer_time() -> None:
    head = record(method="HEAD", result="local", tier="same_node", status=200, bytes=500)
    head.finish()
    outcome = classify(head)
    assert outcome.bytes == () and outcome.transfer is None and outcome.ttfb is None


def test_a_request_served_to_a_peer_never_counts_as_containerds() -> None:
    served = record(for_peer=True, result="local", tier="same_node", bytes=42)
    outcome = classify(served, "other_region")
    assert (outcome.counter, outcome.tier, outcome.bytes) == (
        "peer_requests",
        "other_region",
        (("to_peer", "other_region", 42),),
    )


def test_the_registry_label_is_capped() -> None:
    bound = RegistryLabels(limit=2)
    assert [bound(n) for n in ("a.io", "b.io", "c.io", "a.io")] == ["a.io", "b.io", "other", "a.io"]


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "has_digest"),
    [
        ("nginx", "docker.io", "library/nginx", "latest", False),
        ("nginx:1.27", "docker.io", "library/nginx", "1.27", False),
        ("ghcr.io/org/app:v1", "ghcr.io", "org/app", "v1", False),
        ("localhost:5000/app@sha256:" + "a" * 64, "localhost:5000", "app", None, True),
        ("sha256:" + "b" * 64, "", "", None, True),
    ],
)
def test_where_targets_parse_like_image_references(
    text: str, registry: str, repository: str, tag: str | None, has_digest: bool
) -> None:
    target = parse_target(text)
    assert (target.registry, target.repository, target.tag) == (registry, repository, tag)
    assert (target.digest is not None) == has_digest


@pytest.mark.parametrize("text", ["", "Upper/Case:v1", "app:bad tag", "sha256:short", "app@sha256:zz"])
def test_a_bad_where_target_is_a_clear_error(text: str) -> None:
    with pytest.raises(BadTarget):
        parse_target(text)


def test_settings_warnings_name_the_settings_involved() -> None:
    env = {"LOKAL_TOPOLOGY_MODE": "isolate", "LOKAL_CROSS_REGION": "always", "LOKAL_RESOLVE_LATEST": "true"}
    warnings = settings_warnings(read(ServeSettings, env=env))
    assert any("--cross-region always" in w for w in warnings)
    assert any("--resolve-latest" in w for w in warnings)
    assert settings_warnings(ServeSettings(cross_region=CrossRegion.NEVER)) == []


@pytest.mark.anyio
async def test_metrics_are_served_on_the_main_listener_and_on_metrics_listen() -> None:
    env = {"LOKAL_DISCOVERY": "none", "LOKAL_METRICS_LISTEN": "127.0.0.1:0"}
    settings = read(ServeSettings, env=env)
    async with (
        running_node(settings, store=MemoryStore(), listen=("127.0.0.1", 0)) as node,
        PeerClient() as client,
    ):
        assert node.server.address is not None and node.observability.metrics_server is not None
        port = node.server.address[1]
        address = node.observability.metrics_server.address
        assert address is not None
        for target_port in (port, address[1]):
            response = await client.get("127.0.0.1", target_port, "/metrics")
            async with response:
                text = (await response.read(1 << 20)).decode()
            assert response.status == 200 and "lokal_node_info{" in text
        response = await client.get("127.0.0.1", address[1], "/v2/")
        async with response:
            await response.read(1 << 16)
        assert response.status == 404  # the metrics listener serves nothing else


@pytest.mark.anyio
async def test_the_debug_pages_answer_loopback_clients_only() -> None:
    settings = ServeSettings(discovery=Discovery.NONE)
    async with running_node(settings, store=MemoryStore(), listen=("127.0.0.1", 0)) as node:
        endpoint = node.observability.endpoint

    def request(client: str) -> Request:
        return Request("GET", "/_lokal/debug/status", "/_lokal/debug/status", "", [], "1.1", (client, 1))

    assert (await endpoint(request("10.0.0.7"), OperatorCall("debug", "status"))).status == 403
    assert (await endpoint(request("127.0.0.1"), OperatorCall("debug", "status"))).status == 200
    assert (await endpoint(request("10.0.0.7"), OperatorCall("metrics"))).status == 200  # admit decides


@pytest.mark.anyio
async def test_lokal_status_warns_about_a_node_without_a_region_label_with_the_configured_key() -> None:
    from sidecar.cluster.feed import FixedMembership
    from sidecar.debug.status import all_warnings

    env = {"LOKAL_TOPOLOGY_MODE": "isolate", "LOKAL_REGION_LABEL": "example.com/site"}
    feed = FixedMembership(Membership.of("n1", [Peer("n1", "10.0.0.1", is_self=True)]))
    settings = read(ServeSettings, env=env)
    async with running_node(settings, store=MemoryStore(), membership=feed, listen=("127.0.0.1", 0)) as node:
        (warning,) = [w for w in all_warnings(node) if "region label" in w]
        assert "example.com/site" in warning and "region of its own" in warning
        feed.set(Membership.of("n1", [Peer("n1", "10.0.0.1", region="s1", is_self=True)]))
        assert not [w for w in all_warnings(node) if "region label" in w]


@pytest.mark.parametrize("key", ["Example.com/site", "a/b/c", "-site", "x" * 64])
def test_a_bad_label_key_setting_is_refused_naming_the_setting(key: str) -> None:
    from sidecar.hosts.settings import SettingError

    with pytest.raises(SettingError, match=r"^LOKAL_ZONE_LABEL: "):
        read(ServeSettings, env={"LOKAL_ZONE_LABEL": key})

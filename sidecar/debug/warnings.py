"""Configuration warnings: settings that work but probably do not do what the operator wants. Pure.

Logged once at startup (`config_warning` lines), shown by `lokal status`, counted by
`lokal_config_warnings`. Runtime conditions (containerd down, index full) are in `runtime_warnings`.
"""

from __future__ import annotations

from sidecar.hosts.settings import DEFAULT_REGISTRY_DIR
from sidecar.membership import CrossRegion, TopologyMode
from sidecar.settings import Discovery, ServeSettings


def settings_warnings(settings: ServeSettings) -> list[str]:
    warnings: list[str] = []
    # isolate + allow-unknown-clients: topology.policy_warnings
    always = settings.cross_region is CrossRegion.ALWAYS
    if settings.topology_mode is TopologyMode.ISOLATE and always:
        warnings.append("--cross-region always has no effect in isolate mode")
    if settings.discovery is Discovery.NONE and always:
        warnings.append("--cross-region always has no effect with --discovery none (no peers)")
    if settings.resolve_latest:
        warnings.append("--resolve-latest: 'latest' is answered from this node's or a peer's store, "
                        "which may be stale")
    if DEFAULT_REGISTRY_DIR in settings.mirrored_registries:
        warnings.append(f"--mirrored-registries {DEFAULT_REGISTRY_DIR}: every registry is mirrored")
    return warnings


def runtime_warnings(
    *, containerd_connected: bool, absent_blobs: int, index_bound_hit: bool, membership_known: bool,
) -> list[str]:
    warnings: list[str] = []
    if not containerd_connected:
        warnings.append("containerd is not connected: only files already indexed are served")
    if absent_blobs:
        warnings.append(f"{absent_blobs} layers named by local manifests are absent from the content store "
                        "(is discard_unpacked_layers on?)")
    if index_bound_hit:
        warnings.append("the index holder store is full: new entries are refused")
    if not membership_known:
        warnings.append("the membership is not known yet: no peer is asked")
    return warnings

"""Configuration warnings: settings that work but probably do not do what the operator wants. Pure.

Logged once at startup (`config_warning` lines), shown by `lokal status`, counted by
`lokal_config_warnings`. Runtime conditions (containerd down, index full) are in `runtime_warnings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def settings_warnings(settings: Mapping[str, Any]) -> list[str]:
    warnings: list[str] = []
    mode = settings.get("topology_mode")  # isolate + allow-unknown-clients: topology.policy_warnings
    if mode == "isolate" and settings.get("cross_region") == "always":
        warnings.append("--cross-region always has no effect in isolate mode")
    if settings.get("discovery") == "none" and settings.get("cross_region") == "always":
        warnings.append("--cross-region always has no effect with --discovery none (no peers)")
    if settings.get("resolve_latest"):
        warnings.append("--resolve-latest: 'latest' is answered from this node's store, which may be stale")
    if "mirrored_registries" in settings and settings["mirrored_registries"] is None:
        warnings.append("--mirrored-registries '*': every registry is mirrored")
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

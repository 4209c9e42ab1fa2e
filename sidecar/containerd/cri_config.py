"""The startup check of containerd's CRI configuration: will containerd read lokal's hosts.toml files,
and will its layers stay in the content store to be shared?

Read through CRI `Status` (verbose) over the same socket. The check itself is pure: it takes the JSON.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import grpc.aio

from sidecar._proto.cri.runtime.v1 import api_pb2, api_pb2_grpc
from sidecar.hosts.containerd_config import config_path_includes


def check_cri_config(config: dict[str, Any], hosts_dir: str) -> list[str]:
    """Operator-facing warnings about a CRI plugin configuration (the `config` of a verbose Status)."""
    warnings = []
    registry = config.get("registry")
    config_path = registry.get("configPath") if isinstance(registry, dict) else None
    if not isinstance(config_path, str) or not config_path_includes(config_path, hosts_dir):
        shown = config_path if isinstance(config_path, str) and config_path else "empty"
        warnings.append(
            f"containerd's CRI registry config_path is {shown}, which does not include {hosts_dir}: "
            "containerd ignores lokal's hosts.toml files and never asks lokal (set config_path and "
            "restart containerd)"
        )
    runtime = config.get("containerd")
    if isinstance(runtime, dict) and runtime.get("discardUnpackedLayers") is True:
        warnings.append(
            "containerd has discard_unpacked_layers on: layers are deleted after unpack, so this node "
            "cannot share them with its peers"
        )
    return warnings


async def read_cri_config(socket_path: str, limit_s: float = 5.0) -> dict[str, Any] | None:
    """The CRI plugin's configuration, or None when the CRI service does not answer."""
    async with grpc.aio.insecure_channel(f"unix://{socket_path}") as channel:
        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        try:
            response = await stub.Status(api_pb2.StatusRequest(verbose=True), timeout=limit_s)
        except grpc.aio.AioRpcError:
            return None
    try:
        config = json.loads(response.info.get("config", ""))
    except ValueError:
        return None
    return config if isinstance(config, dict) else None

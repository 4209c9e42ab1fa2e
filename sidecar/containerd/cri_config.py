"""The startup check of containerd's CRI configuration: will containerd read lokal's hosts.toml files,
and will its layers stay in the content store to be shared?

Rules:
- 1.x: read through CRI `Status` (verbose) over the same socket; its `config` JSON carries `registry`
  and `containerd` (discardUnpackedLayers).
- 2.x: that JSON carries no image settings at all: they live in the io.containerd.cri.v1.images plugin,
  which no API exposes (containerd #10780). Then containerd's config file is read instead, when it is
  mounted (--containerd-config), with its `imports`. When it is not readable, the check says plainly
  that it cannot be made, and warns about nothing: a warning must never be false.
- Where 2.x's config file leaves config_path unset, the default of that version counts: empty before
  2.2, `/etc/containerd/certs.d:/etc/docker/certs.d` from 2.2 on.
- The checks are pure (JSON, TOML text and a version in; a `ConfigCheck` out); the readers are thin.
"""

from __future__ import annotations

import glob
import json
import os.path
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import empty_pb2

from sidecar._proto.containerd.services.version.v1 import version_pb2_grpc
from sidecar._proto.cri.runtime.v1 import api_pb2, api_pb2_grpc
from sidecar.hosts.containerd_config import config_path_includes

IMAGES_PLUGIN = "io.containerd.cri.v1.images"  # 2.x, config version 3
CRI_PLUGIN = "io.containerd.grpc.v1.cri"  # 1.x, and 2.x reading a version 2 file
DEFAULT_CONFIG_PATH_FROM_2_2 = "/etc/containerd/certs.d:/etc/docker/certs.d"


@dataclass(frozen=True)
class ConfigCheck:
    """What the check found: operator warnings, where the settings were read, and, when it could not
    be made, why (said plainly in the log and status, never counted as a warning)."""

    warnings: list[str] = field(default_factory=list)
    source: str = ""  # "CRI status" or the config file's path
    unchecked: str | None = None


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


def check_containerd(
    cri: dict[str, Any], hosts_dir: str, config_file: str, files: dict[str, str | None], version: str
) -> ConfigCheck:
    """The whole check: CRI status where it shows the registry settings (1.x), else the config file.

    `files` maps a path to its text (None: not readable): the config file first, then the files it
    imports in containerd's order (what `read_config_files` returns).
    """
    if "registry" in cri:
        return ConfigCheck(check_cri_config(cri, hosts_dir), "CRI status")
    settings = _file_settings(config_file, files)
    if isinstance(settings, str):
        return ConfigCheck(
            unchecked=(
                f"containerd {version or '2.x'} shows no registry settings through its API (containerd "
                f"#10780) and {settings}: cannot check that its config_path includes {hosts_dir}, nor "
                f"discard_unpacked_layers (mount containerd's config file read-only at {config_file})"
            )
        )
    config_path, discard = settings
    if config_path is None:
        config_path = DEFAULT_CONFIG_PATH_FROM_2_2 if _at_least(version, (2, 2)) else ""
    as_cri = {"registry": {"configPath": config_path}, "containerd": {"discardUnpackedLayers": discard}}
    return ConfigCheck(check_cri_config(as_cri, hosts_dir), config_file)


def _file_settings(config_file: str, files: dict[str, str | None]) -> tuple[str | None, bool] | str:
    """(config_path or None when unset, discard_unpacked_layers) from the file and its imports, later
    files winning as in containerd; or, when that cannot be known, why not (in words)."""
    config_path: str | None = None
    discard = False
    for path, text in (files or {config_file: None}).items():
        if text is None:
            return f"{path} is not readable here"
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            return f"{path} is not valid TOML ({exc})"
        plugins = doc.get("plugins", {})
        images = _table(plugins, IMAGES_PLUGIN)  # version 3
        legacy = _table(plugins, CRI_PLUGIN)  # version 2, which 2.x migrates
        for registry in (_table(legacy, "registry"), _table(images, "registry")):
            if isinstance(registry.get("config_path"), str):
                config_path = registry["config_path"]
        for table in (_table(legacy, "containerd"), images):
            if isinstance(table.get("discard_unpacked_layers"), bool):
                discard = table["discard_unpacked_layers"]
    return config_path, discard


def _table(parent: Any, key: str) -> dict[str, Any]:
    value = parent.get(key) if isinstance(parent, dict) else None
    return value if isinstance(value, dict) else {}


def _at_least(version: str, wanted: tuple[int, int]) -> bool:
    parts = version.lstrip("v").split(".")
    try:
        return (int(parts[0]), int(parts[1])) >= wanted
    except (ValueError, IndexError):
        return False


def read_config_files(config_file: str) -> dict[str, str | None]:
    """The config file, then every file its `imports` match (globs relative to its directory, each
    glob's matches sorted, as containerd does), as text (None: not readable)."""
    files: dict[str, str | None] = {config_file: _read(config_file)}
    try:
        doc = tomllib.loads(files[config_file] or "")
    except tomllib.TOMLDecodeError:
        return files
    patterns = doc.get("imports", [])
    for pattern in patterns if isinstance(patterns, list) else []:
        if not isinstance(pattern, str):
            continue
        full = pattern if os.path.isabs(pattern) else os.path.join(os.path.dirname(config_file), pattern)
        for path in sorted(glob.glob(full)) if any(c in full for c in "*?[") else [full]:
            files[path] = _read(path)
    return files


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None


async def read_containerd_version(socket_path: str, limit_s: float = 5.0) -> str:
    """containerd's version ("2.1.9", "1.6.20~ds1"), or "" when it does not answer."""
    async with grpc.aio.insecure_channel(f"unix://{socket_path}") as channel:
        stub = version_pb2_grpc.VersionStub(channel)
        try:
            response = await stub.Version(empty_pb2.Empty(), timeout=limit_s)
        except grpc.aio.AioRpcError:
            return ""
    return str(response.version)


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

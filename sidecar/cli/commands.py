"""The list of sub-command modules, in the order `lokal --help` shows them."""

from __future__ import annotations

from types import ModuleType


def commands() -> list[ModuleType]:
    # Imported lazily so that `lokal configure` does not pay for grpc or the Kubernetes client.
    import importlib

    names = ["serve", "configure", "cleanup", "status", "where", "demo"]
    return [importlib.import_module(f"sidecar.cli.{name}") for name in names]

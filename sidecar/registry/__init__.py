"""The OCI distribution endpoint (pull-only): local serving, the relay seam, health and readiness."""

from sidecar.registry.handler import LOCAL_ONLY_HEADER, RegistryHandler, Relay
from sidecar.registry.pulls import PullRecord
from sidecar.registry.routes import RouteConfig

__all__ = ["LOCAL_ONLY_HEADER", "PullRecord", "RegistryHandler", "Relay", "RouteConfig"]

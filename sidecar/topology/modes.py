"""The settings words of the topology policy, shared by `cluster` (label selector) and `topology` (ranking).

Rules:
- The enum values are the CLI spellings (`--topology-mode`, `--cross-region`); they never change meaning.
- This module imports nothing from lokal, so both `cluster` and `topology` may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
# Deprecated since Kubernetes 1.17: read only when the current label is absent.
LEGACY_REGION_LABEL = "failure-domain.beta.kubernetes.io/region"
LEGACY_ZONE_LABEL = "failure-domain.beta.kubernetes.io/zone"


@dataclass(frozen=True, slots=True)
class TopologyLabels:
    """The Node label keys that carry region and zone (`--region-label`, `--zone-label`). The deprecated
    failure-domain keys are read as a fallback only when the standard key is in use."""

    region: str = REGION_LABEL
    zone: str = ZONE_LABEL

    @property
    def region_keys(self) -> tuple[str, ...]:
        return (self.region, LEGACY_REGION_LABEL) if self.region == REGION_LABEL else (self.region,)

    @property
    def zone_keys(self) -> tuple[str, ...]:
        return (self.zone, LEGACY_ZONE_LABEL) if self.zone == ZONE_LABEL else (self.zone,)


class TopologyMode(StrEnum):
    ISOLATE = "isolate"  # only this node's region exists; other regions are never listed nor served
    PREFER = "prefer"  # every region exists; closer tiers first, crossing governed by CrossRegion


class CrossRegion(StrEnum):
    """Whether prefer mode may fetch from another region: never, always, or blob by blob when that beats
    upstream (`auto`, the rule in sidecar/topology/crossing.py)."""

    NEVER = "never"
    ALWAYS = "always"
    AUTO = "auto"

    @property
    def crosses(self) -> bool:
        """Whether providers in other regions are looked up and may be asked at all."""
        return self is not CrossRegion.NEVER

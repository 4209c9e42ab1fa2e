"""Shared fixtures of the reliability tests: one token-protected 5-node lab cluster for the access, fault
and fuzz tests, images built once, and the check that no namespace or process of this run is left."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lokal_lab.cluster import LabCluster
from lokal_lab.images import BuiltImage, build_image
from lokal_lab.topology import LabTopology, NodeSpec

from tests.conftest import REAL_PARTS_MISSING, skip_or_fail
from tests.lab.conftest import netns_names, require_lab
from tests.reliability.labtools import write_token_file

# region-a: node-1..3 in zone-a1, node-4 in zone-a2; region-b: node-5.
TOPOLOGY = LabTopology(
    nodes=(
        NodeSpec("node-1", "region-a", "zone-a1"),
        NodeSpec("node-2", "region-a", "zone-a1"),
        NodeSpec("node-3", "region-a", "zone-a1"),
        NodeSpec("node-4", "region-a", "zone-a2"),
        NodeSpec("node-5", "region-b", "zone-b1"),
    ),
    upstream_rate="200mbit",
    upstream_delay_ms=5,
)
REGION_A = tuple(n.name for n in TOPOLOGY.nodes if n.region == "region-a")


def require_cluster() -> None:
    require_lab()
    if REAL_PARTS_MISSING:
        skip_or_fail(f"reliability lab tests: {REAL_PARTS_MISSING}")


@pytest.fixture(scope="session", autouse=True)
def _one_event_loop_for_the_session() -> Iterator[None]:
    """Overrides the root conftest's async session fixture: these tests are synchronous."""
    yield


@pytest.fixture(scope="session", autouse=True)
def no_namespace_of_this_run_is_left() -> Iterator[None]:
    yield
    if os.geteuid() == 0:
        mine = sorted(n for n in netns_names() if n.startswith(f"lk{os.getpid()}"))
        assert mine == [], f"namespaces left behind: {mine}"


@pytest.fixture(scope="session")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_token_file(tmp_path_factory.mktemp("secret"))


@pytest.fixture(scope="session")
def cluster(token_file: Path) -> Iterator[LabCluster]:
    """Five nodes, every lokal started with --peer-token-file; prefer mode, cross-region never."""
    require_cluster()
    with LabCluster(TOPOLOGY, lokal_args=("--peer-token-file", str(token_file))) as lab_cluster:
        yield lab_cluster


MakeImage = Callable[..., BuiltImage]


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> MakeImage:
    root = tmp_path_factory.mktemp("images")

    def make(name: str, seed: int, sizes: tuple[int, ...] = (700_000, 300_000, 90_000)) -> BuiltImage:
        return build_image(root / name, "v1", list(sizes), seed=seed)

    return make

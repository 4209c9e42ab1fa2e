"""Shared fixtures: real processes (containerd, docker-registry) under a ProcessGroup that stops them by
PID, on failure too. Tests that need them are skipped with a reason when not root or a tool is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lokal_lab import containerd_versions
from lokal_lab.containerd import ContainerdInstance
from lokal_lab.kube_apiserver import KubeApiServer, missing_parts
from lokal_lab.processes import ProcessGroup
from lokal_lab.registry import RegistryInstance

REPO = Path(__file__).resolve().parents[1]
LOKAL_NAMESPACE, LOKAL_SERVICE_ACCOUNT = "lokal-system", "lokal"


def _real_parts_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (containerd's content store is root-only)"
    for tool in ("containerd", "docker-registry", "skopeo"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run scripts/setup.sh)"
    return None


REAL_PARTS_MISSING = _real_parts_missing()
# CI runs as root with every tool installed: there, a test that needs them must run, so a missing part
# fails the test instead of skipping it (a green run that skipped the real-containerd tests proves little).
IN_CI = os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def skip_or_fail(reason: str) -> None:
    """Skip the test for `reason` (root, a tool); under CI, fail it instead."""
    if IN_CI:
        pytest.fail(f"{reason}; CI is set, so this test must run here", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def _real_parts() -> None:
    if REAL_PARTS_MISSING:
        skip_or_fail(REAL_PARTS_MISSING)


needs_real_parts = pytest.mark.usefixtures("_real_parts")


# ---- the containerd version matrix ----
# Tests marked `containerd_matrix` run once per version (LOKAL_CONTAINERD_MATRIX, default all of SERIES);
# every other test runs on LOKAL_CONTAINERD's version (default the system's 1.6). The parameter sets
# LOKAL_CONTAINERD while its tests run, so every containerd they start (directly, or in a lab cluster)
# is that version.


def matrix_series() -> list[str]:
    chosen = os.environ.get("LOKAL_CONTAINERD_MATRIX")
    return [s.strip() for s in chosen.split(",") if s.strip()] if chosen else list(containerd_versions.SERIES)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("containerd_matrix"):
        metafunc.parametrize("containerd_version", matrix_series(), indirect=True, scope="module")


@pytest.fixture(scope="module", autouse=True)
def containerd_version(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The version a `containerd_matrix` test runs on (None for other tests: LOKAL_CONTAINERD's)."""
    series: str | None = getattr(request, "param", None)
    if series is None:
        yield None
        return
    try:
        containerd_versions.containerd_version(series)
    except containerd_versions.ContainerdVersionError as exc:
        skip_or_fail(str(exc))
    before = os.environ.get(containerd_versions.ENV_VERSION)
    os.environ[containerd_versions.ENV_VERSION] = series
    try:
        yield series
    finally:
        if before is None:
            os.environ.pop(containerd_versions.ENV_VERSION, None)
        else:
            os.environ[containerd_versions.ENV_VERSION] = before


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # grpc.aio needs asyncio, and binds to the first event loop it sees: one loop for the whole session.
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
async def _one_event_loop_for_the_session(anyio_backend: str) -> AsyncIterator[None]:
    """Holds anyio's runner open between tests (it closes when no test or fixture leases it)."""
    yield


@pytest.fixture(scope="session")
def session_processes() -> Iterator[ProcessGroup]:
    with ProcessGroup() as group:
        yield group


@pytest.fixture
def processes() -> Iterator[ProcessGroup]:
    with ProcessGroup() as group:
        yield group


@pytest.fixture(scope="session")
def registry(session_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> RegistryInstance:
    if REAL_PARTS_MISSING:
        skip_or_fail(REAL_PARTS_MISSING)
    instance = RegistryInstance(tmp_path_factory.mktemp("registry"))
    instance.start(session_processes)
    return instance


@pytest.fixture
def containerd(processes: ProcessGroup, tmp_path: Path, registry: RegistryInstance) -> ContainerdInstance:
    """A private containerd whose certs.d sends the lab registry's name to the lab registry."""
    instance = ContainerdInstance(tmp_path / "containerd")
    instance.start(processes)
    instance.write_hosts(registry.address, f"http://{registry.address}")
    return instance


def lokal_rbac() -> list[dict[str, Any]]:
    """Namespace, ServiceAccount, ClusterRole, binding and settings exactly as manifests/ renders them."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        skip_or_fail("kubectl is not installed: it renders manifests/")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(REPO / "manifests/base/common")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


@pytest.fixture(scope="session")
def real_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiServer]:
    """A real kube-apiserver 1.20 with etcd on loopback, one per session, run as a cluster runs it (TLS,
    Node,RBAC, service-account keys), holding lokal's namespace, ServiceAccount and RBAC from manifests/.
    Skipped with the reason when the binary was never built (scripts/kube_apiserver.sh)."""
    missing = missing_parts()
    if missing:
        skip_or_fail(missing)
    rbac = lokal_rbac()
    with ProcessGroup() as processes, KubeApiServer(tmp_path_factory.mktemp("kube"), processes) as api:
        for obj in rbac:
            api.apply(obj)
        yield api

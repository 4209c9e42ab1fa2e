"""containerd on node B pulls a whole image through lokal, which serves it from node A's store, while
the upstream registry is down. containerd verifies every digest itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lokal_lab.containerd import ContainerdInstance
from lokal_lab.cri import CriClient
from lokal_lab.images import build_image, push_image
from lokal_lab.processes import ProcessGroup
from lokal_lab.registry import RegistryInstance

from tests.conftest import needs_real_parts
from tests.registry.lokal_process import LokalProcess

pytestmark = [needs_real_parts, pytest.mark.containerd_matrix]


@pytest.fixture
def upstream(processes: ProcessGroup, tmp_path: Path) -> RegistryInstance:
    registry = RegistryInstance(tmp_path / "upstream")
    registry.start(processes)
    return registry


def start_node(processes: ProcessGroup, directory: Path, upstream: RegistryInstance) -> ContainerdInstance:
    node = ContainerdInstance(directory)
    node.start(processes)
    node.write_hosts(upstream.address, f"http://{upstream.address}")
    return node


@pytest.mark.parametrize(
    ("layers", "platforms"),
    [
        pytest.param([400_000, 3_000_000, 1_000], ("linux/amd64", "linux/arm64"), id="multi-platform"),
        pytest.param([200 * 1024 * 1024], ("linux/amd64",), id="200MiB-layer"),
    ],
)
def test_node_b_pulls_through_lokal_from_node_a_with_upstream_down(
    processes: ProcessGroup, tmp_path: Path, upstream: RegistryInstance, layers: list[int],
    platforms: tuple[str, ...],
) -> None:
    image = build_image(tmp_path / "layout", "v1", layers, platforms, seed=7)
    reference = push_image(image, upstream.address, "e2e/app")
    node_a = start_node(processes, tmp_path / "a", upstream)
    with CriClient(node_a.socket) as cri:
        cri.pull(reference)

    lokal = LokalProcess(
        processes, tmp_path / "lokal.log",
        "--containerd-socket", str(node_a.socket),
        "--discovery", "none",
        "--mirrored-registries", upstream.address,
    )
    node_b = ContainerdInstance(tmp_path / "b")
    node_b.start(processes)
    node_b.write_hosts(upstream.address, f"http://{upstream.address}", mirrors=[f"http://{lokal.address}"])
    upstream.stop()

    with CriClient(node_b.socket) as cri:
        image_ref = cri.pull(reference)
        status = cri.image_status(reference)
    assert image_ref == image.configs["linux/amd64"].digest
    assert status is not None and reference in status.repo_tags
    pulled = {p.name for p in (node_b.content_root / "blobs" / "sha256").iterdir()}
    assert {b.digest.removeprefix("sha256:") for b in image.blobs_for("linux/amd64")} <= pulled

    pulls = [json.loads(line) for line in lokal.log_lines() if '"event":"pull"' in line]
    served = {(p["kind"], p["result"]) for p in pulls if p["method"] == "GET"}
    assert ("blob", "local") in served and ("manifest", "local") in served
    blob_bytes = sum(p["bytes"] for p in pulls if p["kind"] == "blob" and p["method"] == "GET")
    expected = sum(b.size for b in image.blobs_for("linux/amd64")[-len(layers) - 1 :])
    if not node_b.version.fetches_layers_in_ranges:
        assert blob_bytes == expected
    else:
        # 2.1 hangs up after each 1 MiB chunk of an open-ended range: each request is charged what
        # containerd's TCP took in (its chunk and what its receive buffer held), never the remainder it
        # was promised (that was ~32x the layer). test_ranged_fetches bounds it exactly.
        assert expected <= blob_bytes <= expected * 1.2 + (4 << 20)
    assert lokal.stop() == 0  # SIGTERM drains and exits 0


def test_a_range_request_after_a_cut_off_body_resumes_with_206(
    processes: ProcessGroup, tmp_path: Path, upstream: RegistryInstance
) -> None:
    image = build_image(tmp_path / "layout", "v1", [5_000_000], seed=8)
    reference = push_image(image, upstream.address, "e2e/range")
    node = start_node(processes, tmp_path / "a", upstream)
    with CriClient(node.socket) as cri:
        cri.pull(reference)
    lokal = LokalProcess(
        processes, tmp_path / "lokal.log", "--containerd-socket", str(node.socket),
        "--discovery", "none", "--mirrored-registries", upstream.address,
    )
    layer = image.layers["linux/amd64"][0]
    data = (image.layout / "blobs" / "sha256" / layer.digest.removeprefix("sha256:")).read_bytes()
    path = f"/v2/e2e/range/blobs/{layer.digest}?ns={upstream.address}"

    # A client reads part of the body, drops the connection, and resumes where it stopped.
    import socket

    with socket.create_connection(("127.0.0.1", lokal.port)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        while len(received) < 1_000_000:
            received += sock.recv(65536)
    head, _, first_part = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    offset = len(first_part)
    status, headers, rest = lokal.request("GET", path, {"Range": f"bytes={offset}-"})
    assert status == 206
    assert headers["content-range"] == f"bytes {offset}-{layer.size - 1}/{layer.size}"
    assert first_part + rest == data

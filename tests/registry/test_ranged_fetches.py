"""containerd 2.1's chunked fetch of one layer, against a real lokal serving from a real containerd: every
chunk is an open-ended range (`bytes=N-`) whose client hangs up after reading its chunk.

A body that breaks off is charged only what reached the client, in the log line, in lokal_bytes_total
and in `lokal status` alike. The client here bounds its receive buffer, so what its kernel may take in
beyond what it read is known, and the bound below is exact rather than a guess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lokal_lab.chunked_fetch import ChunkedFetch
from lokal_lab.containerd import ContainerdInstance
from lokal_lab.cri import CriClient
from lokal_lab.images import build_image, push_image
from lokal_lab.processes import ProcessGroup
from lokal_lab.registry import RegistryInstance

from tests.conftest import needs_real_parts
from tests.registry.lokal_process import LokalProcess

pytestmark = needs_real_parts  # the client makes 2.1's pattern: one containerd version is enough

CHUNK = 1 << 20
RCVBUF = 64 * 1024  # the kernel doubles it; what a hung-up chunk may be charged beyond CHUNK is below this
SLACK = 4 * RCVBUF


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_client_hanging_up_after_each_chunk_is_charged_only_what_it_received(
    processes: ProcessGroup, containerd: ContainerdInstance, registry: RegistryInstance, tmp_path: Path
) -> None:
    image = build_image(tmp_path / "layout", "v1", [12 * CHUNK + 4321], ("linux/amd64",), seed=17)
    reference = push_image(image, registry.address, "ranged/app")
    with CriClient(containerd.socket) as cri:
        cri.pull(reference)
    layer = image.layers["linux/amd64"][0]
    lokal = LokalProcess(
        processes, tmp_path / "lokal.log",
        "--containerd-socket", str(containerd.socket),
        "--discovery", "none",
        "--mirrored-registries", registry.address,
    )
    path = f"/v2/ranged/app/blobs/{layer.digest}?ns={registry.address}"
    fetch = ChunkedFetch("127.0.0.1", lokal.port, path, chunk=CHUNK, parallel=3, rcvbuf=RCVBUF)
    data = fetch.fetch()
    blob = (image.layout / "blobs" / "sha256" / layer.digest.removeprefix("sha256:")).read_bytes()
    assert data == blob
    requests = -(-layer.size // CHUNK)
    assert len(fetch.statuses) == requests

    lines = [json.loads(line) for line in lokal.log_lines() if '"event":"pull"' in line]
    mine = [line for line in lines if line["digest"] == layer.digest[:19] and line["method"] == "GET"]
    charged = [line["bytes"] for line in mine]
    assert len(charged) == requests
    # Each request read CHUNK bytes (the last one the rest) and hung up: that much, plus at most what a
    # bounded receive buffer took in. Before the fix each was charged the whole remainder it was promised.
    for count in charged:
        assert count <= CHUNK + SLACK, charged
    assert layer.size <= sum(charged) <= layer.size + requests * SLACK

    _, _, metrics = lokal.request("GET", "/metrics")
    served = metric(metrics.decode(), "lokal_bytes_total", direction="to_containerd", tier="same_node")
    assert served == sum(charged)
    status = subprocess.run(
        [sys.executable, "-m", "sidecar", "status", "--server", lokal.address, "--json"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    assert json.loads(status.stdout)["requests"]["bytes_by_tier"]["same_node"] == sum(charged)
    assert lokal.stop() == 0

"""A hung containerd (SIGSTOP: the kernel still accepts its connections, nobody answers) must not hold
requests: tag requests get their 404 and /readyz its 503 within a short deadline, far below containerd's
wait for a mirror (tens of seconds) and the kubelet's for a probe. Before the bound, each took 10 s.
Then containerd is thawed (SIGCONT, always, in a finally) and lokal answers from it again."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
from pathlib import Path

import anyio
import pytest
from lokal_lab.containerd import ContainerdInstance
from lokal_lab.registry import RegistryInstance

from sidecar.serve import running_node
from sidecar.settings import Discovery, ServeSettings
from tests.containerd.harness import ContainerdHarness, make_image

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("registry")]

# Six requests in all while containerd is frozen. Unbounded, each waited for the 10 s gRPC deadline.
FROZEN_BUDGET_S = 8.0


def request(port: int, method: str, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


async def ask(port: int, method: str, path: str) -> tuple[int, bytes]:
    return await anyio.to_thread.run_sync(request, port, method, path)


async def test_a_frozen_containerd_gets_fast_404s_for_tags_and_a_fast_503_from_readyz(
    containerd: ContainerdInstance, registry: RegistryInstance, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness = ContainerdHarness(containerd, registry)
    reference = await harness.pull(make_image(tmp_path, multi_platform=False), "hung/app")
    tag_path = f"/v2/hung/app/manifests/{reference.rsplit(':', 1)[1]}?ns={registry.address}"
    settings = ServeSettings(discovery=Discovery.NONE, mirrored_registries=(registry.address,))
    pid = containerd.pid
    assert pid is not None
    caplog.set_level(logging.INFO, logger="lokal")
    # The node as `lokal serve` builds it: its own /readyz check, its own handler.
    async with running_node(settings, store=harness.store, listen=("127.0.0.1", 0)) as node:
        assert node.server.address is not None
        port = node.server.address[1]
        assert (await ask(port, "HEAD", tag_path))[0] == 200
        assert (await ask(port, "GET", "/readyz"))[0] == 200
        os.kill(pid, signal.SIGSTOP)
        try:
            with anyio.fail_after(FROZEN_BUDGET_S):
                tags = [await ask(port, "GET", tag_path) for _ in range(3)]
                probes = [await ask(port, "GET", "/readyz") for _ in range(3)]
        finally:
            os.kill(pid, signal.SIGCONT)
        assert [status for status, _ in tags] == [404] * 3
        assert all(json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN" for _, body in tags)
        assert [status for status, _ in probes] == [503] * 3
        stalled = [r for r in caplog.records if r.getMessage() == "containerd_stalled"]
        assert len(stalled) == 1  # one line for the state change, not one per request
        # Thawed: after the pause, the request path asks containerd again and the tag resolves.
        with anyio.fail_after(15):
            while (await ask(port, "HEAD", tag_path))[0] != 200:
                await anyio.sleep(0.2)
        assert (await ask(port, "GET", "/readyz"))[0] == 200

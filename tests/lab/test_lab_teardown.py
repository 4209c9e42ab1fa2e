"""Teardown leaves nothing: no namespaces, no processes, no blackhole route (unless another lab needs it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lokal_lab import blackhole
from lokal_lab.network import Lab
from lokal_lab.topology import LabTopology, NodeSpec, example_topology

from .conftest import netns_names, require_lab, start_echo_server

pytestmark = pytest.mark.lab


def pid_alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it (orphans are reparented to init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def assert_gone(lab: Lab, pids: list[int]) -> None:
    assert not {ns.name for ns in lab.plan.namespaces} & netns_names()
    assert not [pid for pid in pids if pid_alive(pid)]
    assert lab.lab_id not in blackhole.live_labs()
    # The route may stay only while another lab on this machine (a parallel test run) still needs it.
    assert not blackhole.route_present() or blackhole.live_labs()


def test_teardown_removes_namespaces_processes_and_the_blackhole_route() -> None:
    require_lab()
    lab = Lab(example_topology(4))
    with lab:
        assert blackhole.route_present()
        server = start_echo_server(lab, "node-3", lab.address("node-3"), 7300, connections=1)
        # A daemonized child (as containerd's shims are): not in the process group, still inside node-1's ns.
        out = lab.run("node-1", ["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"]).stdout
        orphan = int(out.split()[0])
        assert pid_alive(orphan)
        pids = [server.pid, orphan]
    assert_gone(lab, pids)
    assert not Path(lab.work_dir).exists()


def test_teardown_runs_when_the_body_fails_and_close_is_safe_twice() -> None:
    require_lab()
    lab = Lab(LabTopology(nodes=(NodeSpec("solo", "r1", "z1"),), upstream_rate=None, interregion_rate=None))
    with pytest.raises(RuntimeError, match="boom"), lab:
        proc = lab.start("solo", "sleeper", ["sleep", "300"])
        raise RuntimeError("boom")
    assert_gone(lab, [proc.pid])
    lab.close()


def test_two_labs_at_once_do_not_collide_and_share_the_blackhole_route() -> None:
    require_lab()
    topology = LabTopology(nodes=(NodeSpec("n1", "r1", "z1"),), upstream_rate=None, interregion_rate=None)
    with Lab(topology) as first:
        second = Lab(topology)
        with second:
            assert first.netns("n1") != second.netns("n1")
        assert blackhole.route_present()  # the first lab still needs it
        assert {first.lab_id} <= set(blackhole.live_labs())
    assert_gone(first, [])

"""Inter-region latency: TUN delay links between the region routers, in a real (small) lab."""

from __future__ import annotations

import pytest
from lokal_lab.network import Lab
from lokal_lab.topology import LabTopology, NodeSpec

from .conftest import echo_send, require_lab, start_echo_server

pytestmark = pytest.mark.lab

DELAY_MS = 25


def test_a_delayed_interregion_link_adds_latency_keeps_data_and_addresses_and_counts_bytes() -> None:
    require_lab()
    nodes = (NodeSpec("east-1", "east", "east-a"), NodeSpec("west-1", "west", "west-a"))
    topology = LabTopology(nodes=nodes, interregion_delay_ms=DELAY_MS, interregion_rate="200mbit", mtu=9000)
    with Lab(topology) as lab:
        server = start_echo_server(lab, "west-1", lab.address("west-1"), 7400, connections=2)
        small = echo_send(lab, "east-1", lab.address("west-1"), 7400, 100)
        bulk = echo_send(lab, "east-1", lab.address("west-1"), 7400, 2 * 1024 * 1024)
        counted = lab.link_bytes()["east~west"]
        server.wait(timeout=10)
        peers = (lab.work_dir / "west-1-echo-7400.log").read_text().split()
    print(
        f"\ninter-region delay link ({DELAY_MS} ms each way): "
        f"connect+100 B echo {small['seconds'] * 1000:.1f} ms "
        f"(expected ~{4 * DELAY_MS} ms: 2 round trips), 2 MiB echo {bulk['seconds']:.2f} s; {counted}"
    )
    # The server saw east-1's own address: the link moves packets, it does not proxy connections.
    assert peers == ["peer", lab.address("east-1")] * 2
    assert small["intact"] and bulk["intact"]
    assert small["seconds"] >= DELAY_MS / 1000  # generous: two round trips add 4 x delay
    assert counted.a_to_b >= 2 * 1024 * 1024 and counted.b_to_a >= 2 * 1024 * 1024

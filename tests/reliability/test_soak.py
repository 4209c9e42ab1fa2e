"""A bounded soak (about a minute of load, two minutes in all): 64 clients mixing local hits, relays, misses
and Range requests, membership churn every 3 s, a provider's lokal restarted in the middle. Zero corrupted
bodies, zero crashed processes, no file descriptor leak, RSS that stops growing. The figures are printed
(run with -s) and attached to the test report; bench/soak.py runs the same soak for longer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lokal_lab.cluster import LabCluster

from tests.reliability.conftest import require_cluster
from tests.reliability.soak import (
    LOAD_NODES,
    SOAK_LOKAL_ARGS,
    SOAK_TOPOLOGY,
    SoakPlan,
    SoakReport,
    rss_growth_stopped,
    run_soak,
)

pytestmark = pytest.mark.lab

# Pooled keep-alive connections a lokal may hold to its peers: at most 8 idle per peer (PeerClient).
POOL_PER_PEER = 8


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, token_file: Path) -> Iterator[SoakReport]:
    require_cluster()
    work_dir = tmp_path_factory.mktemp("soak")
    args = (*SOAK_LOKAL_ARGS, "--peer-token-file", str(token_file))
    with LabCluster(SOAK_TOPOLOGY, lokal_args=args) as cluster:
        result = run_soak(cluster, work_dir, SoakPlan(seconds=60), log=print)
    (work_dir / "soak.json").write_text(json.dumps(result.to_json(), indent=1))
    print(result.summary())
    yield result


def test_the_soak_serves_every_kind_of_request_and_never_a_corrupted_body(
    report: SoakReport, record_property: Any
) -> None:
    totals = report.totals()
    record_property("soak_totals", totals)
    assert totals["corrupt"] == 0, report.load
    for node in LOAD_NODES:
        summary = report.load[node]
        assert summary["stuck_threads"] == 0
        for kind in ("local", "relay", "miss", "range"):
            entry = summary["kinds"][kind]
            assert entry["ok"] > 0, (node, kind, entry)
            assert entry["errors"] == 0, (node, kind, entry, summary["samples"])
        # A local hit is never refused or cut: the load nodes' own lokals were never restarted.
        assert summary["kinds"]["local"]["ok"] == summary["kinds"]["local"]["requests"]
    assert any(e.startswith("-node-5") for e in report.churn_events)
    assert f"restarted lokal on {report.restarted}" in report.churn_events


def test_no_process_crashed_during_the_soak(report: SoakReport) -> None:
    assert report.crashed == []


def test_no_lokal_leaked_file_descriptors(report: SoakReport) -> None:
    peers = len(report.nodes) - 1
    for node, figures in report.nodes.items():
        if figures.restarted:
            continue
        before, after = figures.fds_before, figures.fds_after
        assert after["file"] <= before["file"], (node, before, after)  # every blob file was closed
        assert after["pipe"] <= before["pipe"] and after["other"] <= before["other"], (node, before, after)
        assert after["socket"] <= before["socket"] + POOL_PER_PEER * peers, (node, before, after)


def test_lokal_rss_stops_growing(report: SoakReport, record_property: Any) -> None:
    peaks = {n: max(f.rss_mb, default=0.0) for n, f in report.nodes.items()}
    record_property("soak_peak_rss_mb", peaks)
    for node, figures in report.nodes.items():
        if figures.restarted:
            continue
        assert rss_growth_stopped(figures.rss_mb), (node, figures.rss_mb)

"""The pure parts of the lab benchmarks (bench/pulls.py, bench/relay.py, bench/miss.py) and of
LabCluster's fresh-state helper: run order, quantiles, bytes by tier, verdicts, the Markdown table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lokal_lab.cluster import content_blob_count

from bench import miss, pulls, relay
from bench._lab import percentile


def test_every_case_runs_all_three_ways_and_no_way_always_runs_first() -> None:
    cases = pulls.plan([pulls.image_spec(10, 1), pulls.image_spec(20, 2)])
    assert [(c.image.name, c.scenario) for c in cases] == [
        ("10MB-1L", "rolling"),
        ("10MB-1L", "create"),
        ("20MB-2L", "rolling"),
        ("20MB-2L", "create"),
    ]
    assert all(sorted(c.ways) == sorted(pulls.WAYS) for c in cases)
    assert {c.ways[0] for c in cases[:3]} == set(pulls.WAYS)


def test_an_image_spec_splits_its_size_evenly_and_names_bad_input() -> None:
    spec = pulls.image_spec(100, 4)
    assert spec.layer_sizes == (25_000_000,) * 4 and spec.name == "100MB-4L"
    with pytest.raises(ValueError, match="layers"):
        pulls.image_spec(10, 0)


def test_way_flags_set_the_topology_mode_and_the_baseline_has_none() -> None:
    assert pulls.way_flags("isolate")[:2] == ["--topology-mode", "isolate"]
    assert pulls.way_flags("prefer")[-2:] == ["--cross-region", "always"]
    with pytest.raises(ValueError, match="baseline"):
        pulls.way_flags("baseline")


def test_quantiles_interpolate_between_the_nodes_pull_times() -> None:
    times = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert percentile(times, 0.5) == pytest.approx(3.5)
    assert percentile(times, 0.9) == pytest.approx(5.5)
    assert percentile([7.0], 0.9) == 7.0
    assert percentile([], 0.5) != percentile([], 0.5)  # NaN for no values


def line(result: str, nbytes: int, tier: str | None = None, method: str = "GET") -> dict[str, Any]:
    return {"event": "pull", "method": method, "result": result, "bytes": nbytes, "tier": tier}


def test_bytes_by_tier_take_lokals_relays_by_tier_and_upstream_from_the_registry() -> None:
    events = [
        line("local", 5, "same_node"),
        line("peer", 100, "same_zone"),
        line("peer", 40, "other_region"),
        line("miss", 0, "upstream"),
        line("peer", 999, "same_zone", method="HEAD"),
        line("error", 7, "same_region"),
    ]
    tiers = pulls.tier_bytes(events, upstream_bytes=300)
    assert tiers == {
        "same_node": 5,
        "same_zone": 100,
        "same_region": 0,
        "other_region": 40,
        "upstream": 300,
        "error": 7,
    }


@pytest.mark.parametrize(
    ("way", "upstream", "verdict"),
    [("isolate", 200, "pass"), ("isolate", 300, "fail"), ("prefer", 100, "pass"), ("prefer", 200, "fail")],
)
def test_the_rolling_expectation_is_one_image_per_region_in_isolate_and_one_per_cluster_in_prefer(
    way: str, upstream: int, verdict: str
) -> None:
    assert pulls.verdict_rolling(way, upstream, image_bytes=100, regions=2)["verdict"] == verdict


def test_the_baseline_has_no_verdict_only_its_multiple_of_the_image() -> None:
    assert pulls.verdict_rolling("baseline", 600, 100, 2) == {"upstream_x_image": 6.0}


def summary(way: str, scenario: str, image_bytes: int) -> dict[str, Any]:
    tiers = dict.fromkeys((*pulls.TIERS, "error"), 0)
    nodes = [{"seconds": 1.0}, {"seconds": 3.0}]
    image = pulls.image_spec(image_bytes // 1_000_000, 1)
    return pulls.run_summary(way, scenario, image, image_bytes, 2, nodes, image_bytes, 0, 0, tiers, 4.0)


def test_the_table_lists_runs_by_image_then_scenario_then_baseline_isolate_prefer() -> None:
    runs = [
        summary("prefer", "create", 10_000_000),
        summary("baseline", "rolling", 20_000_000),
        summary("isolate", "rolling", 10_000_000),
        summary("baseline", "rolling", 10_000_000),
    ]
    rows = pulls.markdown_table(runs).splitlines()[2:]
    assert [r.split("|")[1:4] for r in rows] == [
        [" 10MB-1L ", " rolling ", " baseline "],
        [" 10MB-1L ", " rolling ", " isolate "],
        [" 10MB-1L ", " create ", " prefer "],
        [" 20MB-1L ", " rolling ", " baseline "],
    ]
    assert "| 2.00 |" in rows[0]  # the median of 1 s and 3 s


def test_relay_throughput_counts_only_whole_blobs_answered_with_200() -> None:
    fetches = [
        {"status": 200, "bytes": 1_000_000, "s": 0.01},
        {"status": 200, "bytes": 500, "s": 0.01},
        {"status": 404, "bytes": 1_000_000, "s": 0.01},
    ]
    assert relay.throughput(fetches, 1_000_000) == pytest.approx(100.0)
    assert relay.throughput(fetches[1:], 1_000_000) != relay.throughput(fetches[1:], 1_000_000)


def test_relay_and_direct_alternate_which_goes_first() -> None:
    assert relay.order_of_round(0) == ("relay", "direct")
    assert relay.order_of_round(1) == ("direct", "relay")


def test_the_miss_server_view_reads_only_this_benchmarks_misses() -> None:
    events = [
        {
            "repo": miss.REPO,
            "result": "miss",
            "ms": 2.0,
            "lookup_ms": 1.5,
            "status": 404,
            "miss": "not_found",
        },
        {
            "repo": miss.REPO,
            "result": "miss",
            "ms": 4.0,
            "lookup_ms": 3.5,
            "status": 404,
            "miss": "not_found",
        },
        {"repo": "other/repo", "result": "miss", "ms": 90.0, "status": 404},
        {"repo": miss.REPO, "result": "local", "ms": 50.0, "status": 200},
    ]
    view = miss.server_view(events)
    assert view["lines"] == 2 and view["statuses"] == [404]
    assert view["server_ms"]["p50"] == pytest.approx(3.0)
    assert view["lookup_ms"]["p99"] == pytest.approx(3.48)


def test_miss_latency_is_reported_in_milliseconds() -> None:
    figures = miss.latency_summary([0.001, 0.002, 0.003])
    assert figures["count"] == 3.0
    assert figures["p50_ms"] == pytest.approx(2.0) and figures["max_ms"] == pytest.approx(3.0)


def test_a_content_store_counts_its_blob_files_and_an_empty_one_counts_zero(tmp_path: Path) -> None:
    assert content_blob_count(tmp_path) == 0
    blobs = tmp_path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    assert content_blob_count(tmp_path) == 0
    (blobs / ("a" * 64)).write_bytes(b"x")
    (blobs / ("b" * 64)).write_bytes(b"y")
    assert content_blob_count(tmp_path) == 2


def test_a_burst_passes_with_one_copy_per_scope_and_pulls_close_to_one_node_alone() -> None:
    runs = [summary("baseline", "alone", 10_000_000), summary("prefer", "create", 10_000_000),
            summary("isolate", "create-region", 10_000_000), summary("isolate", "create", 10_000_000)]
    runs[0]["pull_seconds_median"] = 2.0
    runs[1].update(upstream_bytes_registry_log=10_500_000, pull_seconds_median=2.4, pull_seconds_p90=2.9)
    runs[2].update(upstream_bytes_registry_log=10_000_000, pull_seconds_median=2.8, pull_seconds_p90=2.9)
    runs[3].update(upstream_bytes_registry_log=23_000_000)  # two regions: 2.2x allowed, 2.3x is too much
    pulls.judge_bursts(runs, regions=2)
    prefer, region, isolate = (r["expectation"] for r in runs[1:])
    rolling = summary("baseline", "rolling", 10_000_000)
    rolling["pull_seconds_median"] = 2.4  # six nodes alone: the reference when the run has it
    pulls.judge_bursts([*runs, rolling], regions=2)
    assert runs[1]["expectation"]["median_x_alone"] == 1.0
    assert prefer["verdict"] == "pass" and prefer["median_x_alone"] == 1.2
    assert region["verdict"] == "fail" and region["median_x_alone"] == 1.4  # median over 1.3x alone
    assert isolate["verdict"] == "fail" and "median_x_alone" not in isolate  # two copies: no time figure
    assert pulls.plan([pulls.image_spec(10, 1)], pulls.ALL_SCENARIOS)[1].ways == ("baseline",)


def test_upstream_bytes_are_the_smaller_of_the_registry_log_and_the_link_counter() -> None:
    # containerd 2.1 hangs up after each chunk: the registry logs what it wrote, 5x what left the link.
    assert pulls.upstream_counted(52_800_000, 10_040_000) == 10_040_000
    assert pulls.upstream_counted(10_000_000, 10_040_000) == 10_000_000  # 1.x: the log is exact
    assert pulls.upstream_counted(10_000_000, 0) == 10_000_000  # no link counter: the log

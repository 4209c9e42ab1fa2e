"""The auto rule and its estimators, driven directly: times are numbers, nothing sleeps."""

from __future__ import annotations

import pytest

from sidecar.topology.crossing import (
    MAX_SAMPLE_AGE_S,
    PEER,
    UNMEASURED_REGION_BPS,
    UPSTREAM,
    CrossingDecision,
    LinkEstimate,
    add_sample,
    decide_crossing,
)

MB = 1_000_000


def measured(rate_bps: float, first_byte_s: float, now: float = 0.0, samples: int = 1) -> LinkEstimate:
    est = None
    for _ in range(samples):
        est = add_sample(est, now=now, size=10 * MB, transfer_s=10 * MB / rate_bps, first_byte_s=first_byte_s)
    assert est is not None
    return est


def decide(size: int | None, region: LinkEstimate | None, upstream: LinkEstimate | None, bias: float = 1.0,
           now: float = 1.0) -> CrossingDecision:
    return decide_crossing(size=size, region="eu", region_estimate=region, registry="docker.io",
                           upstream_estimate=upstream, bias=bias, now=now)


def test_first_sample_is_the_estimate_and_counts() -> None:
    est = add_sample(None, now=5.0, size=8 * MB, transfer_s=2.0, first_byte_s=0.05)
    assert est.rate_bps == pytest.approx(4 * MB)
    assert est.first_byte_s == pytest.approx(0.05)
    assert (est.rate_samples, est.latency_samples, est.updated_at) == (1, 1, 5.0)


def test_a_speed_change_shows_within_two_samples() -> None:
    est = measured(50 * MB, 0.02, samples=5)
    for _ in range(2):
        est = add_sample(est, now=1.0, size=10 * MB, transfer_s=10 * MB / (5 * MB))
    # Averaging seconds per byte: two slow transfers already put the estimate near the new speed.
    assert est.rate_bps is not None and est.rate_bps < 7 * MB
    assert est.rate_samples == 7


def test_small_transfers_measure_latency_only() -> None:
    est = add_sample(None, now=0.0, size=4096, transfer_s=0.001, first_byte_s=0.08)
    assert est.rate_bps is None and est.rate_samples == 0
    assert est.first_byte_s == pytest.approx(0.08)


def test_bad_numbers_are_ignored() -> None:
    est = add_sample(None, now=0.0, size=10 * MB, transfer_s=float("nan"), first_byte_s=-1.0)
    assert est == LinkEstimate()


def test_an_old_estimate_is_no_estimate_and_restarts_from_the_next_sample() -> None:
    est = measured(50 * MB, 0.02, now=0.0, samples=3)
    later = MAX_SAMPLE_AGE_S + 1
    assert not est.measured(later)
    fresh = add_sample(est, now=later, size=10 * MB, transfer_s=2.0)
    assert fresh.rate_samples == 1 and fresh.rate_bps == pytest.approx(5 * MB)


def test_faster_region_wins_and_slower_region_loses() -> None:
    up = measured(5 * MB, 0.1)
    fast_region = measured(50 * MB, 0.05)
    d = decide(100 * MB, fast_region, up)
    assert d.choice == PEER
    assert d.over_region_s == pytest.approx(0.05 + 2.0)
    assert d.upstream_s == pytest.approx(0.1 + 20.0)
    assert d.reason.startswith("region faster")
    slow_region = measured(2 * MB, 0.05)
    assert decide(100 * MB, slow_region, up).choice == UPSTREAM


def test_latency_decides_for_small_blobs() -> None:
    up = measured(5 * MB, 0.01)  # close registry, slow link
    far = measured(50 * MB, 0.3)  # far region, fast link
    assert decide(100_000, far, up).choice == UPSTREAM
    assert decide(100 * MB, far, up).choice == PEER


def test_bias_leans_the_choice_both_ways() -> None:
    up = measured(10 * MB, 0.05)
    region = measured(15 * MB, 0.05)  # 1.5x faster
    assert decide(100 * MB, region, up, bias=1.0).choice == PEER
    assert decide(100 * MB, region, up, bias=2.0).choice == UPSTREAM
    slower = measured(7 * MB, 0.05)
    assert decide(100 * MB, slower, up, bias=1.0).choice == UPSTREAM
    assert decide(100 * MB, slower, up, bias=0.5).choice == PEER


def test_a_tie_goes_upstream() -> None:
    same = measured(10 * MB, 0.05)
    assert decide(100 * MB, same, same).choice == UPSTREAM


def test_no_upstream_sample_goes_upstream_whatever_the_region() -> None:
    d = decide(100 * MB, measured(500 * MB, 0.01), None)
    assert d.choice == UPSTREAM and d.upstream_s is None
    assert "no recent upstream sample for docker.io" in d.reason
    stale = measured(1 * MB, 0.05, now=0.0)
    assert decide(100 * MB, None, stale, now=MAX_SAMPLE_AGE_S + 5).choice == UPSTREAM


def test_unmeasured_region_is_assumed_at_the_cautious_rate() -> None:
    slower_than_guess = measured(UNMEASURED_REGION_BPS / 4, 0.05)
    faster_than_guess = measured(UNMEASURED_REGION_BPS * 4, 0.05)
    d = decide(100 * MB, None, slower_than_guess)
    assert d.choice == PEER and "unmeasured" in d.reason
    assert decide(100 * MB, None, faster_than_guess).choice == UPSTREAM


def test_unknown_size_assumes_a_typical_layer_so_latency_alone_does_not_decide() -> None:
    up = measured(5 * MB, 0.01)
    far = measured(50 * MB, 0.3)
    d = decide(None, far, up)
    assert d.choice == PEER and "size unknown" in d.reason


def test_decision_fields_carry_both_estimates_the_choice_and_the_reason() -> None:
    fields = decide(100 * MB, measured(50 * MB, 0.05), measured(5 * MB, 0.1)).fields()
    assert set(fields) == {
        "auto_choice", "auto_region", "auto_over_region_s", "auto_upstream_s", "auto_reason"
    }
    assert fields["auto_choice"] == "peer" and fields["auto_region"] == "eu"


def test_the_cross_region_cap_bounds_what_a_region_can_give() -> None:
    up = measured(10 * MB, 0.05)
    region = measured(50 * MB, 0.05)
    assert decide(100 * MB, region, up).choice == PEER
    capped = decide_crossing(size=100 * MB, region="eu", region_estimate=region, registry="docker.io",
                             upstream_estimate=up, bias=1.0, now=1.0, region_rate_cap=5 * MB)
    assert capped.choice == UPSTREAM and "capped to 5.0 MB/s" in capped.reason
    assert capped.over_region_s == pytest.approx(0.05 + 20.0)

"""`--cross-region auto`: learn how fast each way is, and for one blob pick the cheaper way. Pure.

Rules:
- No I/O, no clock: every time (`now`, durations) is a number the caller passes in, from one monotonic clock.
- An estimate is learned from transfers only: upstream's from containerd's own fetches after our 404
  (lokal never talks to upstream), another region's from lokal's relays from that region.
- The estimate of a way keeps seconds per byte and first-byte seconds as decaying averages, each with its
  sample count: a new sample weighs 1/n for the first few, then `RECENT_WEIGHT`, so a change of link
  speed shows within two or three transfers. Seconds per byte (not bytes per second) are averaged, since
  a transfer's time is size x seconds-per-byte: one slow transfer pulls the average as hard as it costs.
- A sample older than `MAX_SAMPLE_AGE_S` is no sample: the way is measured again.

Theory of operation (`decide_crossing`, used in prefer mode with auto when the best provider is in another
region):
- over-region time = first-byte latency + size / rate of that region; upstream time likewise for the
  blob's registry. The peer wins when `bias` x over-region time < upstream time. `bias` is the operator's
  lean (`--cross-region-bias`): above 1 leans to upstream (inter-region bytes cost money), below 1 to the
  peers (a rate-limited or far registry).
- No upstream sample yet for the registry: upstream. That is what containerd did without lokal, so it is
  never worse than no mirror, it spends no inter-region bytes on a guess, and the fetch itself gives the
  sample the next decision needs.
- Upstream measured, the region not yet: the region is assumed to move `UNMEASURED_REGION_BPS` after
  `UNMEASURED_REGION_FIRST_BYTE_S`, a cautious single TCP stream across regions. A region faster than
  that proves it with its first relay; one that is slower is never tried while upstream beats the guess.
- Unknown size: `ASSUMED_SIZE` (a typical layer), so latency alone never decides for a big blob.
- A cross-region cap bounds the region's rate: one more relay gets at most its share of the cap
  (`region_rate_cap`, from the caller), so a tight cap sends big blobs upstream rather than slowly over it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

MIN_RATE_SAMPLE_BYTES = 256 * 1024  # below this a transfer measures latency, not throughput
RECENT_WEIGHT = 0.5
MAX_SAMPLE_AGE_S = 600.0
UNMEASURED_REGION_BPS = 12.5e6  # 100 Mbit/s
UNMEASURED_REGION_FIRST_BYTE_S = 0.1
ASSUMED_SIZE = 32 * 1024 * 1024

PEER = "peer"
UPSTREAM = "upstream"


@dataclass(frozen=True, slots=True)
class LinkEstimate:
    """What this node learned about one way of getting bytes (a region, or a registry upstream)."""

    seconds_per_byte: float | None = None
    rate_samples: int = 0
    first_byte_s: float | None = None
    latency_samples: int = 0
    updated_at: float = -math.inf  # when the last sample of either kind came in

    @property
    def rate_bps(self) -> float | None:
        spb = self.seconds_per_byte
        return None if spb is None or spb <= 0 else 1.0 / spb

    def measured(self, now: float, max_age: float = MAX_SAMPLE_AGE_S) -> bool:
        """Whether the rate is known and recent enough to decide on."""
        return self.rate_samples > 0 and now - self.updated_at <= max_age

    def seconds_for(self, size: int, default_first_byte_s: float = 0.0) -> float:
        first = self.first_byte_s if self.first_byte_s is not None else default_first_byte_s
        spb = self.seconds_per_byte or 0.0
        return first + size * spb


def _weight(samples_before: int) -> float:
    return max(1.0 / (samples_before + 1), RECENT_WEIGHT)


def _blend(previous: float | None, sample: float, samples_before: int) -> float:
    if previous is None or samples_before == 0:
        return sample
    return previous + _weight(samples_before) * (sample - previous)


def add_sample(
    estimate: LinkEstimate | None,
    *,
    now: float,
    size: int = 0,
    transfer_s: float | None = None,
    first_byte_s: float | None = None,
) -> LinkEstimate:
    """The estimate after one transfer: `size` bytes in `transfer_s` (body time, without the first byte's
    wait), and the wait for the first byte. Either part may be missing; bad numbers are ignored."""
    est = estimate or LinkEstimate()
    changed = False
    timed = transfer_s is not None and 0 < transfer_s < math.inf
    if timed and transfer_s is not None and size >= MIN_RATE_SAMPLE_BYTES:
        stale = not est.measured(now)
        before = 0 if stale else est.rate_samples
        est = replace(est, seconds_per_byte=_blend(est.seconds_per_byte, transfer_s / size, before),
                      rate_samples=before + 1)
        changed = True
    if first_byte_s is not None and 0 <= first_byte_s < 3600:
        stale = now - est.updated_at > MAX_SAMPLE_AGE_S
        before = 0 if stale else est.latency_samples
        est = replace(est, first_byte_s=_blend(est.first_byte_s, first_byte_s, before),
                      latency_samples=before + 1)
        changed = True
    return replace(est, updated_at=now) if changed else est


@dataclass(frozen=True, slots=True)
class CrossingDecision:
    choice: str  # PEER or UPSTREAM
    region: str
    size: int
    over_region_s: float | None
    upstream_s: float | None
    reason: str

    def fields(self) -> dict[str, object]:
        """The decision as the pull line and `lokal where` show it."""
        return {
            "auto_choice": self.choice,
            "auto_region": self.region,
            "auto_over_region_s": None if self.over_region_s is None else round(self.over_region_s, 3),
            "auto_upstream_s": None if self.upstream_s is None else round(self.upstream_s, 3),
            "auto_reason": self.reason,
        }


def decide_crossing(
    *,
    size: int | None,
    region: str,
    region_estimate: LinkEstimate | None,
    registry: str,
    upstream_estimate: LinkEstimate | None,
    bias: float,
    now: float,
    region_rate_cap: float | None = None,
) -> CrossingDecision:
    """Fetch this blob from `region` (PEER) or let containerd go upstream (UPSTREAM), and why.
    `region_rate_cap`: the share of the cross-region cap one more relay would get (bytes/s), if capped."""
    known_size = size if size is not None and size >= 0 else ASSUMED_SIZE
    size_text = _mb(known_size) + ("" if size is not None and size >= 0 else " (size unknown: assumed)")
    region_est = region_estimate if region_estimate is not None and region_estimate.measured(now) else None
    # A stale rate is no rate, but a known first-byte latency is still the best guess of it.
    latency = region_estimate.first_byte_s if region_estimate is not None else None
    first = latency if latency is not None else UNMEASURED_REGION_FIRST_BYTE_S
    if region_est is None:
        rate = UNMEASURED_REGION_BPS
        region_text = f"{region} unmeasured (assumed {UNMEASURED_REGION_BPS / 1e6:.1f} MB/s)"
    else:
        rate = region_est.rate_bps or UNMEASURED_REGION_BPS
        region_text = f"{region} {_rate(region_est)}"
    if region_rate_cap is not None and 0 < region_rate_cap < rate:
        rate = region_rate_cap  # the cross-region cap, shared with the relays already under it
        region_text += f" capped to {rate / 1e6:.1f} MB/s"
    over = first + known_size / rate
    up_est = upstream_estimate if upstream_estimate is not None and upstream_estimate.measured(now) else None
    if up_est is None:
        return CrossingDecision(
            UPSTREAM, region, known_size, over, None,
            f"no recent upstream sample for {registry}: upstream measures it ({size_text})",
        )
    upstream = up_est.seconds_for(known_size)
    weighed = over * bias
    lean = "" if bias == 1 else f" x bias {bias:g} = {weighed:.2f}s"
    comparison = (f"{size_text}: over {region_text} {over:.2f}s{lean} vs upstream {registry} "
                  f"{_rate(up_est)} {upstream:.2f}s")
    if weighed < upstream:
        return CrossingDecision(PEER, region, known_size, over, upstream, f"region faster; {comparison}")
    return CrossingDecision(UPSTREAM, region, known_size, over, upstream, f"upstream faster; {comparison}")


def _rate(est: LinkEstimate) -> str:
    rate = est.rate_bps
    text = "?" if rate is None else f"{rate / 1e6:.1f} MB/s"
    if est.first_byte_s is not None:
        text += f" +{est.first_byte_s * 1000:.0f}ms"
    return f"({text}, {est.rate_samples} samples)"


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"

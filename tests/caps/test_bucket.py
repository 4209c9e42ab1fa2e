"""The token bucket and the pacer, with the clock passed in: the 1 s bound, debt sharing, the stall guard."""

from __future__ import annotations

import pytest

from sidecar.caps.bucket import TokenBucket
from sidecar.caps.pacer import MAX_WAIT_S, Cap, CapExceeded, paced_response
from sidecar.hosts.settings import SettingError
from sidecar.http.messages import Response, StreamBody
from sidecar.settings import parse_rate


def released_per_window(rate: float, chunk: int, streams: int, seconds: float) -> list[float]:
    """Simulate `streams` writers sending `chunk`s as soon as the bucket lets them; bytes per 1 s window."""
    bucket = TokenBucket(rate)
    ready = [0.0] * streams
    sends: list[tuple[float, int]] = []
    while True:
        i = min(range(streams), key=lambda s: ready[s])
        now = ready[i]
        if now > seconds:
            break
        delay = bucket.reserve(chunk, now)
        sends.append((now + delay, chunk))
        ready[i] = now + delay
    windows = []
    start = 0.0
    while start + 1.0 <= seconds:
        windows.append(sum(size for at, size in sends if start <= at < start + 1.0))
        start += 0.05
    return windows


@pytest.mark.parametrize("rate", [1e6, 12.5e6, 200e6])
@pytest.mark.parametrize("streams", [1, 8])
def test_any_one_second_window_stays_within_ten_percent(rate: float, streams: int) -> None:
    bucket = TokenBucket(rate)
    windows = released_per_window(rate, bucket.chunk_limit, streams, 10.0)
    assert max(windows) <= 1.10 * rate
    assert min(windows[2:]) >= 0.9 * rate  # and the cap is used, not merely respected


def test_reservations_share_the_rate_in_order() -> None:
    bucket = TokenBucket(1000.0, burst=100.0)
    assert bucket.reserve(100, 0.0) == 0.0
    assert bucket.reserve(500, 0.0) == pytest.approx(0.5)
    assert bucket.reserve(500, 0.0) == pytest.approx(1.0)  # waits for the debt before it too
    assert bucket.backlog(0.0) == pytest.approx(1.0)
    assert bucket.backlog(1.0) == 0.0


def test_refill_never_exceeds_the_burst() -> None:
    bucket = TokenBucket(1000.0, burst=100.0)
    bucket.reserve(100, 0.0)
    assert bucket.reserve(150, 100.0) == pytest.approx(0.05)


def test_bad_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_pace_counts_throttled_time_and_refuses_a_long_stall() -> None:
    clock = FakeClock()
    cap = Cap("to_peers", TokenBucket(1e6), clock=clock)
    await cap.pace(int(cap.bucket.burst))  # the whole burst: no wait
    assert cap.throttled_s == 0.0
    await cap.pace(10_000)
    assert cap.throttled_s > 0
    with pytest.raises(CapExceeded, match="to_peers"):
        await cap.pace(int(1e6 * (MAX_WAIT_S + 1)))
    assert cap.refused == 1
    assert cap.bucket.backlog(clock.now) < 0.1  # the refused bytes were given back


async def test_admission_refuses_while_the_backlog_is_long() -> None:
    clock = FakeClock()
    cap = Cap("from_other_regions", TokenBucket(1e6), clock=clock)
    assert cap.admits()
    cap.bucket.reserve(3_000_000, clock.now)
    assert not cap.admits() and cap.refused == 1
    clock.now = 3.0
    assert cap.admits()


async def test_paced_body_keeps_every_byte_in_order_in_small_chunks() -> None:
    cap = Cap("to_peers", TokenBucket(100e6))
    data = bytes(range(256)) * 40_000

    async def chunks():  # type: ignore[no-untyped-def]
        yield data[:5_000_000]
        yield data[5_000_000:]

    response = paced_response(Response(200, [], StreamBody(chunks(), len(data))), cap)
    assert isinstance(response.body, StreamBody)
    got = [c async for c in response.body.chunks]
    assert b"".join(got) == data
    assert max(len(c) for c in got) <= cap.chunk_limit
    assert cap.bytes_moved == len(data)


@pytest.mark.parametrize(("text", "rate"), [
    ("50MB", 50e6), ("64MiB", 64 * 1024**2), ("400mbit", 50e6), ("1000", 1000.0), ("2.5gb/s", 2.5e9),
    ("", None), ("0", None),
])
def test_cap_settings_parse_rates(text: str, rate: float | None) -> None:
    assert parse_rate(text, "--cap-to-peers") == rate


@pytest.mark.parametrize("text", ["fast", "-5MB", "10parsecs", "nan"])
def test_a_bad_cap_setting_names_the_setting(text: str) -> None:
    with pytest.raises(SettingError, match="--cap-to-peers"):
        parse_rate(text, "--cap-to-peers")

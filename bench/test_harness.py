"""The benchmark harness's pure logic: reading wrk, the Lua script, server order, ratios and verdicts.

Run: .venv/bin/pytest bench/test_harness.py   (not part of the main suite: bench/ is outside testpaths)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    check_target,
    median,
    nginx_config,
    parse_wrk,
    per_round_ratios,
    ratio,
    rotated,
    rounded,
    wrk_cycle_script,
)

WRK_SMALL = """Running 12s test @ http://127.0.0.1:34467/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    49.26ms   32.69ms 179.33ms   69.87%
    Req/Sec   684.51    367.62     2.11k    72.80%
  Latency Distribution
     50%   37.05ms
     75%   72.03ms
     90%   99.17ms
     99%  134.91ms
  16376 requests in 12.08s, 1.10GB read
  Non-2xx or 3xx responses: 3
Requests/sec:   1355.54
Transfer/sec:     93.12MB
"""

WRK_LARGE = """Running 4s test @ http://127.0.0.1:1/big
  1 threads and 1 connections
  Latency Distribution
     50%  250.00us
     75%  300.00us
     90%  400.00us
     99%    1.20s
  5 requests in 4.01s, 5.50GB read
  Socket errors: connect 0, read 0, write 0, timeout 1
Requests/sec:      1.25
"""


def test_parse_wrk_reads_counts_time_bytes_p99_and_errors() -> None:
    result = parse_wrk(WRK_SMALL)
    assert result.requests == 16376
    assert result.seconds == pytest.approx(12.08)
    assert result.bytes == pytest.approx(1.10 * (1 << 30))
    assert result.p99_ms == pytest.approx(134.91)
    assert result.non_2xx == 3
    assert result.socket_errors == ""


def test_parse_wrk_converts_seconds_latency_and_keeps_socket_errors() -> None:
    result = parse_wrk(WRK_LARGE)
    assert result.p99_ms == pytest.approx(1200.0)
    assert result.socket_errors == "connect 0, read 0, write 0, timeout 1"


def test_parse_wrk_rejects_text_that_is_not_a_wrk_report() -> None:
    with pytest.raises(ValueError, match="not a wrk report"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_wrk_script_cycles_over_every_path_in_lua_order() -> None:
    script = wrk_cycle_script(["/v2/a/blobs/sha256:1?ns=r.test", "/v2/a/blobs/sha256:2"])
    assert '"/v2/a/blobs/sha256:1?ns=r.test",' in script
    assert "paths[(n % #paths) + 1]" in script


@pytest.mark.parametrize("path", ["no-slash", '/a"b', "/a\nb", "/a\\b"])
def test_wrk_script_refuses_paths_that_could_break_the_lua_string(path: str) -> None:
    with pytest.raises(ValueError):
        wrk_cycle_script([path])


def test_wrk_script_needs_a_path() -> None:
    with pytest.raises(ValueError):
        wrk_cycle_script([])


def test_nginx_config_maps_registry_blob_paths_to_the_blob_directory() -> None:
    text = nginx_config(Path("/p"), 8080, Path("/root/blobs/sha256"))
    assert "listen 127.0.0.1:8080;" in text
    assert "sendfile on;" in text and "tcp_nopush on;" in text and "worker_processes 1;" in text
    assert 'location ~ "^/v2/.+/blobs/sha256:([0-9a-f]{64})$"' in text
    assert "alias /root/blobs/sha256/$1;" in text


def test_every_server_takes_every_position_once_in_as_many_rounds() -> None:
    names = ["a", "b", "c"]
    orders = [rotated(names, i) for i in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    for position in range(3):
        assert sorted(order[position] for order in orders) == names


def test_ratio_is_nan_when_a_figure_is_missing_or_the_reference_is_zero() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))


def test_median_ignores_missing_figures() -> None:
    assert median([1.0, math.nan, 3.0, 2.0]) == 2.0
    assert math.isnan(median([math.nan]))


def test_per_round_ratios_divide_subject_by_reference_within_each_round() -> None:
    rounds = [
        {"lokal": {"x": 2.0}, "nginx": {"x": 4.0}},
        {"lokal": {"x": 9.0}, "nginx": {"x": 3.0}},
    ]
    assert per_round_ratios(rounds, "lokal", "nginx", ["x"]) == [{"x": 0.5}, {"x": 3.0}]


def test_check_target_gives_pass_fail_or_unknown() -> None:
    assert check_target(0.96, at_least=0.95) == "pass"
    assert check_target(0.94, at_least=0.95) == "fail"
    assert check_target(1.31, at_most=1.3) == "fail"
    assert check_target(math.nan, at_most=1.3) == "unknown"


def test_rounded_documents_are_valid_json_without_nan() -> None:
    document = rounded({"a": [1.234567, math.nan], "b": {"c": 2}})
    assert document == {"a": [1.2346, None], "b": {"c": 2}}
    json.dumps(document, allow_nan=False)

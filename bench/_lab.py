"""Shared parts of the lab benchmarks (`bench/relay.py`, `bench/miss.py`, `bench/pulls.py`): pure
statistics, and the shell that runs `_nsclient.py` inside a node's namespace. What every benchmark
shares (`rounded`, `terminate`, `cpu_seconds`) is in `_harness.py`.

Rules:
- Requests are only ever sent from inside a lab namespace (lab.md's network safety rules): the client
  runs under `ip netns exec` through `Lab.run`, bounded by a subprocess timeout and its own deadline.
- Pure functions take plain numbers.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CLIENT = Path(__file__).with_name("_nsclient.py")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between order statistics; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def run_client(cluster: Any, node: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one `_nsclient.py` op inside `node`'s namespace; its JSON answer."""
    spec = {**spec, "deadline_s": min(float(spec.get("deadline_s", timeout)), timeout)}
    proc = cluster.lab.run(node, [sys.executable, str(CLIENT), json.dumps(spec)], timeout=timeout + 15)
    answer: dict[str, Any] = json.loads(proc.stdout)
    if "error" in answer:
        raise RuntimeError(f"client in {node}: {answer['error']}")
    return answer

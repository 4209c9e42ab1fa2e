"""Shared parts of the lab benchmarks (`bench/relay.py`, `bench/miss.py`): pure statistics, and the shell
that runs `_nsclient.py` inside a node's namespace.

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
from types import FrameType
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid`, from /proc/PID/stat."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: unwind through the LabCluster context manager, so the lab is torn down."""
    raise KeyboardInterrupt(f"signal {signum}")


def rounded(document: object, digits: int = 4) -> object:
    """A copy of a JSON-like document with floats rounded and NaN as None (valid JSON)."""
    if isinstance(document, float):
        return None if math.isnan(document) else round(document, digits)
    if isinstance(document, dict):
        return {k: rounded(v, digits) for k, v in document.items()}
    if isinstance(document, list | tuple):
        return [rounded(v, digits) for v in document]
    return document

"""Under CI (`CI` set), a test that needs root and the real parts fails when they are missing instead of
skipping: CI runs as root, and a green run that skipped them would prove little (issue 16, part 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NEEDS_ROOT = "tests/registry/test_end_to_end.py::test_a_range_request_after_a_cut_off_body_resumes_with_206"


def run_without_the_tools(tmp_path: Path, ci: str | None) -> str:
    """The outcome line of one real-containerd test on a PATH that has none of containerd's tools."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(tmp_path)  # no containerd, docker-registry or skopeo here
    if ci is not None:
        env["CI"] = ci
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
         NEEDS_ROOT], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("ci", [None, "true"])
def test_a_missing_real_part_skips_on_a_laptop_and_fails_under_ci(tmp_path: Path, ci: str | None) -> None:
    summary = run_without_the_tools(tmp_path, ci)  # e.g. "3 skipped in 2.1s", "3 errors in 2.8s"
    assert "passed" not in summary
    if ci is None:
        assert "skipped" in summary and "error" not in summary and "failed" not in summary
    else:  # a failure in the test or in its fixture: either way the run is red
        assert "skipped" not in summary and ("error" in summary or "failed" in summary)

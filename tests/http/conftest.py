"""Fixtures for the HTTP layer tests: a temp blob, the sample handler, and a running server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_support import FILE_SIZE, RunningServer, SampleHandler, run_server

from sidecar.http import ServerLimits


@pytest.fixture
def test_file(tmp_path: Path) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(FILE_SIZE))
    return path


@pytest.fixture
def handler(test_file: Path) -> SampleHandler:
    return SampleHandler(test_file)


@pytest.fixture
def server(handler: SampleHandler) -> Iterator[RunningServer]:
    limits = ServerLimits(header_timeout=2.0, idle_timeout=5.0, drain_timeout=2.0)
    with run_server(handler, limits) as running:
        yield running

"""The upstream watcher against an ingest directory laid out as containerd 1.6 writes it, grown by a task
that plays containerd: the rate and first byte it reports, and what it refuses to report."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from sidecar.containerd.upstream_watch import UpstreamSample, UpstreamWatcher, ingest_size
from sidecar.oci import parse_digest

DIGEST = parse_digest("sha256:" + "ab" * 32)
CHUNK = 256 * 1024


def make_ingest(root: Path, total: int) -> Path:
    directory = root / "ingest" / "1f2e3d"
    directory.mkdir(parents=True)
    (directory / "ref").write_text(f"k8s.io/1/layer-{DIGEST}")
    (directory / "total").write_text(str(total))
    (directory / "data").write_bytes(b"")
    return directory


async def grow(
    directory: Path, root: Path, chunks: int, every: float, *, commit: bool, wait: float
) -> None:
    await anyio.sleep(wait)  # containerd connects to upstream: the first byte's latency
    with open(directory / "data", "ab") as data:  # noqa: ASYNC230 (tiny local writes, as containerd's)
        for _ in range(chunks):
            data.write(b"x" * CHUNK)
            data.flush()
            await anyio.sleep(every)
    if commit:
        blobs = root / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        os.rename(directory / "data", blobs / DIGEST.hex)
    else:
        os.unlink(directory / "data")  # aborted


def test_the_size_containerd_expects_comes_from_its_ingest(tmp_path: Path) -> None:
    make_ingest(tmp_path, 12345)

    class Store:
        content_root = str(tmp_path)
        namespace = "k8s.io"

    assert ingest_size(Store(), DIGEST) == 12345
    assert ingest_size(Store(), parse_digest("sha256:" + "cd" * 32)) is None
    Store.namespace = "default"  # another namespace's ingest is not ours
    assert ingest_size(Store(), DIGEST) is None
    assert ingest_size(object(), DIGEST) is None


@pytest.mark.parametrize("commit", [True, False])
async def test_watch_reports_first_byte_and_rate_of_what_it_saw(tmp_path: Path, commit: bool) -> None:
    directory = make_ingest(tmp_path, 20 * CHUNK)
    samples: list[UpstreamSample] = []
    watcher = UpstreamWatcher(lambda: str(tmp_path), "k8s.io", samples.append)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher.run)
        watcher.missed("lab:5000", DIGEST)
        await grow(directory, tmp_path, 20, 0.05, commit=commit, wait=0.3)
        with anyio.fail_after(5):
            while watcher.active or (commit and not samples):
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    if not commit:
        # An aborted ingest still showed its growth: a rate from what was seen, never "a whole blob".
        assert len(samples) <= 1
        if not samples:
            return
    sample = samples[0]
    assert sample.registry == "lab:5000"
    assert sample.first_byte_s is not None and 0.25 <= sample.first_byte_s <= 0.6
    assert sample.transfer_s is not None
    rate = sample.size / sample.transfer_s
    assert 0.5 * CHUNK / 0.05 <= rate <= 2.0 * CHUNK / 0.05  # ~5 MB/s written, within polling error


async def test_no_ingest_no_sample(tmp_path: Path) -> None:
    samples: list[UpstreamSample] = []
    watcher = UpstreamWatcher(lambda: str(tmp_path), "k8s.io", samples.append)
    assert await watcher.watch("r", DIGEST, answered_at=watcher.clock() - 10) is None
    assert samples == []

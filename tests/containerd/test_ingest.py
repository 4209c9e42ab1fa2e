"""The ingest locator and follower on a real filesystem, with a writer task that behaves as containerd's
content writer does (append, rename `data` to the blob on commit, or stop / remove the directory). No
processes; the same facts on a real containerd are checked in tests/lab/test_share_while_downloading.py."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import anyio
import pytest

from sidecar.containerd.ingest import (
    GrowingBlob,
    IngestEnded,
    IngestProbe,
    find_ingest,
    parse_timestamp,
    progress,
    ref_matches,
    wait_for_ingest,
)
from sidecar.http.messages import Response
from sidecar.oci import parse_digest
from sidecar.registry.growing import GrowingSource
from sidecar.registry.pulls import Miss, PullRecord
from sidecar.security import Gate

pytestmark = pytest.mark.anyio

DATA = os.urandom(300_000)
DIGEST = parse_digest("sha256:" + hashlib.sha256(DATA).hexdigest())


def make_ingest(root: Path, ref: str, total: int, name: str = "a1") -> Path:
    directory = root / "ingest" / name
    directory.mkdir(parents=True)
    (directory / "ref").write_text(ref)
    (directory / "total").write_text(str(total))
    (directory / "startedat").write_text("2026-12-06T15:00:00.123456789Z")
    (directory / "updatedat").write_text("2026-12-06T15:00:01.5Z")
    (directory / "data").write_bytes(b"")
    return directory


def blob_path(root: Path) -> Path:
    return root / "blobs" / "sha256" / DIGEST.hex


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as out:
        out.write(data)


async def write_slowly(
    directory: Path, data: bytes, *, upto: int, commit_to: Path | None, step: int = 40_000
) -> None:
    for start in range(0, upto, step):
        append(directory / "data", data[start : min(start + step, upto)])
        await anyio.sleep(0.01)
    if commit_to is not None:
        commit_to.parent.mkdir(parents=True, exist_ok=True)
        os.rename(directory / "data", commit_to)
        shutil.rmtree(directory)


def test_refs_and_timestamps() -> None:
    assert ref_matches(f"k8s.io/1/layer-{DIGEST}", DIGEST, "k8s.io")
    assert ref_matches(f"k8s.io/17/config-{DIGEST}", str(DIGEST), "k8s.io")
    assert not ref_matches(f"moby/1/layer-{DIGEST}", DIGEST, "k8s.io")  # another namespace
    assert not ref_matches(f"k8s.io/1/layer-{DIGEST}x", DIGEST, "k8s.io")
    assert not ref_matches(f"k8s.io/1/{DIGEST}", DIGEST, "k8s.io")
    assert parse_timestamp("2026-12-06T15:00:00.123456789Z") == pytest.approx(1796569200.123456)
    assert parse_timestamp("not a time") is None


def test_find_the_namespaces_ingest_and_its_progress(tmp_path: Path) -> None:
    make_ingest(tmp_path, f"moby/1/layer-{DIGEST}", len(DATA), "other")
    assert find_ingest(tmp_path, DIGEST, "k8s.io") is None
    directory = make_ingest(tmp_path, f"k8s.io/3/layer-{DIGEST}", len(DATA))
    (directory / "data").write_bytes(DATA[:1000])
    found = find_ingest(tmp_path, DIGEST, "k8s.io")
    assert found is not None and found.directory == directory and found.total == len(DATA)
    state = progress(found)
    assert state is not None and state.offset == 1000 and state.total == len(DATA)
    assert state.started_at is not None and state.updated_at == pytest.approx(state.started_at + 1.376544)
    shutil.rmtree(directory)
    assert progress(found) is None
    assert find_ingest(tmp_path / "nothing", DIGEST, "k8s.io") is None


async def test_a_follower_reads_the_growing_file_through_the_commit(tmp_path: Path) -> None:
    directory = make_ingest(tmp_path, f"k8s.io/1/layer-{DIGEST}", len(DATA))
    found = await wait_for_ingest(tmp_path, DIGEST, "k8s.io", appear=1.0)
    assert found is not None
    blob = GrowingBlob.open(found, blob_path(tmp_path))
    assert blob is not None
    received = bytearray()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: write_slowly(directory, DATA, upto=len(DATA), commit_to=blob_path(tmp_path)))
        async for chunk in blob.follow(0, len(DATA), stall=2.0):
            assert len(received) + len(chunk) <= len(DATA)
            received += chunk
            if len(received) == len(DATA):
                assert blob.committed()  # the last byte came only after the rename
    blob.close()
    assert bytes(received) == DATA


async def test_a_range_of_a_growing_file_waits_for_its_start(tmp_path: Path) -> None:
    directory = make_ingest(tmp_path, f"k8s.io/1/layer-{DIGEST}", len(DATA))
    blob = GrowingBlob.open(find_ingest(tmp_path, DIGEST, "k8s.io"), blob_path(tmp_path))  # type: ignore[arg-type]
    assert blob is not None
    received = bytearray()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: write_slowly(directory, DATA, upto=len(DATA), commit_to=blob_path(tmp_path)))
        async for chunk in blob.follow(200_000, 50_000):
            received += chunk
    blob.close()
    assert bytes(received) == DATA[200_000:250_000]


@pytest.mark.parametrize("how", ["stalled", "removed"])
async def test_an_abandoned_ingest_ends_short_within_its_bound(tmp_path: Path, how: str) -> None:
    directory = make_ingest(tmp_path, f"k8s.io/1/layer-{DIGEST}", len(DATA))
    blob = GrowingBlob.open(find_ingest(tmp_path, DIGEST, "k8s.io"), blob_path(tmp_path))  # type: ignore[arg-type]
    assert blob is not None
    received = bytearray()
    started = anyio.current_time()
    # Everything is written, but never committed: the whole body must never come out.
    await write_slowly(directory, DATA, upto=len(DATA), commit_to=None)
    if how == "removed":
        shutil.rmtree(directory)
    with pytest.raises(IngestEnded):
        async for chunk in blob.follow(0, len(DATA), stall=0.5):
            received += chunk
    blob.close()
    assert len(received) == len(DATA) - 1
    assert anyio.current_time() - started < 3.0


async def test_a_truncated_and_rewritten_ingest_still_yields_the_right_bytes(tmp_path: Path) -> None:
    directory = make_ingest(tmp_path, f"k8s.io/1/layer-{DIGEST}", len(DATA))
    (directory / "data").write_bytes(DATA[:120_000])
    blob = GrowingBlob.open(find_ingest(tmp_path, DIGEST, "k8s.io"), blob_path(tmp_path))  # type: ignore[arg-type]
    assert blob is not None

    async def restart() -> None:
        await anyio.sleep(0.05)
        os.truncate(directory / "data", 0)  # containerd's Truncate(0) on a copy that could not seek
        await write_slowly(directory, DATA, upto=len(DATA), commit_to=blob_path(tmp_path))

    received = bytearray()
    async with anyio.create_task_group() as tg:
        tg.start_soon(restart)
        async for chunk in blob.follow(0, len(DATA), stall=2.0):
            received += chunk
    blob.close()
    assert bytes(received) == DATA


async def test_no_ingest_appears(tmp_path: Path) -> None:
    started = anyio.current_time()
    assert await wait_for_ingest(tmp_path, DIGEST, "k8s.io", appear=0.2) is None
    assert 0.2 <= anyio.current_time() - started < 1.0


async def test_a_follower_past_the_growing_limit_gets_a_503_counted_as_a_limit(tmp_path: Path) -> None:
    make_ingest(tmp_path, f"k8s.io/1/layer-{DIGEST}", len(DATA))

    async def held(digest: object) -> bool:
        return True

    source = GrowingSource(lambda: str(tmp_path), "k8s.io", held, Gate("follower_uploads", 0), appear=0.2)
    record = PullRecord("blob", "GET", "app", "registry.example", DIGEST.short, "10.0.0.2")
    answer = await source.serve(DIGEST, None, record)
    assert isinstance(answer, Response) and answer.status == 503
    assert record.miss is Miss.UPLOAD_LIMIT and record.miss.is_limit


def test_the_probe_scans_the_ingests_once_per_interval(tmp_path: Path) -> None:
    now = [0.0]
    probe = IngestProbe(lambda: str(tmp_path), "k8s.io", lambda key: False, rescan=0.5, clock=lambda: now[0])
    assert probe.progress(str(DIGEST)) is None
    directory = make_ingest(tmp_path, f"k8s.io/1/layer-{DIGEST}", len(DATA))
    (directory / "data").write_bytes(DATA[:10])
    assert probe.progress(str(DIGEST)) is None  # the scan is 0 s old
    now[0] = 0.6
    state = probe.progress(str(DIGEST))
    assert state is not None and state.offset == 10
    (directory / "data").write_bytes(DATA[:20])
    assert probe.progress(str(DIGEST)).offset == 20  # type: ignore[union-attr]  # sizes are always fresh
    assert not probe.committed(str(DIGEST))

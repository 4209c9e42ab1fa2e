"""Benchmark: reading one large blob out of a private containerd, three ways, interleaved.

Setup: an image with one large layer (512 MiB; 128 MiB with --quick) is pushed to a docker-registry and
pulled through CRI into a private containerd, as a node would hold it. Then, in rounds (order rotated):
- `grpc_read`: containerd's content Read stream (`sidecar.containerd.client.ContainerdClient.read`, the
  fallback path of lokal's store);
- `file_read`: a plain read of `<content root>/blobs/sha256/<hex>` into one reused 1 MiB buffer;
- `sendfile_devnull`: `os.sendfile` from the file to /dev/null (the kernel's page-cache side alone);
- `sendfile_tcp`: `os.sendfile` from the file to a loopback TCP socket, drained by a thread of this
  process (what lokal's main path does, with the client's copy included in the CPU figure).
Each way reads the whole blob at least once per round and repeats until `--min-seconds` (bounded by a
pass count). The bytes of the gRPC stream and of the file are checked against the digest first.

CPU: this process (all threads) and containerd's (from /proc/PID/stat), per GB read.
Output: JSON to stdout and `bench/results/store_read.json` (`store_read-quick.json` with --quick), with
every round, the per-round ratios to `grpc_read`, and their medians.

    .venv/bin/python bench/store_read.py            # 512 MiB, 5 rounds (~1 min)
    .venv/bin/python bench/store_read.py --quick    # 128 MiB, 2 rounds (~30 s)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    ROOT,
    MiB,
    StoreLab,
    cpu_seconds,
    load_average,
    median,
    prepare_store,
    progress,
    ratio,
    rotated,
    rounded,
    source_version,
    terminate,
)
from lokal_lab.processes import ProcessGroup

from sidecar.containerd.client import ContainerdClient
from sidecar.oci import parse_digest

METHODS = ("grpc_read", "file_read", "sendfile_devnull", "sendfile_tcp")
BUFFER = 1 * MiB
MAX_PASSES = 50
NAMESPACE = "k8s.io"


# ---- the ways of reading (each returns the bytes it moved) ------------------------------------------


def grpc_read(lab: StoreLab, digest: str, hasher: hashlib._Hash | None = None) -> int:
    async def read() -> int:
        client = ContainerdClient(str(lab.containerd.socket), NAMESPACE)
        total = 0
        try:
            async for chunk in client.read(parse_digest(digest)):
                total += len(chunk)
                if hasher is not None:
                    hasher.update(chunk)
        finally:
            await client.close()
        return total

    return asyncio.run(read())


def file_read(path: Path, hasher: hashlib._Hash | None = None) -> int:
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            total += n
            if hasher is not None:
                hasher.update(view[:n])
    return total


def sendfile_all(out_fd: int, path: Path) -> int:
    """os.sendfile the whole file to `out_fd` (partial sends are normal: loop)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            sent = os.sendfile(out_fd, fd, offset, size - offset)
            if sent == 0:
                raise RuntimeError(f"sendfile sent nothing at offset {offset} of {size}")
            offset += sent
        return offset
    finally:
        os.close(fd)


class TcpSink:
    """A loopback TCP connection whose far end a thread drains (bounded by the bytes announced)."""

    def __init__(self) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        self.sender = socket.create_connection(listener.getsockname())
        self._receiver, _ = listener.accept()
        listener.close()

    def send_file(self, path: Path) -> int:
        size = path.stat().st_size
        received: list[int] = []
        drain = threading.Thread(target=self._drain, args=(size, received))
        drain.start()
        try:
            sent = sendfile_all(self.sender.fileno(), path)
        finally:
            drain.join(timeout=120)
        if received != [size]:
            raise RuntimeError(f"the sink received {received} bytes, want {size}")
        return sent

    def _drain(self, size: int, received: list[int]) -> None:
        buffer = bytearray(BUFFER)
        left = size
        self._receiver.settimeout(60)
        while left > 0:
            n = self._receiver.recv_into(buffer, min(left, BUFFER))
            if n == 0:
                break
            left -= n
        received.append(size - left)

    def close(self) -> None:
        self.sender.close()
        self._receiver.close()


# ---- measuring --------------------------------------------------------------------------------------


def measure(read_once: Callable[[], int], containerd_pid: int, min_seconds: float) -> dict[str, float]:
    """Repeat `read_once` until `min_seconds` have passed (at most MAX_PASSES times)."""
    own_before = time.process_time()
    containerd_before = cpu_seconds(containerd_pid)
    started = time.perf_counter()
    total = passes = 0
    while passes < MAX_PASSES:
        total += read_once()
        passes += 1
        if time.perf_counter() - started >= min_seconds:
            break
    seconds = time.perf_counter() - started
    own = time.process_time() - own_before
    containerd = cpu_seconds(containerd_pid) - containerd_before
    gigabytes = total / 1e9
    return {
        "passes": passes,
        "bytes": total,
        "seconds": seconds,
        "GBps": gigabytes / seconds,
        "reader_cpu_s_per_GB": own / gigabytes,
        "containerd_cpu_s_per_GB": containerd / gigabytes,
        "total_cpu_s_per_GB": (own + containerd) / gigabytes,
    }


def verify(lab: StoreLab, digest: str, path: Path) -> None:
    by_grpc, by_file = hashlib.sha256(), hashlib.sha256()
    grpc_read(lab, digest, by_grpc)
    file_read(path, by_file)
    for name, hasher in (("grpc_read", by_grpc), ("file_read", by_file)):
        if f"sha256:{hasher.hexdigest()}" != digest:
            raise RuntimeError(f"{name} returned bytes whose digest is not {digest}")
    progress("gRPC Read and the file both give the blob's exact bytes")


def run_rounds(lab: StoreLab, rounds: int, min_seconds: float) -> list[dict[str, object]]:
    layer = lab.layers[0]
    path = lab.blob_dir / layer.digest.split(":", 1)[1]
    verify(lab, layer.digest, path)
    containerd_proc = lab.containerd._proc
    assert isinstance(containerd_proc, subprocess.Popen)
    devnull = os.open(os.devnull, os.O_WRONLY)
    sink = TcpSink()
    ways: dict[str, Callable[[], int]] = {
        "grpc_read": lambda: grpc_read(lab, layer.digest),
        "file_read": lambda: file_read(path),
        "sendfile_devnull": lambda: sendfile_all(devnull, path),
        "sendfile_tcp": lambda: sink.send_file(path),
    }
    rows: list[dict[str, object]] = []
    try:
        for index in range(rounds):
            row: dict[str, object] = {"round": index, "order": rotated(METHODS, index)}
            row["load_average_before"] = load_average()
            for method in rotated(METHODS, index):
                row[method] = measure(ways[method], containerd_proc.pid, min_seconds)
            row["ratio_GBps_vs_grpc_read"] = {
                m: ratio(_figure(row, m, "GBps"), _figure(row, "grpc_read", "GBps")) for m in METHODS
            }
            rows.append(row)
            progress(
                f"round {index}: " + ", ".join(f"{m} {_figure(row, m, 'GBps'):.2f} GB/s" for m in METHODS)
            )
    finally:
        sink.close()
        os.close(devnull)
    return rows


def _figure(row: dict[str, object], method: str, key: str) -> float:
    figures = row[method]
    assert isinstance(figures, dict)
    return float(figures[key])


def summarise(rows: list[dict[str, object]]) -> dict[str, object]:
    keys = ("GBps", "reader_cpu_s_per_GB", "containerd_cpu_s_per_GB", "total_cpu_s_per_GB")
    return {
        "median": {m: {k: median(_figure(r, m, k) for r in rows) for k in keys} for m in METHODS},
        "median_ratio_GBps_vs_grpc_read": {
            m: median(ratio(_figure(r, m, "GBps"), _figure(r, "grpc_read", "GBps")) for r in rows)
            for m in METHODS
        },
    }


# ---- main -----------------------------------------------------------------------------------------



def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="128 MiB, 2 rounds")
    parser.add_argument("--size-mib", type=int, help="blob size in MiB (default 512, or 128 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds (default 5, or 2 with --quick)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="least time per measurement")
    parser.add_argument("--out", type=Path, help="JSON file (default: bench/results/store_read[-quick].json)")
    args = parser.parse_args()
    size_mib = args.size_mib or (128 if args.quick else 512)
    rounds = args.rounds or (2 if args.quick else 5)
    if not 1 <= size_mib <= 4096:
        parser.error("--size-mib must be between 1 and 4096")
    if not 1 <= rounds <= 20:
        parser.error("--rounds must be between 1 and 20")
    if not 0 < args.min_seconds <= 10:
        parser.error("--min-seconds must be in (0, 10]")
    min_seconds = min(args.min_seconds, 0.5) if args.quick else args.min_seconds
    out = args.out or ROOT / "bench" / "results" / (
        "store_read-quick.json" if args.quick else "store_read.json"
    )
    signal.signal(signal.SIGTERM, terminate)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lokal-bench-store-") as tmp, ProcessGroup() as group:
        lab = prepare_store(group, Path(tmp), [size_mib * MiB], seed=11)
        rows = run_rounds(lab, rounds, min_seconds)
    report = {
        "benchmark": "bench/store_read.py",
        "profile": "quick" if args.quick else "full",
        "blob": lab.describe()["layers"],
        "rounds_count": rounds,
        "min_seconds_per_measurement": min_seconds,
        "ways": {
            "grpc_read": "containerd content Read stream via grpc.aio (ContainerdClient.read), 1 MiB chunks",
            "file_read": "readinto a reused 1 MiB buffer from the content store's file",
            "sendfile_devnull": "os.sendfile file -> /dev/null",
            "sendfile_tcp": "os.sendfile file -> loopback TCP, drained by a thread (recv_into 1 MiB)",
        },
        "source": source_version(),
        "wall_seconds": time.monotonic() - started,
        "summary": summarise(rows),
        "rounds": rows,
    }
    text = json.dumps(rounded(report), indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)
    progress(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

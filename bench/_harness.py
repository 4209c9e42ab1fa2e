"""Shared parts of lokal's serving benchmarks (`bench/serve.py`, `bench/store_read.py`).

Two halves:
- Pure logic (no sockets, no clock, no files): reading wrk's output, nginx's config text, wrk's Lua
  script, the rotation of server order per round, per-round ratios and their medians.
- Thin I/O shells: a private containerd holding a freshly built image (pulled through CRI from a real
  docker-registry, so that its content store looks like a node's), server CPU from /proc/PID/stat, a
  bounded wrk run, and a verifying HTTP fetch.

Rules:
- Every process is started through the caller's `ProcessGroup` and stopped by PID with it.
- Traffic goes to 127.0.0.1 only. Every load is bounded in time (wrk -d, plus a subprocess timeout).
- Figures are compared within one run: callers interleave servers per round and report medians of
  per-round ratios (docs: ../shared/docs/performance.md).
"""

from __future__ import annotations

import hashlib
import http.client
import math
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lokal_lab.containerd import ContainerdInstance  # noqa: E402
from lokal_lab.cri import CriClient  # noqa: E402
from lokal_lab.images import Blob, BuiltImage, build_image, push_image  # noqa: E402
from lokal_lab.processes import ProcessGroup, wait_for  # noqa: E402
from lokal_lab.registry import RegistryInstance, free_port  # noqa: E402

# The upstream registry's name as containerd and lokal see it (hosts.toml maps it to the lab registry).
REGISTRY_NAME = "registry.bench.test"
REPOSITORY = "bench/serve"
TAG = "v1"
MiB = 1 << 20
GiB = 1 << 30

# ---- pure logic -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    bytes: float
    p99_ms: float
    non_2xx: int
    socket_errors: str


_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(text: str) -> WrkResult:
    """wrk's text report (with --latency) as numbers; raises ValueError if it is not one."""
    summary = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+)(B|KB|MB|GB|TB) read", text)
    if summary is None:
        raise ValueError(f"not a wrk report:\n{text[-2000:]}")
    seconds = float(summary.group(2)) * _TIME_UNITS[summary.group(3)] / 1e3
    p99 = re.search(r"^\s*99(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    return WrkResult(
        requests=int(summary.group(1)),
        seconds=seconds,
        bytes=float(summary.group(4)) * _UNITS[summary.group(5)],
        p99_ms=float(p99.group(1)) * _TIME_UNITS[p99.group(2)] if p99 else math.nan,
        non_2xx=int(errors.group(1)) if errors else 0,
        socket_errors=socket_errors.group(1).strip() if socket_errors else "",
    )


def wrk_cycle_script(paths: Sequence[str]) -> str:
    """A wrk Lua script that requests `paths` in turn, over and over (each thread from its own start)."""
    if not paths:
        raise ValueError("wrk_cycle_script needs at least one path")
    for path in paths:
        if not path.startswith("/") or any(c in path for c in '"\\\r\n'):
            raise ValueError(f"unsafe path for a Lua string: {path!r}")
    items = ",\n  ".join(f'"{p}"' for p in paths)
    return (
        f"local paths = {{\n  {items}\n}}\n"
        "local n = 0\n"
        "request = function()\n"
        "  n = n + 1\n"
        '  return wrk.format("GET", paths[(n % #paths) + 1])\n'
        "end\n"
    )


def nginx_config(prefix: Path, port: int, blob_dir: Path) -> str:
    """nginx, one worker, sendfile + tcp_nopush, serving containerd's blob files at registry blob paths
    (`/v2/<repo>/blobs/sha256:<hex>` -> `<blob_dir>/<hex>`)."""
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        location ~ "^/v2/.+/blobs/sha256:([0-9a-f]{{64}})$" {{
            alias {blob_dir}/$1;
        }}
        location / {{ return 404; }}
    }}
}}
"""


def rotated(names: Sequence[str], round_index: int) -> list[str]:
    """The order of `names` in round `round_index`: rotated by one each round (A B C, B C A, C A B), so
    that no server always runs first, after a cold pause, or right after a given other server."""
    shift = round_index % len(names)
    return [*names[shift:], *names[:shift]]


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; NaN when either is missing or the denominator is zero."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return math.nan
    return numerator / denominator


def median(values: Iterable[float]) -> float:
    """Median of the values that are numbers; NaN if none is."""
    numbers = [v for v in values if not math.isnan(v)]
    return statistics.median(numbers) if numbers else math.nan


def per_round_ratios(
    rounds: Sequence[dict[str, dict[str, float]]], subject: str, reference: str, keys: Sequence[str]
) -> list[dict[str, float]]:
    """For every round, subject/reference for every key."""
    return [{k: ratio(row[subject][k], row[reference][k]) for k in keys} for row in rounds]


def check_target(value: float, *, at_least: float | None = None, at_most: float | None = None) -> str:
    """'pass', 'fail', or 'unknown' (NaN) for one figure against its bound."""
    if math.isnan(value):
        return "unknown"
    if at_least is not None and value < at_least:
        return "fail"
    if at_most is not None and value > at_most:
        return "fail"
    return "pass"


def terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: unwind through the context managers (ProcessGroup, LabCluster), so every process
    the benchmark started is stopped and the lab is torn down."""
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


# ---- I/O: processes, CPU, load ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children (wrk runs are children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True

    wait_for(up, timeout, interval=0.05, what=f"{what} on 127.0.0.1:{port}")


def run_wrk(
    port: int, path: str, connections: int, threads: int, seconds: float, script: Path | None = None
) -> WrkResult:
    """One bounded wrk run against 127.0.0.1:`port` (`script` chooses the paths when given)."""
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return parse_wrk(out.stdout)


def fetch_sha256(port: int, path: str, timeout: float = 60.0) -> tuple[int, int, str]:
    """GET 127.0.0.1:`port``path` in full: (status, body length, sha256 hex of the body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        digest = hashlib.sha256()
        length = 0
        while chunk := response.read(4 * MiB):
            digest.update(chunk)
            length += len(chunk)
        return response.status, length, digest.hexdigest()
    finally:
        conn.close()


def which_or_fail(tool: str) -> str:
    found = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if found is None:
        raise SystemExit(f"{tool} is not installed: run `bash bench/setup.sh` first")
    return found


# ---- I/O: a private containerd that holds an image, pulled like a node pulls -------------------------


@dataclass
class StoreLab:
    """A docker-registry holding the image and a private containerd that pulled it through CRI."""

    registry: RegistryInstance
    containerd: ContainerdInstance
    image: BuiltImage

    @property
    def blob_dir(self) -> Path:
        return self.containerd.content_root / "blobs" / "sha256"

    @property
    def layers(self) -> list[Blob]:
        return self.image.layers["linux/amd64"]

    def describe(self) -> dict[str, object]:
        return {
            "registry_name": REGISTRY_NAME,
            "repository": REPOSITORY,
            "layers": [asdict(layer) for layer in self.layers],
        }


def prepare_store(group: ProcessGroup, base: Path, layer_sizes: Sequence[int], seed: int) -> StoreLab:
    """Build an image with layers of `layer_sizes` (uncompressed tars of random bytes), push it to a
    docker-registry, and pull it through CRI into a private containerd under `base`."""
    started = time.monotonic()
    layout = base / "layout"
    image = build_image(layout, TAG, layer_sizes, seed=seed)
    registry = RegistryInstance(base / "registry")
    registry.start(group)
    push_image(image, registry.address, REPOSITORY)
    shutil.rmtree(layout)  # the registry and containerd hold their own copies now
    containerd = ContainerdInstance(base / "containerd")
    containerd.start(group)
    containerd.write_hosts(REGISTRY_NAME, f"http://{registry.address}")
    with CriClient(containerd.socket) as cri:
        cri.pull(f"{REGISTRY_NAME}/{REPOSITORY}:{TAG}", timeout=600)
    progress(f"store ready in {time.monotonic() - started:.1f}s ({sum(layer_sizes) / MiB:.0f} MiB of layers)")
    return StoreLab(registry, containerd, image)


def lokal_serve_argv(port: int, lab: StoreLab, *options: str) -> list[str]:
    """`lokal serve` on 127.0.0.1:`port` over the lab's containerd, mirroring the lab registry's name."""
    return [
        sys.executable, "-m", "sidecar", "serve",
        "--listen", f"127.0.0.1:{port}",
        "--containerd-socket", str(lab.containerd.socket),
        "--mirrored-registries", REGISTRY_NAME,
        *options,
    ]  # fmt: skip


def start_nginx(group: ProcessGroup, base: Path, lab: StoreLab) -> tuple[subprocess.Popen[bytes], int]:
    """nginx serving the lab containerd's blob files at registry blob paths (see `nginx_config`)."""
    port = free_port()
    prefix = base / "nginx"
    prefix.mkdir()
    (prefix / "nginx.conf").write_text(nginx_config(prefix, port, lab.blob_dir))
    proc = group.start(
        "nginx",
        [which_or_fail("nginx"), "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
        log_path=base / "nginx.log",
    )
    return proc, port


def source_version() -> dict[str, object]:
    """The commit measured, and any uncommitted changes under sidecar/ (other engineers work in the tree)."""

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )
        return out.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_in_sidecar": git("status", "--short", "sidecar").splitlines(),
    }


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

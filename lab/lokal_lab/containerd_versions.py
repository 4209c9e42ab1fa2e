"""Which containerd the lab runs: the system's 1.6 (Debian bookworm), trixie's 1.7 or sid's 2.1.

Rules:
- A version is named by its series: "1.6", "1.7" or "2.1". 1.6 is the system's `containerd` on PATH;
  the others are Debian's packages unpacked by scripts/containerd_versions.sh under
  LOKAL_CONTAINERD_CACHE (default /var/cache/lokal/containerd)/<series>/usr/bin.
- LOKAL_CONTAINERD picks the lab's default version (tests, demo, benchmarks); unset means 1.6. A value
  that is not a known series is an error naming the variable; a known one that is not installed says
  which script installs it.
- What differs between versions lives here, as data: the config file's version (2 for 1.x, 3 for 2.x)
  and the CRI tables, so the config writer has no version branches of its own.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

ENV_VERSION = "LOKAL_CONTAINERD"
ENV_CACHE = "LOKAL_CONTAINERD_CACHE"
DEFAULT_CACHE = Path("/var/cache/lokal/containerd")
SYSTEM_SERIES = "1.6"
SERIES = ("1.6", "1.7", "2.1")


class ContainerdVersionError(RuntimeError):
    """A containerd version that is unknown or not installed."""


@dataclass(frozen=True)
class ContainerdVersion:
    series: str
    bin_dir: Path | None  # None: the system's PATH

    @property
    def major(self) -> int:
        return int(self.series.split(".")[0])

    @property
    def containerd(self) -> str:
        return str(self.bin_dir / "containerd") if self.bin_dir else "containerd"

    @property
    def ctr(self) -> str:
        return str(self.bin_dir / "ctr") if self.bin_dir else "ctr"

    @property
    def config_version(self) -> int:
        return 3 if self.major >= 2 else 2

    @property
    def images_table(self) -> str:
        """The table that holds snapshotter, discard_unpacked_layers and the fetch settings."""
        if self.major >= 2:
            return 'plugins."io.containerd.cri.v1.images"'
        return 'plugins."io.containerd.grpc.v1.cri".containerd'

    @property
    def registry_table(self) -> str:
        """The table whose config_path names the hosts.toml directory (certs.d)."""
        if self.major >= 2:
            return 'plugins."io.containerd.cri.v1.images".registry'
        return 'plugins."io.containerd.grpc.v1.cri".registry'

    @property
    def runtime_table(self) -> str:
        """The table that holds enable_cdi and the cni table."""
        if self.major >= 2:
            return 'plugins."io.containerd.cri.v1.runtime"'
        return 'plugins."io.containerd.grpc.v1.cri"'

    @property
    def fetches_layers_in_ranges(self) -> bool:
        """2.1 added concurrent_layer_fetch_buffer: one layer as parallel open-ended ranged requests."""
        return (self.major, int(self.series.split(".")[1])) >= (2, 1)

    def __str__(self) -> str:
        return self.series


def containerd_version(series: str) -> ContainerdVersion:
    """The installed containerd of `series`; ContainerdVersionError when unknown or not installed."""
    if series not in SERIES:
        raise ContainerdVersionError(
            f"unknown containerd version {series!r} (choose one of {', '.join(SERIES)})"
        )
    if series == SYSTEM_SERIES:
        if shutil.which("containerd") is None:
            raise ContainerdVersionError("containerd 1.6 is not installed (run scripts/setup.sh)")
        return ContainerdVersion(series, None)
    bin_dir = Path(os.environ.get(ENV_CACHE) or DEFAULT_CACHE) / series / "usr" / "bin"
    if not (bin_dir / "containerd").is_file():
        raise ContainerdVersionError(
            f"containerd {series} is not installed at {bin_dir} (run scripts/containerd_versions.sh)"
        )
    return ContainerdVersion(series, bin_dir)


def default_series() -> str:
    return os.environ.get(ENV_VERSION) or SYSTEM_SERIES


def default_version() -> ContainerdVersion:
    """The lab's default containerd: LOKAL_CONTAINERD, or the system's 1.6."""
    try:
        return containerd_version(default_series())
    except ContainerdVersionError as exc:
        raise ContainerdVersionError(f"{ENV_VERSION}: {exc}") from None


def installed_series() -> list[str]:
    """The series that can run here, in order."""
    found = []
    for series in SERIES:
        try:
            containerd_version(series)
        except ContainerdVersionError:
            continue
        found.append(series)
    return found


def use_version(series: str) -> ContainerdVersion:
    """Make `series` the default for this process and the ones it starts (the demo's and benchmarks'
    --containerd): sets LOKAL_CONTAINERD. ContainerdVersionError when unknown or not installed."""
    version = containerd_version(series)
    os.environ[ENV_VERSION] = series
    return version

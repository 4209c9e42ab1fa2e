"""Private containerd instances: one per lab node or test, everything under its own directory.

Debian's containerd is used as it is: the system's 1.6, or 1.7 / 2.1 from the private prefix
(lokal_lab.containerd_versions; LOKAL_CONTAINERD picks the default). The config points root, state, the
sockets, the opt plugin and CNI at the instance's directory, so nothing touches the machine's
/var/lib/containerd or /etc. 1.x reads config version 2, 2.x version 3 with the CRI settings split into
the images and runtime plugins. On 2.1, concurrent_layer_fetch_buffer is set (1 MiB unless told), so one
layer arrives as parallel open-ended ranged requests, as on a tuned 2.1 node.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from lokal_lab.containerd_versions import ContainerdVersion, default_version
from lokal_lab.processes import ProcessGroup, wait_for

CONTENT_SUBDIR = "io.containerd.content.v1.content"
_NOISY_PLUGINS = [
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.tracing.processor.v1.otlp",
]
# 2.x enables NRI by default, on a machine-wide socket (/var/run/nri): private instances must not share it.
_NOISY_PLUGINS_2X = ["io.containerd.nri.v1.nri"]
LAYER_FETCH_CHUNK = 1 << 20


@dataclass
class ContainerdInstance:
    directory: Path
    netns: str | None = None
    config_path_enabled: bool = True  # whether CRI reads certs.d (lokal's hosts.toml files)
    discard_unpacked_layers: bool = False
    snapshotter: str = "overlayfs"
    version: ContainerdVersion = field(default_factory=default_version)
    layer_fetch_chunk: int = LAYER_FETCH_CHUNK  # 2.1+: concurrent_layer_fetch_buffer; 0 leaves it unset
    _group: ProcessGroup | None = field(default=None, repr=False)
    _proc: object = field(default=None, repr=False)

    @property
    def socket(self) -> Path:
        return self.directory / "containerd.sock"

    @property
    def root(self) -> Path:
        return self.directory / "root"

    @property
    def content_root(self) -> Path:
        return self.root / CONTENT_SUBDIR

    @property
    def certs_d(self) -> Path:
        return self.directory / "certs.d"

    @property
    def log_path(self) -> Path:
        return self.directory / "containerd.log"

    def write_config(self) -> Path:
        d = self.directory
        for sub in ("root", "state", "opt", "cni/conf", "cni/bin", "certs.d"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        v = self.version
        registry = f'config_path = "{self.certs_d}"' if self.config_path_enabled else ""
        disabled = _NOISY_PLUGINS + (_NOISY_PLUGINS_2X if v.major >= 2 else [])
        fetch = ""
        if v.fetches_layers_in_ranges and self.layer_fetch_chunk:
            # CRI pulls through the transfer service unless a setting forces the local pull: set both.
            fetch = f"  concurrent_layer_fetch_buffer = {self.layer_fetch_chunk}"
            transfer = f'[plugins."io.containerd.transfer.v1.local"]\n{fetch}\n'
        else:
            transfer = ""
        cri = '[plugins."io.containerd.grpc.v1.cri"]\n  stream_server_address = "127.0.0.1"\n'
        cri += '  stream_server_port = "0"\n'
        # 1.x keeps the runtime settings in the CRI table itself; 2.x in a plugin of their own.
        cri += "" if v.major < 2 else f"\n[{v.runtime_table}]\n"
        cri += "  enable_cdi = false\n"
        cni_bin = f'bin_dirs = ["{d / "cni/bin"}"]' if v.major >= 2 else f'bin_dir = "{d / "cni/bin"}"'
        config = f"""version = {v.config_version}
root = "{self.root}"
state = "{d / 'state'}"
disabled_plugins = {_toml_list(disabled)}

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{d / 'containerd.sock.ttrpc'}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'opt'}"

{cri}
[{v.runtime_table}.cni]
  conf_dir = "{d / 'cni/conf'}"
  {cni_bin}

[{v.images_table}]
  snapshotter = "{self.snapshotter}"
  discard_unpacked_layers = {str(self.discard_unpacked_layers).lower()}
{fetch}

[{v.registry_table}]
  {registry}

{transfer}"""
        path = d / "config.toml"
        path.write_text(config)
        return path

    def start(self, group: ProcessGroup, timeout: float = 20.0) -> None:
        config = self.write_config()
        self._group = group
        self._proc = group.start(
            f"containerd:{self.directory.name}",
            [self.version.containerd, "--config", str(config)],
            log_path=self.log_path,
            netns=self.netns,
        )
        wait_for(self._socket_answers, timeout, what=f"containerd socket {self.socket}")

    @property
    def pid(self) -> int | None:
        """The running containerd's process id (for tests that freeze it with SIGSTOP)."""
        return None if self._proc is None else int(self._proc.pid)  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._group is not None and self._proc is not None:
            self._group.stop(self._proc)  # type: ignore[arg-type]
            self._proc = None

    def restart(self) -> None:
        assert self._group is not None
        self.stop()
        self.start(self._group)

    def write_hosts(self, registry: str, server: str, mirrors: list[str] | None = None) -> Path:
        """Write certs.d/<registry>/hosts.toml: `mirrors` first (lokal), then `server` (the upstream).

        containerd 1.6 rejects a hosts.toml without any [host] table, so the upstream always gets one.
        """
        lines = [f'server = "{server}"', ""]
        for url in [*(mirrors or []), server]:
            lines += [f'[host."{url}"]', '  capabilities = ["pull", "resolve"]', ""]
        path = self.certs_d / registry / "hosts.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines))
        return path

    def collect_garbage(self, namespace: str = "k8s.io") -> None:
        """Run containerd's GC now: deleting a lease with --sync removes every unreferenced resource."""
        base = [self.version.ctr, "--address", str(self.socket), "--namespace", namespace, "leases"]
        if self.netns:
            base = ["ip", "netns", "exec", self.netns, *base]
        lease = subprocess.run(
            [*base, "create"], check=True, capture_output=True, text=True, timeout=30
        ).stdout.split()[0]
        subprocess.run([*base, "delete", "--sync", lease], check=True, capture_output=True, timeout=60)

    def _socket_answers(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:  # type: ignore[attr-defined]
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"containerd exited early:\n{tail}")
        if self.netns is not None:
            return self.socket.exists()  # a unix socket is reachable across network namespaces
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        return True


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"

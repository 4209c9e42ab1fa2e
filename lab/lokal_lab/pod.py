"""A DaemonSet's pod on a lab node, run from a real image by the node's own containerd (`ctr run`, runc).

    containers = pod_containers(daemonset, settings, node="node-2")    # pure: what the kubelet would run
    with PodRunner(instance, netns, work_dir) as runner:
        runner.import_archive(archive)                                 # `ctr images import`
        runner.run_to_completion(containers[0])                        # the init container
        runner.start(containers[1], log_path)                          # the main container, detached

Rules:
- The rendered DaemonSet is the source: images, args, environment (the ConfigMap's data for envFrom,
  spec.nodeName for the downward API), hostPath and emptyDir mounts at their mount paths (read-only where
  the DaemonSet says so), a read-only root file system, every capability dropped, no new privileges, the
  default seccomp profile, and the node's network namespace for hostNetwork. A pod field this module does
  not translate raises, rather than running something else than the manifest says.
- Every container started here is killed and deleted by `close()`, on failure too: containerd's shims
  outlive containerd, and their mounts would outlive the lab.
- `ip netns exec` gives a lab node's containerd a fresh /sys without cgroup mounts, and runc then fails
  with "no cgroup mount found in mountinfo". Before the first container, the runner mounts the host's
  cgroup hierarchies into that containerd's mount namespace (nowhere else), as a real node has them.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from lokal_lab.containerd import ContainerdInstance

NAMESPACE = "k8s.io"  # where the kubelet's images live, and so where the DaemonSet's image is
_TRANSLATED_VOLUMES = {"hostPath", "emptyDir"}
# Every Linux capability (linux/capability.h, 0-40): ctr 1.6 has no "ALL", so drop: ["ALL"] drops each.
ALL_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)


class PodError(RuntimeError):
    """The pod cannot run as its manifest says; the message names the field or the container."""


@dataclass(frozen=True)
class Mount:
    source: str  # a host path, or "tmpfs"
    target: str
    read_only: bool
    tmpfs: bool = False

    def ctr_arg(self) -> str:
        if self.tmpfs:
            return f"type=tmpfs,src=tmpfs,dst={self.target},options=nosuid:nodev:size=16m"
        options = "rbind:ro" if self.read_only else "rbind:rw"
        return f"type=bind,src={self.source},dst={self.target},options={options}"


@dataclass(frozen=True)
class ContainerRun:
    name: str
    image: str
    command: tuple[str, ...] | None  # None: the image's Entrypoint, as the kubelet does
    args: tuple[str, ...] | None  # None: the image's Cmd (unless a command is given)
    env: dict[str, str]
    mounts: tuple[Mount, ...]
    read_only_root: bool
    drop_all_capabilities: bool
    host_network: bool


def pod_containers(daemonset: dict[str, Any], settings: dict[str, str], node: str) -> list[ContainerRun]:
    """The init containers, then the containers, of `daemonset`'s pod on `node`, as runc would run them."""
    spec = daemonset["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    runs = []
    for piece in [*spec.get("initContainers", []), *spec["containers"]]:
        runs.append(
            ContainerRun(
                name=piece["name"],
                image=piece["image"],
                command=tuple(piece["command"]) if "command" in piece else None,
                args=tuple(piece["args"]) if "args" in piece else None,
                env=_environment(piece, settings, node),
                mounts=tuple(_mount(volumes, m, piece["name"]) for m in piece.get("volumeMounts", [])),
                read_only_root=bool(piece.get("securityContext", {}).get("readOnlyRootFilesystem")),
                drop_all_capabilities=piece.get("securityContext", {}).get("capabilities", {}).get("drop")
                == ["ALL"],
                host_network=bool(spec.get("hostNetwork")),
            )
        )
    return runs


def process_args(run: ContainerRun, entrypoint: list[str], cmd: list[str]) -> list[str]:
    """Kubernetes' rule: `command` replaces the image's Entrypoint, `args` its Cmd; a `command` alone
    drops the Cmd."""
    if run.command is not None:
        return [*run.command, *(run.args or ())]
    return [*entrypoint, *(run.args if run.args is not None else cmd)]


def cgroup_mount_script(mountinfo: str) -> str:
    """Shell commands that mount, under /sys/fs/cgroup, the same cgroup hierarchies (v1, v2 or both) as
    `mountinfo` (a /proc/PID/mountinfo text) shows there."""
    commands = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 10 or " - " not in line:
            continue
        target = fields[4]
        fs_type, _source, super_options = line.split(" - ", 1)[1].split()[:3]
        if not (target == "/sys/fs/cgroup" or target.startswith("/sys/fs/cgroup/")):
            continue
        if fs_type == "tmpfs":
            commands.append(f"mount -t tmpfs -o mode=755 tmpfs {target}")
        elif fs_type == "cgroup":
            options = ",".join(o for o in super_options.split(",") if o not in {"rw", "ro"})
            if all(o.startswith("name=") for o in options.split(",")):
                options = "none," + options  # a named hierarchy without controllers (name=systemd)
            commands.append(f"mkdir -p {target} && mount -t cgroup -o {options} cgroup {target}")
        elif fs_type == "cgroup2":
            commands.append(f"mkdir -p {target} && mount -t cgroup2 cgroup2 {target}")
    if not commands:
        raise PodError("the host has no cgroup mount under /sys/fs/cgroup: runc cannot run containers")
    return " && ".join(commands)


def _environment(piece: dict[str, Any], settings: dict[str, str], node: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in piece.get("envFrom", []):
        if "configMapRef" not in source:
            raise PodError(f"{piece['name']}: envFrom {source} is not a ConfigMap")
        env.update(settings)
    for item in piece.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            env[item["name"]] = node
        else:
            raise PodError(f"{piece['name']}: env {item['name']} comes from something the lab cannot give")
    return env


def _mount(volumes: dict[str, Any], mount: dict[str, Any], container: str) -> Mount:
    volume = volumes.get(mount["name"])
    if volume is None or not _TRANSLATED_VOLUMES & set(volume):
        raise PodError(f"{container}: volume {mount['name']!r} is not a hostPath or emptyDir")
    if "emptyDir" in volume:
        return Mount("tmpfs", mount["mountPath"], read_only=False, tmpfs=True)
    return Mount(volume["hostPath"]["path"], mount["mountPath"], read_only=bool(mount.get("readOnly")))


@dataclass
class PodRunner:
    """Runs ContainerRuns with `ctr` against one lab node's containerd, inside the node's netns."""

    instance: ContainerdInstance
    netns: str
    work_dir: Path
    _started: list[str] = field(default_factory=list)

    def __enter__(self) -> PodRunner:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def ctr(self, *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [self.instance.version.ctr, "--address", str(self.instance.socket), "--namespace", NAMESPACE]
        result = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise PodError(f"ctr {' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def mount_cgroups(self) -> None:
        """Give the node's containerd (and so its shims and runc) the host's cgroup mounts, once."""
        pid = self.instance.pid
        if pid is None:
            raise PodError("the node's containerd is not running")
        namespace = f"/proc/{pid}/ns/mnt"
        enter = ["nsenter", f"--mount={namespace}", "--"]
        inside = subprocess.run(
            [*enter, "cat", "/proc/self/mountinfo"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        if any(" cgroup" in line.split(" - ", 1)[-1][:8] for line in inside.splitlines()):
            return  # already there
        script = cgroup_mount_script(Path("/proc/self/mountinfo").read_text())
        result = subprocess.run(
            [*enter, "sh", "-c", script], capture_output=True, text=True, timeout=30, check=False
        )
        if result.returncode != 0:
            raise PodError(f"mounting cgroups for the node's containerd failed: {result.stderr.strip()}")

    def import_archive(self, archive: Path) -> list[str]:
        """Import an OCI archive into the node's k8s.io namespace; returns the image names it holds now."""
        self.ctr("images", "import", str(archive), timeout=300)
        return self.ctr("images", "list", "--quiet").stdout.split()

    def image_digest(self, image: str) -> str:
        for line in self.ctr("images", "list").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == image:
                return fields[2]
        raise PodError(f"image {image} is not in the node's containerd")

    def image_config(self, image: str) -> dict[str, Any]:
        """The image's config (Entrypoint, Cmd, Env, User...), read from the node's content store."""
        manifest = json.loads(self.ctr("content", "get", self.image_digest(image)).stdout)
        config: dict[str, Any] = json.loads(self.ctr("content", "get", manifest["config"]["digest"]).stdout)
        return config

    def _argv(self, run: ContainerRun) -> list[str]:
        config = self.image_config(run.image).get("config", {})
        return process_args(run, config.get("Entrypoint") or [], config.get("Cmd") or [])

    def run_to_completion(self, run: ContainerRun, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run an init container in the foreground; its output and exit code come back."""
        self.mount_cgroups()
        container_id = f"{run.name}-{time.monotonic_ns()}"
        self._started.append(container_id)
        result = self.ctr(
            "run",
            "--rm",
            *self._run_flags(run),
            run.image,
            container_id,
            *self._argv(run),
            timeout=timeout,
            check=False,
        )
        self._started.remove(container_id)
        return result

    def start(self, run: ContainerRun, log_path: Path) -> str:
        """Start a long-running container, detached; its stdout and stderr go to `log_path`."""
        self.mount_cgroups()
        container_id = f"{run.name}-{time.monotonic_ns()}"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._started.append(container_id)
        self.ctr(
            "run",
            "--detach",
            "--log-uri",
            f"file://{log_path}",
            *self._run_flags(run),
            run.image,
            container_id,
            *self._argv(run),
        )
        return container_id

    def stop(self, container_id: str, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace`; then the task and the container (and its snapshot) go."""
        if self.ctr("task", "kill", "--signal", "SIGTERM", container_id, check=False).returncode == 0:
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self._running(container_id):
                time.sleep(0.1)
            if self._running(container_id):
                self.ctr("task", "kill", "--signal", "SIGKILL", container_id, check=False)
                time.sleep(0.5)
        self.ctr("task", "delete", "--force", container_id, check=False)
        self.ctr("container", "delete", container_id, check=False)
        if container_id in self._started:
            self._started.remove(container_id)

    def pid(self, container_id: str) -> int:
        """The host PID of a running container's process."""
        for line in self.ctr("task", "list").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == container_id:
                return int(fields[1])
        raise PodError(f"container {container_id} has no task")

    def close(self) -> None:
        for container_id in list(self._started):
            self.stop(container_id)

    def _running(self, container_id: str) -> bool:
        listing = self.ctr("task", "list", check=False).stdout.splitlines()[1:]
        return any(line.split()[0] == container_id and "RUNNING" in line for line in listing if line.split())

    def _run_flags(self, run: ContainerRun) -> list[str]:
        flags = ["--seccomp"]  # RuntimeDefault; no new privileges is ctr's default
        if run.host_network:
            flags += ["--with-ns", f"network:/var/run/netns/{self.netns}"]
        if run.read_only_root:
            flags.append("--read-only")
        if run.drop_all_capabilities:
            for capability in ALL_CAPABILITIES:
                flags += ["--cap-drop", capability]
        for name, value in sorted(run.env.items()):
            flags += ["--env", f"{name}={value}"]
        # containerd's CRI mounts by depth, parents first, whatever the pod's order (a tmpfs at /tmp must
        # not hide a hostPath below /tmp, as the lab's paths are).
        for mount in sorted(run.mounts, key=lambda m: len(Path(m.target).parts)):
            flags += ["--mount", mount.ctr_arg()]
        return flags

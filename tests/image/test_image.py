"""lokal's container image, as scripts/build_image.sh builds it (Debian packages and PyPI only, no Docker
engine), cached by its inputs under /var/cache/lokal/image.

- The archive: its digest and size are the recorded ones, it is the image the manifests and the chart
  name, it holds this tree's `sidecar` and nothing of the lab, and no installer.
- On a lab node: imported into the node's containerd, the chart's rendered DaemonSet runs from it (runc,
  via ctr) as the kubelet would run it: the init container writes the node's hosts.toml, the main
  container gets ready, and an image pulled on that node comes through it from a peer.

The first run on a machine builds the image (about 4 minutes on 2 cores, most of it debootstrap and the
dependencies), a code change rebuilds only the lokal layer (1 to 2 minutes), and an unchanged tree reuses
the cached archive at once (docs/operating.md, "Building and pushing the image").
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lokal_lab.cluster import LabCluster, is_local_client, short_digest
from lokal_lab.images import build_image
from lokal_lab.network import lab_unavailable_reason
from lokal_lab.pod import ContainerRun, PodError, PodRunner, cgroup_mount_script, pod_containers, process_args
from lokal_lab.processes import wait_for
from lokal_lab.topology import LabTopology, NodeSpec

from tests.conftest import REAL_PARTS_MISSING, skip_or_fail
from tests.manifests.render import MANIFESTS, REPO, helm_render, helm_values, kustomize, only

BUILD = REPO / "scripts" / "build_image.sh"
SITE_PACKAGES = "opt/lokal/lib/python3.11/site-packages"
TOPOLOGY = LabTopology(
    nodes=(NodeSpec("node-1", "region-a", "zone-a1"), NodeSpec("node-2", "region-a", "zone-a1")),
    upstream_rate="200mbit",
    upstream_delay_ms=5,
)
POD_NODE = "node-2"  # runs lokal from the image; node-1 runs it from the checkout, as the lab does


def _build_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "building the image needs root (debootstrap, chroot)"
    if shutil.which("apt-get") is None:
        return "building the image needs Debian's debootstrap and buildah"
    return None


@dataclass(frozen=True)
class Built:
    record: dict[str, Any]
    archive: Path
    log: str


def build() -> Built:
    result = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    record_path = Path(result.stdout.strip().splitlines()[-1])
    record = json.loads(record_path.read_text())
    return Built(record, record_path.parent / record["archive"], result.stderr)


@pytest.fixture(scope="module")
def built() -> Built:
    reason = _build_unavailable()
    if reason:
        skip_or_fail(reason)
    return build()


class Archive:
    """The OCI archive's index, manifest, config and layer file lists, read with tarfile only."""

    def __init__(self, path: Path) -> None:
        with tarfile.open(path) as tar:
            self.members = {m.name: m for m in tar.getmembers()}
            self.index = json.loads(self._read(tar, "index.json"))
            self.manifest_bytes = self._read(tar, self.blob(self.index["manifests"][0]["digest"]))
            self.manifest = json.loads(self.manifest_bytes)
            self.config = json.loads(self._read(tar, self.blob(self.manifest["config"]["digest"])))
            self.files: set[str] = set()
            for layer in self.manifest["layers"]:
                data = self._read(tar, self.blob(layer["digest"]))
                if layer["mediaType"].endswith("gzip"):
                    data = gzip.decompress(data)
                with tarfile.open(fileobj=io.BytesIO(data)) as inner:
                    self.files |= {name.removeprefix("./") for name in inner.getnames()}

    @staticmethod
    def blob(digest: str) -> str:
        return "blobs/sha256/" + digest.removeprefix("sha256:")

    @staticmethod
    def _read(tar: tarfile.TarFile, name: str) -> bytes:
        handle = tar.extractfile(name)
        assert handle is not None, name
        return handle.read()


@pytest.fixture(scope="module")
def archive(built: Built) -> Archive:
    return Archive(built.archive)


def test_an_unchanged_tree_reuses_the_cached_archive(built: Built) -> None:
    again = build()
    assert "up to date" in again.log
    assert again.archive == built.archive and again.record == built.record


def test_the_cache_key_follows_what_goes_into_the_image_and_nothing_else(tmp_path: Path) -> None:
    # A copy of the inputs the script reads, so that the test can change them.
    tree = tmp_path / "tree"
    for part in (
        "scripts/build_image.sh",
        "pyproject.toml",
        "README.md",
        "sidecar",
        "tests/image",
        "manifests/base/daemonset/kustomization.yaml",
    ):
        source, target = REPO / part, tree / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)

    def key(**env: str) -> str:
        result = subprocess.run(
            ["bash", str(tree / "scripts/build_image.sh"), "--print-key"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, "PYTHON": sys.executable, **env},
        )
        return result.stdout.strip()

    first = key()
    (tree / "tests/image/test_image.py").write_text("# a test changed\n")
    (tree / "sidecar/__pycache__").mkdir(exist_ok=True)
    (tree / "sidecar/__pycache__/x.cpython-311.pyc").write_bytes(b"bytecode")
    assert key() == first  # tests and bytecode are not in the image
    assert key(LOKAL_IMAGE="registry.example/lokal:2") != first
    (tree / "sidecar/logs.py").write_text((tree / "sidecar/logs.py").read_text() + "\n# changed\n")
    assert key() != first


def test_the_recorded_digest_and_size_are_the_archives(built: Built, archive: Archive) -> None:
    assert built.record["size"] == built.archive.stat().st_size
    (entry,) = archive.index["manifests"]
    assert entry["digest"] == built.record["digest"]
    assert "sha256:" + hashlib.sha256(archive.manifest_bytes).hexdigest() == built.record["digest"]


def test_it_is_the_image_the_manifests_and_the_chart_deploy(built: Built, archive: Archive) -> None:
    (entry,) = archive.index["manifests"]
    reference = entry["annotations"]["org.opencontainers.image.ref.name"]
    assert reference == built.record["image"]
    for resources in (helm_render(), kustomize(MANIFESTS / "overlays" / "isolate")):
        for daemonset in only(resources, "DaemonSet"):
            spec = daemonset["spec"]["template"]["spec"]
            assert {c["image"] for c in [*spec["initContainers"], *spec["containers"]]} == {reference}
    config = archive.config["config"]
    assert config["Entrypoint"] == ["lokal"] and config["User"] == "0:0"
    assert archive.config["os"] == "linux"


def test_it_holds_this_trees_lokal_no_lab_code_and_no_installer(archive: Archive) -> None:
    shipped = {
        f.removeprefix(f"{SITE_PACKAGES}/") for f in archive.files if f.startswith(f"{SITE_PACKAGES}/")
    }
    ours = {
        str(p.relative_to(REPO))
        for p in (REPO / "sidecar").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in {".py", ".pyi", ".in"}
    }
    assert ours and ours <= shipped, sorted(ours - shipped)[:10]
    stale = {f for f in shipped if f.startswith("sidecar/") and f.endswith((".py", ".pyi", ".in"))} - ours
    assert stale == set()  # nothing from an earlier build or another tree
    lab = [
        f for f in archive.files if "lokal_lab" in f or "lokal-lab" in f or f.startswith(("lab/", "tests/"))
    ]
    assert lab == []
    packages = {f.split("/")[0] for f in shipped}
    assert not {"pip", "setuptools", "lokal_lab", "tests", "bench"} & packages
    assert {"opt/lokal/bin/lokal", "usr/bin/python3", "usr/bin/python"} <= archive.files
    # bytecode is compiled at build time: the DaemonSet's root file system is read-only.
    assert f"{SITE_PACKAGES}/sidecar/__pycache__/__init__.cpython-311.pyc" in archive.files


# ---------------------------------------------------------------------------------------------------------
# On a lab node


@dataclass
class PodNode:
    cluster: LabCluster
    runner: PodRunner
    containers: list[ContainerRun]
    configure_output: str
    serve_id: str


def lab_values(cluster: LabCluster, node: str) -> dict[str, Any]:
    """The chart's values for a lab node: its containerd's paths, the lab registry, no TLS upstream."""
    instance = cluster.containerd(node)
    registry = cluster.registry_name
    return helm_values(
        containerd={
            "socket": str(instance.socket),
            "contentRoot": str(instance.content_root),
            "configPath": str(instance.certs_d),
        },
        registries={"mirrored": [registry], "upstream": {registry: f"http://{registry}"}},
        # The lab's stand-in for the in-cluster ServiceAccount: the fake apiserver's kubeconfig.
        extraSettings={"LOKAL_KUBECONFIG": str(cluster.kubeconfig)},
    )


def with_kubeconfig(daemonset: dict[str, Any], kubeconfig: Path) -> dict[str, Any]:
    spec = daemonset["spec"]["template"]["spec"]
    spec["volumes"].append({"name": "kubeconfig", "hostPath": {"path": str(kubeconfig), "type": "File"}})
    lokal = next(c for c in spec["containers"] if c["name"] == "lokal")
    lokal["volumeMounts"].append({"name": "kubeconfig", "mountPath": str(kubeconfig), "readOnly": True})
    return daemonset


@pytest.fixture(scope="module")
def pod_node(built: Built) -> Iterator[PodNode]:
    reason = lab_unavailable_reason() or REAL_PARTS_MISSING
    if reason:
        skip_or_fail(reason)
    with LabCluster(TOPOLOGY, topology_mode="isolate", start_lokals=False) as cluster:
        cluster.start_lokal("node-1")
        resources = helm_render(lab_values(cluster, POD_NODE))
        (daemonset,) = only(resources, "DaemonSet")
        (configmap,) = only(resources, "ConfigMap")
        containers = pod_containers(
            with_kubeconfig(daemonset, cluster.kubeconfig), configmap["data"], POD_NODE
        )
        instance = cluster.containerd(POD_NODE)
        with PodRunner(instance, cluster.lab.netns(POD_NODE), cluster.lab.work_dir) as runner:
            imported = runner.import_archive(built.archive)
            assert built.record["image"] in imported
            configure, serve = containers
            result = runner.run_to_completion(configure)
            assert result.returncode == 0, result.stdout + result.stderr
            serve_id = runner.start(serve, cluster.lokal_log(POD_NODE))
            yield PodNode(cluster, runner, containers, result.stdout + result.stderr, serve_id)


@pytest.mark.lab
def test_the_node_imports_the_archive_under_the_recorded_digest(pod_node: PodNode, built: Built) -> None:
    assert pod_node.runner.image_digest(built.record["image"]) == built.record["digest"]


@pytest.mark.lab
def test_the_init_container_from_the_image_puts_lokal_first_in_the_nodes_hosts_toml(
    pod_node: PodNode,
) -> None:
    assert '"event":"hosts_configured"' in pod_node.configure_output.replace(" ", "")
    registry = pod_node.cluster.registry_name
    hosts = (pod_node.cluster.containerd(POD_NODE).certs_d / registry / "hosts.toml").read_text()
    hosts_lines = [line for line in hosts.splitlines() if line.startswith("[host.")]
    assert hosts_lines[0] == '[host."http://127.0.0.1:5050"]', hosts
    assert f'server = "http://{registry}"' in hosts


@pytest.mark.lab
def test_the_main_container_from_the_image_gets_ready_with_the_daemonsets_mounts(pod_node: PodNode) -> None:
    cluster = pod_node.cluster
    log = cluster.lokal_log(POD_NODE)

    answers: list[tuple[int, bytes]] = []

    def ready() -> bool:
        # The DaemonSet's readiness probe, and (as the lab waits for every lokal) its first Node list.
        answers.append(cluster.http_get(POD_NODE, "http://127.0.0.1:5050/readyz", timeout=3))
        return answers[-1][0] == 200 and '"event":"membership_synced"' in log.read_text()

    try:
        wait_for(ready, 60, interval=0.5, what=f"the containerized lokal on {POD_NODE} to be ready")
    except TimeoutError:
        pytest.fail(f"not ready: last /readyz {answers[-1:]}; log:\n{log.read_text()[-3000:]}")
    text = log.read_text()
    assert '"event":"http_listening"' in text
    serve = pod_node.containers[1]
    assert serve.read_only_root and serve.drop_all_capabilities and serve.host_network
    # What the kernel says of the running process: no capability, no new privileges, seccomp filtering.
    status = dict(
        line.split(":\t", 1)
        for line in Path(f"/proc/{pod_node.runner.pid(pod_node.serve_id)}/status").read_text().splitlines()
        if ":\t" in line
    )
    assert (status["CapEff"], status["CapPrm"], status["NoNewPrivs"], status["Seccomp"]) == (
        "0000000000000000",
        "0000000000000000",
        "1",
        "2",
    )
    assert {m.target: m.read_only for m in serve.mounts if not m.tmpfs} == {
        str(cluster.containerd(POD_NODE).socket.parent): True,
        str(cluster.containerd(POD_NODE).content_root): True,
        str(cluster.kubeconfig): True,
    }


@pytest.mark.lab
def test_an_image_pulled_on_the_node_comes_through_the_containerized_lokal_from_a_peer(
    pod_node: PodNode, tmp_path: Path
) -> None:
    test_the_main_container_from_the_image_gets_ready_with_the_daemonsets_mounts(pod_node)
    cluster = pod_node.cluster
    image = build_image(tmp_path / "app", "v1", [600_000, 200_000], seed=1801)
    reference = cluster.push(image, "image-test/app")
    cluster.pull("node-1", reference)  # node-1 holds it now (from upstream, through its own lokal)
    blobs = {b.digest for b in [image.configs["linux/amd64"], *image.layers["linux/amd64"]]}
    mark, seen = cluster.upstream_mark(), len(cluster.pull_events(POD_NODE))
    result = cluster.pull(POD_NODE, reference)
    assert result.image_ref == image.configs["linux/amd64"].digest
    events = cluster.wait_for_pull_events(POD_NODE, [b.digest for b in image.blobs_for("linux/amd64")])
    lines = {e["digest"]: e for e in events[seen:] if is_local_client(e) and e["method"] == "GET"}
    upstream_blobs = {g.reference for g in cluster.upstream_gets(mark) if g.kind == "blob"}
    assert upstream_blobs == set()
    for digest in blobs:
        line = lines[short_digest(digest)]
        assert (line["result"], line["provider"]) == ("peer", "node-1"), line


# ---------------------------------------------------------------------------------------------------------
# Pure: how a pod's containers become runc containers


def test_command_replaces_the_entrypoint_and_args_the_cmd_as_in_kubernetes() -> None:
    def run(command: tuple[str, ...] | None, args: tuple[str, ...] | None) -> ContainerRun:
        return ContainerRun("c", "img", command, args, {}, (), True, True, True)

    assert process_args(run(None, ("serve",)), ["lokal"], ["--help"]) == ["lokal", "serve"]
    assert process_args(run(None, None), ["lokal"], ["--help"]) == ["lokal", "--help"]
    assert process_args(run(("python", "-c", "x"), None), ["lokal"], ["--help"]) == ["python", "-c", "x"]
    assert process_args(run(("sh",), ("-c", "y")), ["lokal"], ["--help"]) == ["sh", "-c", "y"]


def test_cgroup_mounts_are_rebuilt_from_the_hosts_mountinfo() -> None:
    hybrid = (
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
        "50 23 0:40 / /proc rw - proc proc rw\n"
    )
    assert cgroup_mount_script(hybrid).split(" && ") == [
        "mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup",
        "mkdir -p /sys/fs/cgroup/cpu",
        "mount -t cgroup -o cpu cgroup /sys/fs/cgroup/cpu",
        "mkdir -p /sys/fs/cgroup/systemd",
        "mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd",
        "mkdir -p /sys/fs/cgroup/unified",
        "mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified",
    ]
    unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    assert (
        cgroup_mount_script(unified) == "mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup"
    )
    with pytest.raises(PodError, match="no cgroup mount"):
        cgroup_mount_script("50 23 0:40 / /proc rw - proc proc rw\n")


def test_a_pod_field_the_lab_cannot_translate_is_refused_not_dropped() -> None:
    (daemonset,) = only(helm_render(helm_values(peerToken={"enabled": True})), "DaemonSet")
    with pytest.raises(PodError, match="peer-token"):
        pod_containers(daemonset, {}, "node-1")

"""The documented uninstall sequence (docs/operating.md, "Uninstall"), run command by command with kubectl
against a real kube-apiserver 1.20 and etcd of its own (a deleted namespace never goes away here, so the
session's shared apiserver, which holds lokal's namespace for other tests, cannot be used).

As far as an apiserver without controllers allows: no garbage collector, namespace controller, DaemonSet
controller or kubelet runs, so deletions are only started (`--wait=false`) and
`rollout status` is not run. What the apiserver does enforce is the point: NamespaceLifecycle refuses new
objects in a namespace being deleted, which is the race of the old sequence, made permanent here."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lokal_lab.kube_apiserver import KubeApiServer, missing_parts
from lokal_lab.processes import ProcessGroup

from tests.manifests.test_manifests import REPO, documented_commands

KUBECTL = shutil.which("kubectl")
pytestmark = [
    pytest.mark.real_apiserver,
    pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: it renders and applies"),
]
INSTALL = "kubectl apply -k manifests/overlays/isolate"


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    missing = missing_parts()
    if missing:
        pytest.skip(missing)
    with ProcessGroup() as processes, KubeApiServer(tmp_path / "kube", processes) as api:
        yield api.write_kubeconfig(tmp_path / "admin", direct=True)


def kubectl(kubeconfig: Path, command: str) -> subprocess.CompletedProcess[str]:
    """One documented command, adapted to an apiserver without controllers (see the module's docstring)."""
    assert KUBECTL is not None
    words = shlex.split(command, comments=True)
    assert words[0] == "kubectl", command
    words = [w for w in words[1:] if w != "--wait"]
    if "delete" in words:
        words.append("--wait=false")  # deletions are only started: nothing here would finish them
    if "apply" in words:
        words.append("--validate=false")  # 1.20's schema lacks the DaemonSet's maxSurge (lokal needs 1.25+)
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), *words],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def namespace_phase(kubeconfig: Path) -> str | None:
    found = kubectl(kubeconfig, "kubectl get namespace lokal-system -o json")
    return json.loads(found.stdout)["status"]["phase"] if found.returncode == 0 else None


def test_the_documented_uninstall_runs_through_and_the_old_order_would_not(kubeconfig: Path) -> None:
    assert kubectl(kubeconfig, INSTALL).returncode == 0
    cleanup_applied = False
    for command in documented_commands("Uninstall"):
        if "rollout status" in command:
            continue  # no DaemonSet controller and no kubelet: nothing would ever roll out here
        if command == "kubectl apply -k manifests/uninstall":
            assert namespace_phase(kubeconfig) == "Active"
            cleanup_applied = True
        result = kubectl(kubeconfig, command)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    assert cleanup_applied
    assert kubectl(kubeconfig, "kubectl get clusterrole lokal-node-reader").returncode != 0
    # The namespace is being deleted now, as it was right after the old first step (deleting the whole
    # install): applying the cleanup in that state is refused. That was the old sequence's race.
    assert namespace_phase(kubeconfig) == "Terminating"
    refused = kubectl(kubeconfig, "kubectl apply -k manifests/uninstall")
    assert refused.returncode != 0 and "is being terminated" in refused.stderr

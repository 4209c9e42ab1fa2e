"""Every rendered kustomization, applied with server-side dry-run to a real kube-apiserver (1.20): the
apiserver's own validation, defaulting and admission accept it, and keep every field we wrote but those
newer than 1.20.

1.20 is below lokal's minimum Kubernetes version: its schema has no DaemonSet `rollingUpdate.maxSurge`
(1.21 alpha, 1.22 beta), so kubectl's client-side validation refuses the DaemonSet, and the apiserver drops
the field. The dry-run therefore skips kubectl's validation and checks what the server kept instead."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from lokal_lab.kube_apiserver import KubeApiServer

from tests.manifests.test_manifests import KUSTOMIZATIONS, rendered_text

KUBECTL = shutil.which("kubectl")
APPLY_OPTIONS = ["--validate=false", "-o", "json", "-f", "-"]
pytestmark = [
    pytest.mark.real_apiserver,
    pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: it renders and applies"),
]

# Fields the 1.20 apiserver does not know, so it drops them silently: the minimum Kubernetes version.
NEWER_THAN_1_20 = {("DaemonSet", "spec.updateStrategy.rollingUpdate.maxSurge")}  # 1.21 alpha, 1.25 GA


@pytest.fixture(scope="module")
def admin_kubeconfig(real_apiserver: KubeApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return real_apiserver.write_kubeconfig(tmp_path_factory.mktemp("dry-run") / "admin", direct=True)


def dry_run(kubeconfig: Path, manifest: str) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), "apply", "--dry-run=server", *APPLY_OPTIONS],
        input=manifest,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    return list(answer["items"]) if answer.get("kind") == "List" else [answer]


def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """Every scalar of a document by dotted path (list items by index)."""
    if isinstance(value, dict):
        found: dict[str, Any] = {}
        for key, child in value.items():
            found.update(leaves(child, f"{prefix}.{key}" if prefix else str(key)))
        return found
    if isinstance(value, list):
        found = {}
        for index, child in enumerate(value):
            found.update(leaves(child, f"{prefix}[{index}]"))
        return found
    return {prefix: value}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_apiserver_accepts_every_object_and_keeps_every_field(
    kustomization: str, admin_kubeconfig: Path
) -> None:
    written = [doc for doc in yaml.safe_load_all(rendered_text(kustomization)) if doc]
    accepted = dry_run(admin_kubeconfig, rendered_text(kustomization))
    assert [(o["kind"], o["metadata"]["name"]) for o in accepted] == [
        (o["kind"], o["metadata"]["name"]) for o in written
    ]
    dropped = dropped_fields(written, accepted)
    assert dropped <= NEWER_THAN_1_20, f"the apiserver dropped or changed {sorted(dropped - NEWER_THAN_1_20)}"


def dropped_fields(written: list[dict[str, Any]], accepted: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(kind, field path) of every value we wrote that the apiserver did not keep as written."""
    dropped = set()
    for mine, theirs in zip(written, accepted, strict=True):
        kept = leaves(theirs)
        for path, value in leaves(mine).items():
            if kept.get(path) != value and not _equal_quantity(kept.get(path), value):
                dropped.add((mine["kind"], _without_indexes(path)))
    return dropped


def _without_indexes(path: str) -> str:
    while "[" in path:
        start = path.index("[")
        path = path[:start] + path[path.index("]", start) + 1 :]
    return path


def _equal_quantity(kept: Any, written: Any) -> bool:
    """The apiserver writes numbers it parsed back as strings or the reverse (ports, quantities)."""
    return kept is not None and str(kept) == str(written)

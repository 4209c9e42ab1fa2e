"""The kustomize manifests: every overlay renders offline, passes strict schema validation for the
Kubernetes versions we support, and keeps its security-relevant fields."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl") or ("/usr/bin/kubectl" if Path("/usr/bin/kubectl").exists() else None)
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed: it renders the kustomizations"
)

INSTALLS = ["base", "overlays/isolate", "overlays/prefer", "overlays/per-region"]
KUSTOMIZATIONS = [*INSTALLS, "uninstall"]
KUBERNETES_VERSIONS = ["1.29.0", "1.35.0"]
SETTINGS = {
    "LOKAL_LISTEN",
    "LOKAL_CONTAINERD_SOCKET",
    "LOKAL_CONTAINERD_NAMESPACE",
    "LOKAL_CONFIG_PATH",
    "LOKAL_MIRRORED_REGISTRIES",
    "LOKAL_RESOLVE_TAGS",
    "LOKAL_DISCOVERY",
    "LOKAL_TOPOLOGY_MODE",
    "LOKAL_CROSS_REGION",
    "LOKAL_LOG_FORMAT",
}
CONTENT_STORE = "/var/lib/containerd/io.containerd.content.v1.content"
CERTS_D = "/etc/containerd/certs.d"

Resource = dict[str, Any]


@functools.cache
def rendered_text(kustomization: str) -> str:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(REPO / "manifests" / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered(kustomization: str) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(rendered_text(kustomization)) if doc]


def only(resources: list[Resource], kind: str) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def daemonsets(kustomization: str) -> list[Resource]:
    found = only(rendered(kustomization), "DaemonSet")
    assert found
    return found


def pod(daemonset: Resource) -> Resource:
    spec: Resource = daemonset["spec"]["template"]["spec"]
    return spec


def container(daemonset: Resource, name: str, init: bool = False) -> Resource:
    containers = pod(daemonset)["initContainers" if init else "containers"]
    return next(c for c in containers if c["name"] == name)


def settings_configmap(kustomization: str) -> Resource:
    (configmap,) = only(rendered(kustomization), "ConfigMap")
    return configmap


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kustomization_renders_and_passes_strict_validation(
    kustomization: str, version: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered_text(kustomization))
    result = subprocess.run(
        [str(VALIDATE), "--strict", "--kubernetes-version", version, "--quiet", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_rejects_a_misspelled_field(tmp_path: Path) -> None:
    # Guards the test above: the validator must fail on what it should catch.
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(rendered_text("base").replace("hostNetwork: true", "hostNetwrok: true"))
    result = subprocess.run(
        [str(VALIDATE), "--strict", "--kubernetes-version", "1.29.0", "--quiet", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0


@pytest.mark.parametrize("kustomization", INSTALLS)
def test_the_cluster_role_allows_only_get_list_watch_on_nodes(kustomization: str) -> None:
    (role,) = only(rendered(kustomization), "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]
    assert not only(rendered(kustomization), "Role")


@pytest.mark.parametrize("kustomization", INSTALLS)
def test_the_role_is_bound_to_the_service_account_the_pods_run_as(kustomization: str) -> None:
    resources = rendered(kustomization)
    (binding,) = only(resources, "ClusterRoleBinding")
    (account,) = only(resources, "ServiceAccount")
    (role,) = only(resources, "ClusterRole")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "lokal", "namespace": "lokal-system"}]
    assert account["metadata"] == {**account["metadata"], "name": "lokal", "namespace": "lokal-system"}
    for daemonset in daemonsets(kustomization):
        assert pod(daemonset)["serviceAccountName"] == "lokal"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_everything_namespaced_lives_in_lokal_system(kustomization: str) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for resource in rendered(kustomization):
        if resource["kind"] not in cluster_scoped:
            assert resource["metadata"]["namespace"] == "lokal-system", resource["metadata"]["name"]


@pytest.mark.parametrize("kustomization", INSTALLS)
def test_pods_share_the_node_network_and_still_resolve_cluster_names(kustomization: str) -> None:
    for daemonset in daemonsets(kustomization):
        assert pod(daemonset)["hostNetwork"] is True
        assert pod(daemonset)["dnsPolicy"] == "ClusterFirstWithHostNet"


@pytest.mark.parametrize("kustomization", INSTALLS)
def test_the_node_name_comes_from_the_downward_api(kustomization: str) -> None:
    for daemonset in daemonsets(kustomization):
        env = container(daemonset, "lokal")["env"]
        assert {"name": "LOKAL_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in env


@pytest.mark.parametrize("kustomization", INSTALLS)
def test_both_containers_take_their_settings_from_the_rendered_configmap(kustomization: str) -> None:
    configmap = settings_configmap(kustomization)
    assert set(configmap["data"]) == SETTINGS
    for daemonset in daemonsets(kustomization):
        for piece in (container(daemonset, "configure", init=True), container(daemonset, "lokal")):
            assert piece["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]


@pytest.mark.parametrize("kustomization", INSTALLS)
def test_init_container_configures_and_main_container_serves(kustomization: str) -> None:
    for daemonset in daemonsets(kustomization):
        assert container(daemonset, "configure", init=True)["args"] == ["configure"]
        assert container(daemonset, "lokal")["args"] == ["serve"]


@pytest.mark.parametrize("kustomization", INSTALLS)
def test_socket_and_content_store_are_read_only_and_only_init_mounts_certs_d(kustomization: str) -> None:
    for daemonset in daemonsets(kustomization):
        volumes = {v["name"]: v for v in pod(daemonset)["volumes"]}
        serve_mounts = {m["mountPath"]: m for m in container(daemonset, "lokal")["volumeMounts"]}
        init_mounts = {
            m["mountPath"]: m for m in container(daemonset, "configure", init=True)["volumeMounts"]
        }

        for path in ("/run/containerd", CONTENT_STORE):
            assert serve_mounts[path]["readOnly"] is True
        assert volumes[serve_mounts[CONTENT_STORE]["name"]]["hostPath"]["path"] == CONTENT_STORE
        assert volumes[serve_mounts["/run/containerd"]["name"]]["hostPath"]["path"] == "/run/containerd"
        assert CERTS_D not in serve_mounts
        assert set(init_mounts) == {CERTS_D}
        assert volumes[init_mounts[CERTS_D]["name"]]["hostPath"]["path"] == CERTS_D
        host_paths = {v["hostPath"]["path"] for v in volumes.values() if "hostPath" in v}
        assert host_paths == {"/run/containerd", CONTENT_STORE, CERTS_D}


@pytest.mark.parametrize("kustomization", INSTALLS)
def test_probes_check_healthz_and_readyz_on_the_lokal_port(kustomization: str) -> None:
    for daemonset in daemonsets(kustomization):
        serve = container(daemonset, "lokal")
        ports = {p["name"]: p for p in serve["ports"]}
        assert ports["http"]["containerPort"] == 5050 and ports["http"]["hostPort"] == 5050
        assert serve["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert serve["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert serve["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert settings_configmap(kustomization)["data"]["LOKAL_LISTEN"].endswith(":5050")


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_containers_run_as_root_with_every_capability_dropped_and_no_escalation(kustomization: str) -> None:
    for daemonset in daemonsets(kustomization):
        spec = pod(daemonset)
        assert spec["securityContext"]["runAsUser"] == 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for piece in [*spec.get("initContainers", []), *spec["containers"]]:
            context = piece["securityContext"]
            assert context["capabilities"] == {"drop": ["ALL"]}, piece["name"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["privileged"] is False
            assert set(piece["resources"]) == {"requests", "limits"}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_node_is_reached_whatever_its_taints(kustomization: str) -> None:
    for daemonset in daemonsets(kustomization):
        assert pod(daemonset)["tolerations"] == [{"operator": "Exists"}]
        assert pod(daemonset)["priorityClassName"] == "system-node-critical"
        assert daemonset["spec"]["updateStrategy"]["type"] == "RollingUpdate"


@pytest.mark.parametrize(
    ("kustomization", "mode", "cross_region"),
    [
        ("overlays/isolate", "isolate", "never"),
        ("overlays/prefer", "prefer", "always"),
        ("overlays/per-region", "isolate", "never"),
    ],
)
def test_overlays_choose_their_topology_mode(kustomization: str, mode: str, cross_region: str) -> None:
    data = settings_configmap(kustomization)["data"]
    assert (data["LOKAL_TOPOLOGY_MODE"], data["LOKAL_CROSS_REGION"]) == (mode, cross_region)


def test_per_region_runs_one_daemonset_per_region_with_disjoint_selectors() -> None:
    found = daemonsets("overlays/per-region")
    regions = {
        ds["metadata"]["name"]: pod(ds)["nodeSelector"]["topology.kubernetes.io/region"] for ds in found
    }
    assert regions == {"lokal-eu-west-1": "eu-west-1", "lokal-us-east-1": "us-east-1"}
    selectors = [ds["spec"]["selector"]["matchLabels"] for ds in found]
    assert selectors[0] != selectors[1]
    for ds in found:
        assert (
            ds["spec"]["selector"]["matchLabels"].items()
            <= ds["spec"]["template"]["metadata"]["labels"].items()
        )
    assert len(only(rendered("overlays/per-region"), "ConfigMap")) == 1


def test_uninstall_runs_cleanup_on_every_node_with_only_certs_d_mounted() -> None:
    (daemonset,) = daemonsets("uninstall")
    cleanup = container(daemonset, "cleanup", init=True)
    assert cleanup["args"][0] == "cleanup"
    assert cleanup["args"][cleanup["args"].index("--config-path") + 1] == CERTS_D
    assert [m["mountPath"] for m in cleanup["volumeMounts"]] == [CERTS_D]
    assert pod(daemonset)["automountServiceAccountToken"] is False
    assert {r["kind"] for r in rendered("uninstall")} == {"Namespace", "DaemonSet"}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_container_uses_the_same_pinned_image(kustomization: str) -> None:
    images = {
        piece["image"]
        for daemonset in daemonsets(kustomization)
        for piece in [*pod(daemonset)["initContainers"], *pod(daemonset)["containers"]]
    }
    assert len(images) == 1
    (image,) = images
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")

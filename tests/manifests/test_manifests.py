"""The kustomize manifests: every overlay (and every Component on top of one) renders offline, passes strict
schema validation for the Kubernetes versions we support, and keeps its security-relevant fields. The
kubectl commands that docs/operating.md gives are checked against what the manifests render."""

from __future__ import annotations

import functools
import os
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


# -- uninstall, optional Components, and the kubectl commands the docs give --------------------------------

OPERATING = REPO / "docs" / "operating.md"
DISTRIBUTIONS = {
    "k3s": (
        "/run/k3s/containerd",
        "/var/lib/rancher/k3s/agent/containerd/io.containerd.content.v1.content",
        "/var/lib/rancher/k3s/agent/etc/containerd/certs.d",
    ),
    "rke2": (
        "/run/k3s/containerd",
        "/var/lib/rancher/rke2/agent/containerd/io.containerd.content.v1.content",
        "/var/lib/rancher/rke2/agent/etc/containerd/certs.d",
    ),
}


def rendered_with(kustomization: str, component: str, workdir: Path) -> list[Resource]:
    """An operator's overlay: one of ours as the resource, plus one of our Components."""
    assert KUBECTL is not None
    workdir.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(REPO / "manifests", workdir)
    (workdir / "kustomization.yaml").write_text(
        f"resources:\n  - {relative}/{kustomization}\ncomponents:\n  - {relative}/{component}\n"
    )
    result = subprocess.run(
        [KUBECTL, "kustomize", str(workdir)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    (workdir / "rendered.yaml").write_text(result.stdout)
    validated = subprocess.run(
        [
            str(VALIDATE),
            "--strict",
            "--kubernetes-version",
            KUBERNETES_VERSIONS[-1],
            "--quiet",
            str(workdir / "rendered.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def selects(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selector (`a=b,c=d`), as kubectl -l reads it."""
    pairs = [term.split("=", 1) for term in selector.split(",")]
    return all(labels.get(key) == value for key, value in pairs)


def documented_commands(section: str) -> list[str]:
    text = OPERATING.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = body.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def flag(command: str, name: str) -> str:
    words = command.split()
    return words[words.index(name) + 1].rstrip(")")


def test_the_cleanup_pod_starts_on_a_node_without_certs_d() -> None:
    # hostPath type Directory keeps the pod from starting where the directory is missing, so the
    # documented `rollout status` would never end on such a node.
    (daemonset,) = daemonsets("uninstall")
    (volume,) = pod(daemonset)["volumes"]
    assert volume["hostPath"] == {"path": CERTS_D, "type": "DirectoryOrCreate"}


@pytest.mark.parametrize("install", ["overlays/isolate", "overlays/prefer", "overlays/per-region"])
def test_the_documented_uninstall_stops_lokal_and_cleans_up_before_anything_deletes_the_namespace(
    install: str,
) -> None:
    commands = documented_commands("Uninstall")
    # Step 1 deletes only the mirror DaemonSets, by a selector that finds them in every layout.
    stop = commands[0]
    assert stop.startswith("kubectl -n lokal-system delete daemonset -l ") and " -k " not in stop
    selector = flag(stop, "-l")
    install_sets = daemonsets(install)
    assert all(selects(selector, ds["metadata"]["labels"]) for ds in install_sets)
    assert not any(selects(selector, ds["metadata"]["labels"]) for ds in daemonsets("uninstall"))
    # Step 2 creates the cleanup DaemonSet and waits for it, before any command deletes a Namespace.
    apply_at = commands.index("kubectl apply -k manifests/uninstall")
    waits = [i for i, c in enumerate(commands) if "rollout status daemonset/lokal-cleanup" in c]
    assert waits and waits[0] > apply_at
    (cleanup,) = daemonsets("uninstall")
    assert cleanup["metadata"]["name"] == "lokal-cleanup"
    deletes_namespace = [
        i
        for i, c in enumerate(commands)
        if " delete -k " in c
        and only(rendered(c.split(" -k ")[1].split()[0].removeprefix("manifests/")), "Namespace")
    ]
    assert deletes_namespace and min(deletes_namespace) > waits[0]
    # Step 3 removes what is left, tolerating what is already gone.
    assert all("--ignore-not-found" in commands[i] for i in deletes_namespace)


@pytest.mark.parametrize("install", INSTALLS)
def test_the_peer_token_component_mounts_the_secret_where_the_setting_points(
    install: str, tmp_path: Path
) -> None:
    resources = rendered_with(install, "peer-token", tmp_path / "overlay")
    (configmap,) = only(resources, "ConfigMap")
    token_file = Path(configmap["data"]["LOKAL_PEER_TOKEN_FILE"])
    for daemonset in only(resources, "DaemonSet"):
        volumes = {v["name"]: v for v in pod(daemonset)["volumes"]}
        mounts = {m["mountPath"]: m for m in container(daemonset, "lokal")["volumeMounts"]}
        mount = mounts[str(token_file.parent)]  # the directory, so that Secret updates reach the file
        assert mount["readOnly"] is True and "subPath" not in mount
        assert volumes[mount["name"]]["secret"]["secretName"] == "lokal-peer-token"
        init_mounts = container(daemonset, "configure", init=True)["volumeMounts"]
        assert all(m["name"] != mount["name"] for m in init_mounts)


@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("kustomization", ["overlays/isolate", "overlays/per-region", "uninstall"])
def test_distribution_components_point_every_path_at_the_distribution(
    distribution: str, kustomization: str, tmp_path: Path
) -> None:
    socket_dir, content, certs_d = DISTRIBUTIONS[distribution]
    resources = rendered_with(kustomization, f"distributions/{distribution}", tmp_path / "overlay")
    for daemonset in only(resources, "DaemonSet"):
        volumes = {v["name"]: v["hostPath"]["path"] for v in pod(daemonset)["volumes"] if "hostPath" in v}
        if kustomization == "uninstall":
            assert volumes == {"certs-d": certs_d}
            continue
        assert volumes == {"containerd-run": socket_dir, "content-store": content, "certs-d": certs_d}
        serve = {m["name"]: m["mountPath"] for m in container(daemonset, "lokal")["volumeMounts"]}
        init_container = container(daemonset, "configure", init=True)
        init = {m["name"]: m["mountPath"] for m in init_container["volumeMounts"]}
        # Same paths as on the host: lokal compares its config path with containerd's, and learns the
        # content root from containerd.
        mounted = (serve["containerd-run"], serve["content-store"], init["certs-d"])
        assert mounted == (socket_dir, content, certs_d)
    if kustomization != "uninstall":
        (configmap,) = only(resources, "ConfigMap")
        assert configmap["data"]["LOKAL_CONTAINERD_SOCKET"] == f"{socket_dir}/containerd.sock"
        assert configmap["data"]["LOKAL_CONFIG_PATH"] == certs_d


@pytest.mark.parametrize("install", INSTALLS)
def test_the_documented_log_commands_find_the_lokal_pods_in_every_layout(install: str) -> None:
    section = "Reading the logs when a pull is slow or misses"
    commands = [c for c in documented_commands(section) if " logs " in c]
    assert commands
    for command in commands:
        assert "daemonset/" not in command, command  # names differ per layout (lokal, lokal-<region>)
        for daemonset in daemonsets(install):
            labels = daemonset["spec"]["template"]["metadata"]["labels"]
            assert selects(flag(command, "-l"), labels), command

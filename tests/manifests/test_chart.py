"""The Helm chart (charts/lokal), rendered and linted by Helm's own engine (helm-python-sdk, offline):
it passes strict lint and strict schema validation, refuses bad values naming them, and renders the same
DaemonSet, RBAC, ServiceAccount and settings as the kustomize manifests for every matching pair of
(kustomization, values): the two install paths cannot drift apart."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests.render import (
    CHART,
    KUBECTL,
    REPO,
    Resource,
    helm_render,
    helm_values,
    kustomize,
    kustomize_with,
    only,
    validate,
)

helm = pytest.importorskip("helm_python", reason="helm-python-sdk renders the chart (pip install -e .[dev])")

# Labels only Helm's conventions add; everything else must match kustomize's output exactly.
HELM_ONLY_KEYS = {
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
    "checksum/settings",  # Helm's way to roll on a settings change; kustomize hashes the ConfigMap's name
}
COMPARED_KINDS = {
    "DaemonSet",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "Service",
    "ServiceMonitor",
}

# (kustomize base, kustomize components) and the chart values meant to install the same thing.
EQUIVALENTS: list[tuple[str, list[str], dict[str, Any]]] = [
    ("overlays/isolate", [], helm_values()),
    ("overlays/prefer", [], helm_values(topology={"mode": "prefer", "crossRegion": "always"})),
    ("overlays/isolate", ["monitoring"], helm_values(monitoring={"enabled": True})),
    ("overlays/isolate", ["peer-token"], helm_values(peerToken={"enabled": True})),
    ("overlays/isolate", ["distributions/k3s"], helm_values("values-k3s.yaml")),
    ("overlays/isolate", ["distributions/rke2"], helm_values("values-rke2.yaml")),
    (
        "overlays/prefer",
        ["monitoring", "peer-token", "distributions/rke2"],
        helm_values(
            "values-rke2.yaml",
            topology={"mode": "prefer", "crossRegion": "always"},
            monitoring={"enabled": True},
            peerToken={"enabled": True},
        ),
    ),
]
VALUE_SETS = {
    "defaults": helm_values(),
    "prefer": helm_values(topology={"mode": "prefer", "crossRegion": "always"}),
    "k3s": helm_values("values-k3s.yaml"),
    "rke2": helm_values("values-rke2.yaml"),
    "everything": helm_values(
        "values-rke2.yaml",
        monitoring={"enabled": True},
        peerToken={"enabled": True, "tokens": ["a" * 32, "b" * 32]},
        registries={"upstream": {"docker.io": "https://registry-1.docker.io"}, "prependExisting": True},
        topology={"regionLabel": "example.com/region", "zoneLabel": "example.com/zone"},
        nodeSelector={"kubernetes.io/os": "linux"},
        image={"digest": "sha256:" + "0" * 64},
    ),
}
# The oldest Kubernetes the chart's kubeVersion admits, and the newest schema we have.
MINIMUM_KUBERNETES = "1.25.0"
NEWEST_KUBERNETES = "1.35.0"


def normalized(resources: list[Resource], hashed_configmaps: bool = False) -> dict[tuple[str, str], Any]:
    """The compared objects by (kind, name), without Helm's own labels and annotations; a ConfigMap is its
    data. `hashed_configmaps`: kustomize's output, whose ConfigMap names end in a content hash."""
    renames = {}
    if hashed_configmaps:
        for configmap in only(resources, "ConfigMap"):
            name = configmap["metadata"]["name"]
            renames[name] = re.sub(r"-[a-z0-9]{10}$", "", name)
    found: dict[tuple[str, str], Any] = {}
    for resource in resources:
        if resource["kind"] not in COMPARED_KINDS:
            continue
        name = renames.get(resource["metadata"]["name"], resource["metadata"]["name"])
        body = yaml.safe_load(_rename(yaml.safe_dump(_drop_keys(resource)), renames))
        found[(resource["kind"], name)] = {"data": body["data"]} if resource["kind"] == "ConfigMap" else body
    return found


def _drop_keys(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {k: _drop_keys(v) for k, v in value.items() if k not in HELM_ONLY_KEYS}
        return {k: v for k, v in kept.items() if v != {} or k not in {"labels", "annotations"}}
    if isinstance(value, list):
        return [_drop_keys(v) for v in value]
    return value


def _rename(text: str, renames: dict[str, str]) -> str:
    for old, new in renames.items():
        text = re.sub(rf"\b{re.escape(old)}\b", new, text)
    return text


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: it renders the kustomizations")
@pytest.mark.parametrize(
    ("base", "components", "values"),
    EQUIVALENTS,
    ids=[f"{base}+{','.join(components) or 'nothing'}" for base, components, _ in EQUIVALENTS],
)
def test_chart_and_kustomize_render_the_same_install(
    base: str, components: list[str], values: dict[str, Any], tmp_path: Path
) -> None:
    from_kustomize = normalized(kustomize_with(tmp_path, base, components), hashed_configmaps=True)
    from_helm = normalized(helm_render(values))
    assert sorted(from_helm) == sorted(from_kustomize)
    for key, body in from_kustomize.items():
        assert from_helm[key] == body, key


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: it renders the kustomizations")
def test_the_drift_check_sees_a_changed_setting(tmp_path: Path) -> None:
    # Guards the test above: one setting apart must not compare equal.
    from_kustomize = normalized(kustomize_with(tmp_path, "overlays/isolate", []), hashed_configmaps=True)
    from_helm = normalized(helm_render(helm_values(logFormat="text")))
    configmaps = [key for key in from_kustomize if key[0] == "ConfigMap"]
    assert configmaps and all(from_helm[key] != from_kustomize[key] for key in configmaps)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_chart_passes_strict_lint(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{MINIMUM_KUBERNETES}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("version", [MINIMUM_KUBERNETES, NEWEST_KUBERNETES])
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_chart_output_passes_strict_schema_validation(
    values: dict[str, Any], version: str, tmp_path: Path
) -> None:
    resources = [r for r in helm_render(values) if r["kind"] != "ServiceMonitor"]  # a CRD: no schema here
    result = validate(resources, version, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_catches_a_misspelled_chart_field(tmp_path: Path) -> None:
    resources = helm_render()
    (daemonset,) = only(resources, "DaemonSet")
    daemonset["spec"]["template"]["spec"]["hostNetwrok"] = True
    assert validate(resources, MINIMUM_KUBERNETES, tmp_path).returncode != 0


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"topology": {"mode": "isolated"}}, "/topology/mode"),
        ({"topology": {"crossRegion": "sometimes"}}, "/topology/crossRegion"),
        ({"topology": {"regionLabel": "not a label"}}, "/topology/regionLabel"),
        ({"containerd": {"configPath": "etc/containerd/certs.d"}}, "/containerd/configPath"),
        ({"registries": {"mirrored": []}}, "/registries/mirrored"),
        ({"peerToken": {"enabled": True, "tokens": ["short"]}}, "/peerToken/tokens/0"),
        ({"port": 70000}, "/port"),
        ({"mode": "prefer"}, "'mode' not allowed"),  # a misplaced value is refused, not ignored
    ],
)
def test_a_bad_value_is_refused_with_its_name(values: dict[str, Any], named: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(named)):
        helm_render(values)


def test_every_setting_the_chart_writes_is_one_lokal_reads() -> None:
    # The names come from lokal itself (`serve --help` lists each LOKAL_* variable; `configure` reads
    # LOKAL_<FLAG>), so a renamed setting fails here instead of being silently ignored on a cluster.
    env = {**os.environ, "COLUMNS": "200"}
    lokal = [sys.executable, "-m", "sidecar"]
    serve = subprocess.run([*lokal, "serve", "--help"], capture_output=True, text=True, env=env, check=True)
    configure = subprocess.run(
        [*lokal, "configure", "--help"], capture_output=True, text=True, env=env, check=True
    )
    known = set(re.findall(r"\bLOKAL_[A-Z0-9_]+", serve.stdout)) | {
        "LOKAL_" + flag.upper().replace("-", "_")
        for flag in re.findall(r"--([a-z][a-z-]+)", configure.stdout)
    }
    written = {
        name
        for values in VALUE_SETS.values()
        for configmap in only(helm_render(values), "ConfigMap")
        for name in configmap["data"]
    }
    assert written and written <= known, written - known


def test_a_settings_change_rolls_the_daemonset_and_nothing_else_does() -> None:
    def checksum(values: dict[str, Any]) -> str:
        (daemonset,) = only(helm_render(values), "DaemonSet")
        value: str = daemonset["spec"]["template"]["metadata"]["annotations"]["checksum/settings"]
        return value

    assert checksum(helm_values(topology={"mode": "prefer"})) != checksum(helm_values())
    assert checksum(helm_values(nodeSelector={"a": "b"})) == checksum(helm_values())


def test_k3s_and_rke2_values_mount_each_path_where_the_settings_point() -> None:
    for name in ("values-k3s.yaml", "values-rke2.yaml"):
        resources = helm_render(helm_values(name))
        (daemonset,) = only(resources, "DaemonSet")
        (configmap,) = only(resources, "ConfigMap")
        spec = daemonset["spec"]["template"]["spec"]
        host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
        serve = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        init = {m["name"]: m["mountPath"] for m in spec["initContainers"][0]["volumeMounts"]}
        containerd = yaml.safe_load((CHART / name).read_text())["containerd"]
        socket_dir = str(Path(containerd["socket"]).parent)
        assert configmap["data"]["LOKAL_CONTAINERD_SOCKET"] == containerd["socket"]
        assert configmap["data"]["LOKAL_CONFIG_PATH"] == containerd["configPath"] == init["certs-d"]
        assert host_paths == {
            "containerd-run": socket_dir,
            "content-store": containerd["contentRoot"],
            "certs-d": containerd["configPath"],
        }
        assert serve["containerd-run"] == socket_dir and serve["content-store"] == containerd["contentRoot"]


def test_peer_token_secret_is_mounted_as_a_directory_and_named_in_the_settings() -> None:
    tokens = ["t" * 20, "u" * 20]
    resources = helm_render(helm_values(peerToken={"enabled": True, "tokens": tokens}))
    (secret,) = only(resources, "Secret")
    assert secret["stringData"]["tokens"].split() == tokens
    (daemonset,) = only(resources, "DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "peer-token")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "peer-token")
    assert "subPath" not in mount and mount["readOnly"] is True
    (configmap,) = only(resources, "ConfigMap")
    assert configmap["data"]["LOKAL_PEER_TOKEN_FILE"] == mount["mountPath"] + "/tokens"
    # Without tokens in the values, the chart mounts a Secret the operator creates, and creates none.
    own = helm_render(helm_values(peerToken={"enabled": True, "secretName": "mine"}))
    assert not only(own, "Secret")
    (daemonset,) = only(own, "DaemonSet")
    assert {"secretName": "mine", "defaultMode": 0o400} in [
        v.get("secret") for v in daemonset["spec"]["template"]["spec"]["volumes"]
    ]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: it renders the kustomizations")
def test_chart_image_is_the_one_the_manifests_deploy() -> None:
    def images(resources: list[Resource]) -> set[str]:
        return {
            piece["image"]
            for daemonset in only(resources, "DaemonSet")
            for kind in ("initContainers", "containers")
            for piece in daemonset["spec"]["template"]["spec"][kind]
        }

    with helm.Chart.load(CHART) as chart:
        app_version = chart.metadata["appVersion"]
    from_chart = images(helm_render())
    assert from_chart == images(kustomize(REPO / "manifests" / "overlays" / "isolate"))
    assert from_chart == {f"ghcr.io/lokal/lokal:{app_version}"}


def test_the_minimum_kubernetes_version_is_the_same_in_the_chart_and_the_docs() -> None:
    with helm.Chart.load(CHART) as chart:
        kube_version = chart.metadata["kubeVersion"]
    assert kube_version == f">={MINIMUM_KUBERNETES}-0"
    operating = (REPO / "docs" / "operating.md").read_text()
    minor = MINIMUM_KUBERNETES.rsplit(".", 1)[0]
    assert f"Kubernetes {minor} or newer" in operating

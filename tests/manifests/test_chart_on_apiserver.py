"""The Helm chart against a real kube-apiserver (1.20, with etcd): every object it renders passes the
server's own validation, defaulting and admission in a server-side dry-run and keeps every field we wrote
but those newer than 1.20; and Helm itself, asked to install on that 1.20, refuses with the chart's
kubeVersion (without it, Helm would refuse later, on the DaemonSet's maxSurge: the reason for the
minimum)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from lokal_lab.kube_apiserver import KubeApiServer

from tests.manifests.render import CHART, NAMESPACE, RELEASE, helm_render, only
from tests.manifests.test_chart import VALUE_SETS, helm
from tests.manifests.test_server_dry_run import (
    KUBECTL,
    NEWER_THAN_1_20,
    dropped_fields,
    dry_run,
)

pytestmark = [
    pytest.mark.real_apiserver,
    pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: it applies the dry-run"),
]
# The Prometheus Operator's CRD is not on this apiserver; the Service beside it is.
WITHOUT_CRD = {"ServiceMonitor"}


@pytest.fixture(scope="module")
def admin_kubeconfig(real_apiserver: KubeApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return real_apiserver.write_kubeconfig(tmp_path_factory.mktemp("chart-dry-run") / "admin", direct=True)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_the_apiserver_accepts_every_chart_object_and_keeps_every_field(
    values: dict[str, Any], admin_kubeconfig: Path
) -> None:
    written = [r for r in helm_render(values) if r["kind"] not in WITHOUT_CRD]
    accepted = dry_run(admin_kubeconfig, yaml.safe_dump_all(written))
    assert [(o["kind"], o["metadata"]["name"]) for o in accepted] == [
        (o["kind"], o["metadata"]["name"]) for o in written
    ]
    for secret in only(written, "Secret"):  # the apiserver keeps stringData as data, base64
        secret["data"] = {
            k: base64.b64encode(v.encode()).decode() for k, v in secret.pop("stringData").items()
        }
    dropped = dropped_fields(written, accepted)
    assert dropped <= NEWER_THAN_1_20, f"the apiserver dropped or changed {sorted(dropped - NEWER_THAN_1_20)}"


def test_helm_refuses_to_install_on_a_kubernetes_older_than_the_minimum(
    admin_kubeconfig: Path, tmp_path: Path
) -> None:
    with helm.Config(kubeconfig_path=admin_kubeconfig, namespace=NAMESPACE) as config:
        # (This apiserver, built from Debian's source without version stamps, says v0.0.0-master+...)
        with pytest.raises(helm.HelmError, match=r"kubeVersion: >=1\.25\.0-0 which is incompatible"):
            config.install(CHART, RELEASE, dry_run="server", namespace=NAMESPACE)
        # Without the gate, the same dry-run fails later and darker: Helm checks the objects against the
        # server's schema, which has no DaemonSet maxSurge before 1.21. The gate says it up front.
        lowered = tmp_path / "lokal"
        with helm.Chart.load(CHART) as chart:
            chart.save_dir(tmp_path)
        metadata = yaml.safe_load((lowered / "Chart.yaml").read_text())
        del metadata["kubeVersion"]
        (lowered / "Chart.yaml").write_text(yaml.safe_dump(metadata))
        with pytest.raises(helm.HelmError, match=r'unknown field "maxSurge"'):
            config.install(lowered, RELEASE, dry_run="server", namespace=NAMESPACE)

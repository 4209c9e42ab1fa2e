"""The startup check of containerd's configuration, against real containerd instances; and a real pull
through the hosts.toml files `lokal configure` writes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lokal_lab.containerd import ContainerdInstance
from lokal_lab.cri import CriClient
from lokal_lab.images import BuiltImage, build_image, push_image
from lokal_lab.processes import ProcessGroup
from lokal_lab.registry import RegistryInstance

from sidecar.containerd.cri_config import check_containerd, check_cri_config
from tests.conftest import needs_real_parts
from tests.registry.lokal_process import LokalProcess

NAME = "registry.lokal.test"  # not localhost: containerd's plain-HTTP fallback for localhost hides nothing


def upstream_and_node(
    processes: ProcessGroup, tmp_path: Path, repository: str, seed: int, node: str
) -> tuple[RegistryInstance, BuiltImage, ContainerdInstance]:
    """A registry holding one image, and a containerd whose hosts.toml sends `NAME` to it (as an operator's
    own file would)."""
    upstream = RegistryInstance(tmp_path / "upstream")
    upstream.start(processes)
    image = build_image(tmp_path / "layout", "v1", [300_000], seed=seed)
    push_image(image, upstream.address, repository)
    containerd = ContainerdInstance(tmp_path / node)
    containerd.start(processes)
    containerd.write_hosts(NAME, f"http://{upstream.address}")
    return upstream, image, containerd


def test_the_check_is_quiet_for_a_good_config_and_names_each_problem() -> None:
    good = {"registry": {"configPath": "/etc/containerd/certs.d"}, "containerd": {}}
    assert check_cri_config(good, "/etc/containerd/certs.d/") == []
    unset = check_cri_config({"registry": {"configPath": ""}}, "/etc/containerd/certs.d")
    assert len(unset) == 1 and "config_path is empty" in unset[0]
    discard = {"registry": {"configPath": "/a:/etc/containerd/certs.d"},
               "containerd": {"discardUnpackedLayers": True}}
    assert ["discard_unpacked_layers" in w for w in check_cri_config(discard, "/etc/containerd/certs.d")] == [
        True
    ]
    assert check_cri_config({}, "/x")  # unreadable shape: warn rather than assume


CRI_2X: dict[str, object] = {"containerd": {"defaultRuntimeName": "runc"}, "cni": {}}  # no "registry"
HOSTS = "/etc/containerd/certs.d"
FILE = "/etc/containerd/config.toml"
V3 = (
    'version = 3\n[plugins."io.containerd.cri.v1.images"]\n  discard_unpacked_layers = {discard}\n'
    '[plugins."io.containerd.cri.v1.images".registry]\n  config_path = "{path}"\n'
)


def test_on_2x_without_the_config_file_the_check_says_it_cannot_be_made_and_warns_about_nothing() -> None:
    check = check_containerd(CRI_2X, HOSTS, FILE, {FILE: None}, "2.1.9")
    assert check.warnings == []
    assert check.unchecked is not None and "#10780" in check.unchecked and FILE in check.unchecked


def test_on_2x_the_config_file_is_checked_in_either_config_version() -> None:
    good = {FILE: V3.format(discard="false", path="/x:" + HOSTS)}
    assert check_containerd(CRI_2X, HOSTS, FILE, good, "2.1.9").warnings == []
    assert check_containerd(CRI_2X, HOSTS, FILE, good, "2.1.9").source == FILE
    bad = check_containerd(CRI_2X, HOSTS, FILE, {FILE: V3.format(discard="true", path="/other")}, "2.1.9")
    assert len(bad.warnings) == 2 and "/other" in bad.warnings[0] and "discard" in bad.warnings[1]
    v2 = f'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "{HOSTS}"\n'
    assert check_containerd(CRI_2X, HOSTS, FILE, {FILE: v2}, "2.0.4").warnings == []


def test_on_2x_an_unset_config_path_takes_the_versions_default_and_imports_count() -> None:
    unset: dict[str, str | None] = {FILE: "version = 3\n"}
    assert "empty" in check_containerd(CRI_2X, HOSTS, FILE, unset, "2.1.9").warnings[0]
    assert check_containerd(CRI_2X, HOSTS, FILE, unset, "2.2.0").warnings == []  # certs.d by default
    imported: dict[str, str | None] = {
        FILE: 'version = 3\nimports = ["conf.d/*.toml"]\n',
        "/etc/containerd/conf.d/10-lokal.toml": V3.format(discard="false", path=HOSTS),
    }
    assert check_containerd(CRI_2X, HOSTS, FILE, imported, "2.1.9").warnings == []
    unreadable = {**imported, "/etc/containerd/conf.d/10-lokal.toml": None}
    check = check_containerd(CRI_2X, HOSTS, FILE, unreadable, "2.1.9")
    assert check.warnings == [] and check.unchecked and "10-lokal.toml" in check.unchecked


def _readyz_warnings(lokal: LokalProcess) -> list[str]:
    for _ in range(100):
        # The log first: config_checked is written after the warnings are kept, so a /readyz asked after
        # seeing it cannot be older than the check.
        checked = any('"config_checked"' in line for line in lokal.log_lines())
        _, _, body = lokal.request("GET", "/readyz")
        warnings: list[str] = json.loads(body).get("warnings", [])
        if warnings or checked:
            return warnings
        time.sleep(0.05)
    pytest.fail("lokal never logged config_checked: the containerd config check did not run")


@needs_real_parts
@pytest.mark.containerd_matrix
@pytest.mark.parametrize(
    ("enabled", "file_mounted"),
    [(False, True), (True, True), (True, False)],
    ids=["without-config_path", "with-config_path", "config-file-not-mounted"],
)
def test_containerd_without_config_path_gets_a_warning_and_with_it_none(
    processes: ProcessGroup, tmp_path: Path, enabled: bool, file_mounted: bool
) -> None:
    node = ContainerdInstance(tmp_path / "ctd", config_path_enabled=enabled)
    node.start(processes)
    config_file = node.directory / "config.toml" if file_mounted else tmp_path / "not-mounted.toml"
    lokal = LokalProcess(
        processes, tmp_path / "lokal.log", "--containerd-socket", str(node.socket),
        "--discovery", "none", "--config-path", str(node.certs_d), "--containerd-config", str(config_file),
    )
    warnings = _readyz_warnings(lokal)
    lines = [json.loads(line) for line in lokal.log_lines() if line.startswith("{")]
    logged = [entry["warning"] for entry in lines if entry.get("event") == "config_warning"]
    checked = [entry for entry in lines if entry.get("event") == "config_checked"]
    unchecked = [entry for entry in lines if entry.get("event") == "config_unchecked"]
    # 1.x shows its registry settings through CRI; 2.x only in its config file, or not at all.
    said = json.loads(lokal.request("GET", "/_lokal/debug/status")[2])["containerd"]["config_check"]
    if node.version.major < 2:
        assert checked[0]["source"] == "CRI status" and unchecked == []
        assert said == "read from CRI status"
    elif file_mounted:
        assert checked[0]["source"] == str(config_file) and unchecked == []
        assert said == f"read from {config_file}"
    else:  # nothing to check with: say so (log and lokal status), and never warn
        assert checked[0]["checked"] is False and "#10780" in unchecked[0]["reason"]
        assert said == unchecked[0]["reason"]
        assert warnings == [] and logged == []
        return
    if enabled:
        assert warnings == [] and logged == []
    else:
        assert len(warnings) == 1 and "config_path" in warnings[0]
        assert logged == warnings


@needs_real_parts
@pytest.mark.containerd_matrix  # the generated dial_timeout: honoured by 2.1, ignored without error by 1.x
@pytest.mark.parametrize("prepend", [False, True], ids=["plain", "prepend-existing"])
def test_a_real_pull_goes_through_lokal_with_the_files_lokal_configure_wrote(
    processes: ProcessGroup, tmp_path: Path, prepend: bool
) -> None:
    """A registry name that is not localhost, so that containerd's plain-HTTP fallback for localhost
    cannot hide a file it rejected: the name only resolves through the hosts.toml `server`."""
    upstream, image, holder = upstream_and_node(processes, tmp_path, "cfg/app", seed=3, node="holder")
    name = NAME
    with CriClient(holder.socket) as cri:
        cri.pull(f"{name}/cfg/app:v1")
    lokal = LokalProcess(
        processes, tmp_path / "lokal.log", "--containerd-socket", str(holder.socket),
        "--discovery", "none", "--mirrored-registries", name,
    )
    puller = ContainerdInstance(tmp_path / "puller")
    puller.start(processes)
    if prepend:  # the operator already had a mirror (here: the real upstream) for this registry
        puller.write_hosts(name, f"http://{upstream.address}")
    args = [
        sys.executable, "-m", "sidecar", "configure", "--config-path", str(puller.certs_d),
        "--mirrored-registries", name, "--listen", f"0.0.0.0:{lokal.port}",
        "--upstream", f"{name}=http://{upstream.address}",
    ] + (["--prepend-existing"] if prepend else [])
    subprocess.run(args, check=True, capture_output=True, timeout=60)

    if not prepend:
        upstream.stop()  # every byte must come through lokal
    with CriClient(puller.socket) as cri:
        assert cri.pull(f"{name}/cfg/app:v1") == image.configs["linux/amd64"].digest
    pulls = [json.loads(line) for line in lokal.log_lines() if '"event":"pull"' in line]
    assert {p["result"] for p in pulls if p["kind"] == "blob"} == {"local"}


@needs_real_parts
def test_configure_keeps_the_operators_server_by_default_so_a_pull_lokal_misses_still_reaches_it(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    """The operator's hosts.toml is the only thing that says where this registry really is (here a
    plain-HTTP server behind a name that resolves nowhere). `lokal configure` with its defaults must keep
    it: lokal misses (it holds nothing) and containerd goes on to the operator's server."""
    _, image, puller = upstream_and_node(processes, tmp_path, "ops/app", seed=5, node="puller")
    name = NAME
    lokal = LokalProcess(
        processes, tmp_path / "lokal.log", "--containerd-socket", str(puller.socket),
        "--discovery", "none", "--mirrored-registries", name,
    )
    args = [
        sys.executable, "-m", "sidecar", "configure", "--config-path", str(puller.certs_d),
        "--mirrored-registries", name, "--listen", f"0.0.0.0:{lokal.port}",
    ]
    subprocess.run(args, check=True, capture_output=True, timeout=60)

    with CriClient(puller.socket) as cri:
        assert cri.pull(f"{name}/ops/app:v1") == image.configs["linux/amd64"].digest
    pulls = [json.loads(line) for line in lokal.log_lines() if '"event":"pull"' in line]
    assert pulls and {p["result"] for p in pulls} == {"miss"}  # lokal was asked first, and missed


@needs_real_parts
def test_a_wrong_namespace_and_a_missing_content_root_are_warned_in_the_log_readyz_and_status(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    _, _, node = upstream_and_node(processes, tmp_path, "ops/app", seed=7, node="ctd")
    with CriClient(node.socket) as cri:
        cri.pull(f"{NAME}/ops/app:v1")  # into k8s.io, as the kubelet does

    def started(log: str, *args: str) -> LokalProcess:
        return LokalProcess(
            processes, tmp_path / log, "--containerd-socket", str(node.socket), "--discovery", "none",
            "--config-path", str(node.certs_d), *args,
        )

    missing_root = str(tmp_path / "nope")
    wrong = started("wrong.log", "--containerd-namespace", "default", "--content-root", missing_root)
    for _ in range(100):  # the namespace census runs once containerd has answered
        warnings = json.loads(wrong.request("GET", "/readyz")[2]).get("warnings", [])
        if len(warnings) >= 2:
            break
        time.sleep(0.05)
    assert any("--containerd-namespace 'default' holds no image, but 'k8s.io' (" in w for w in warnings)
    assert any(f"{missing_root} does not exist" in w and "gRPC" in w for w in warnings)
    logged = [json.loads(line)["warning"] for line in wrong.log_lines() if '"config_warning"' in line]
    assert sorted(logged) == sorted(warnings)
    _, _, body = wrong.request("GET", "/_lokal/debug/status")
    assert set(warnings) <= set(json.loads(body)["warnings"])

    right = started("right.log")  # k8s.io, and the content root containerd reports
    assert _readyz_warnings(right) == []


@needs_real_parts
def test_config_checked_counts_the_warnings_lokal_status_lists_not_only_its_own(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    node = ContainerdInstance(tmp_path / "ctd")
    node.start(processes)
    lokal = LokalProcess(  # two settings warnings, and a containerd config without a problem
        processes, tmp_path / "lokal.log", "--containerd-socket", str(node.socket), "--discovery", "none",
        "--config-path", str(node.certs_d), "--resolve-latest", "--cross-region", "always",
        "--topology-mode", "prefer",  # (isolate, the default, would add a third: cross-region has no effect)
    )
    for _ in range(100):
        if any('"config_checked"' in line for line in lokal.log_lines()):
            break
        time.sleep(0.05)
    lines = [json.loads(line) for line in lokal.log_lines() if line.startswith("{")]
    checked = next(line for line in lines if line["event"] == "config_checked")
    warned = [line for line in lines[: lines.index(checked)] if line["event"] == "config_warning"]
    assert len(warned) == 2
    assert checked["containerd_config_warnings"] == 0
    _, _, body = lokal.request("GET", "/_lokal/debug/status")
    assert checked["warnings"] == len(json.loads(body)["warnings"]) >= 2

"""configure/cleanup on a real directory tree that holds an operator's own hosts.toml and certificates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.hosts import (
    BACKUP_FILE,
    DEFAULT_REGISTRIES,
    HostsSettings,
    HostsTreeError,
    cleanup_tree,
    configure_tree,
    is_lokal_file,
)
from tests.conftest import IN_CI

LOKAL = "http://127.0.0.1:5050"
REGISTRIES = (*DEFAULT_REGISTRIES, "_default", "localhost:5000")

OPERATOR_DOCKER_IO = b"""\
server = "https://registry-1.docker.io"

[host."https://mirror.corp.example.com"]
  capabilities = ["pull", "resolve"]
  ca = "corp-ca.crt"
  client = [["client.cert", "client.key"]]
"""

Snapshot = dict[str, tuple[str, int, bytes | None, int, int]]


def snapshot(root: Path) -> Snapshot:
    """Every path under root (root included) -> (kind, mode, bytes, uid, gid)."""
    result: Snapshot = {}
    for path in [root, *sorted(root.rglob("*"))]:
        status = path.lstat()
        kind = "dir" if path.is_dir() else "file"
        data = path.read_bytes() if kind == "file" else None
        result[str(path.relative_to(root))] = (kind, status.st_mode, data, status.st_uid, status.st_gid)
    return result


@pytest.fixture
def certs_d(tmp_path: Path) -> Iterator[Path]:
    """An operator's certs.d: docker.io with its own mirror and certificates, quay.io with only a CA (the
    Docker-style layout), and a registry lokal does not mirror."""
    root = tmp_path / "certs.d"
    root.mkdir(mode=0o750)
    docker = root / "docker.io"
    docker.mkdir(mode=0o700)
    (docker / "hosts.toml").write_bytes(OPERATOR_DOCKER_IO)
    os.chmod(docker / "hosts.toml", 0o640)
    for name, mode in [("corp-ca.crt", 0o644), ("client.cert", 0o644), ("client.key", 0o600)]:
        (docker / name).write_bytes(f"-----BEGIN {name}-----\n".encode())
        os.chmod(docker / name, mode)
    (root / "quay.io").mkdir()
    (root / "quay.io" / "ca.crt").write_bytes(b"quay ca\n")
    (root / "private.example.com").mkdir()
    (root / "private.example.com" / "hosts.toml").write_bytes(b'server = "https://private.example.com"\n')
    yield root


def settings(**overrides: object) -> HostsSettings:
    values: dict[str, object] = {"listen_port": 5050, "registries": REGISTRIES}
    values.update(overrides)
    return HostsSettings(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("prepend", [False, True])
def test_cleanup_after_configure_leaves_the_tree_byte_identical(certs_d: Path, prepend: bool) -> None:
    before = snapshot(certs_d)
    report = configure_tree(certs_d, settings(prepend_existing=prepend))
    assert sorted(report.written) == sorted(REGISTRIES)
    assert report.backed_up == ["docker.io"]
    assert snapshot(certs_d) != before

    cleanup_tree(certs_d)

    assert snapshot(certs_d) == before


def test_every_mirrored_registry_gets_a_lokal_hosts_file(certs_d: Path) -> None:
    configure_tree(certs_d, settings())
    for registry in REGISTRIES:
        text = (certs_d / registry / "hosts.toml").read_text()
        assert is_lokal_file(text)
        assert next(iter(tomllib.loads(text)["host"])) == LOKAL
    assert (certs_d / "localhost:5000").is_dir()  # the port stays in the directory name
    assert not is_lokal_file((certs_d / "private.example.com" / "hosts.toml").read_text())


def test_operator_file_is_backed_up_as_the_original_inode(certs_d: Path) -> None:
    original = (certs_d / "docker.io" / "hosts.toml").stat()
    configure_tree(certs_d, settings())
    backup = (certs_d / "docker.io" / BACKUP_FILE).stat()
    assert (backup.st_ino, backup.st_mode, backup.st_mtime_ns) == (
        original.st_ino,
        original.st_mode,
        original.st_mtime_ns,
    )


def test_configuring_twice_writes_nothing_the_second_time(certs_d: Path) -> None:
    configure_tree(certs_d, settings(prepend_existing=True))
    first = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in certs_d.rglob("*")}
    first_bytes = snapshot(certs_d)

    report = configure_tree(certs_d, settings(prepend_existing=True))

    assert report.written == [] and report.backed_up == []
    assert sorted(report.unchanged) == sorted(REGISTRIES)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in certs_d.rglob("*")} == first
    assert snapshot(certs_d) == first_bytes


def test_the_operator_file_is_backed_up_once_across_changed_settings(certs_d: Path) -> None:
    before = snapshot(certs_d)
    configure_tree(certs_d, settings())
    report = configure_tree(certs_d, settings(listen_port=6000, resolve_tags=False))
    assert report.backed_up == []
    assert (certs_d / "docker.io" / BACKUP_FILE).read_bytes() == OPERATOR_DOCKER_IO
    cleanup_tree(certs_d)
    assert snapshot(certs_d) == before


def test_prepend_existing_keeps_the_operator_mirror_after_lokal_with_its_certificates(certs_d: Path) -> None:
    configure_tree(certs_d, settings(prepend_existing=True))
    directory = certs_d / "docker.io"
    parsed = tomllib.loads((directory / "hosts.toml").read_text())
    assert list(parsed["host"]) == [LOKAL, "https://mirror.corp.example.com"]
    mirror = parsed["host"]["https://mirror.corp.example.com"]
    assert mirror["ca"] == "corp-ca.crt" and mirror["client"] == [["client.cert", "client.key"]]
    # containerd resolves relative paths against the hosts.toml directory, which has not moved.
    assert (directory / mirror["ca"]).is_file()
    assert all((directory / p).is_file() for p in mirror["client"][0])


def test_prepend_reads_the_backup_once_lokal_owns_the_file(certs_d: Path) -> None:
    configure_tree(certs_d, settings())  # lokal's file now replaces the operator's
    configure_tree(certs_d, settings(prepend_existing=True))
    parsed = tomllib.loads((certs_d / "docker.io" / "hosts.toml").read_text())
    assert list(parsed["host"]) == [LOKAL, "https://mirror.corp.example.com"]


def test_cleanup_twice_is_harmless(certs_d: Path) -> None:
    before = snapshot(certs_d)
    configure_tree(certs_d, settings())
    cleanup_tree(certs_d)
    report = cleanup_tree(certs_d)
    assert (report.restored, report.removed, report.kept_dirs) == ([], [], [])
    assert snapshot(certs_d) == before


def test_cleanup_without_configure_changes_nothing(certs_d: Path) -> None:
    before = snapshot(certs_d)
    cleanup_tree(certs_d)
    assert snapshot(certs_d) == before


def test_a_config_path_lokal_created_is_removed_by_cleanup(tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    configure_tree(tmp_path / "certs.d", settings())
    assert (tmp_path / "certs.d" / "docker.io" / "hosts.toml").is_file()
    cleanup_tree(tmp_path / "certs.d")
    assert snapshot(tmp_path) == before


def test_cleanup_can_be_narrowed_to_some_registries(certs_d: Path) -> None:
    configure_tree(certs_d, settings())
    cleanup_tree(certs_d, ["docker.io"])
    assert (certs_d / "docker.io" / "hosts.toml").read_bytes() == OPERATOR_DOCKER_IO
    assert is_lokal_file((certs_d / "ghcr.io" / "hosts.toml").read_text())


def test_a_registry_dropped_from_the_list_is_restored_on_the_next_configure(certs_d: Path) -> None:
    configure_tree(certs_d, settings())
    report = configure_tree(certs_d, settings(registries=("ghcr.io",)))
    assert "docker.io" in report.pruned and "quay.io" in report.pruned
    assert (certs_d / "docker.io" / "hosts.toml").read_bytes() == OPERATOR_DOCKER_IO
    assert not (certs_d / "gcr.io").exists()
    assert not (certs_d / "quay.io" / "hosts.toml").exists()


def test_a_file_the_operator_put_in_place_after_configure_survives_cleanup(certs_d: Path) -> None:
    configure_tree(certs_d, settings())
    newer = b'server = "https://registry-1.docker.io"\n[host."https://new.example.com"]\n'
    (certs_d / "docker.io" / "hosts.toml").write_bytes(newer)
    cleanup_tree(certs_d)
    assert (certs_d / "docker.io" / "hosts.toml").read_bytes() == newer
    assert not (certs_d / "docker.io" / BACKUP_FILE).exists()


def test_a_directory_lokal_created_is_kept_when_someone_else_added_files(certs_d: Path) -> None:
    configure_tree(certs_d, settings())
    (certs_d / "gcr.io" / "ca.crt").write_bytes(b"added later\n")
    report = cleanup_tree(certs_d)
    assert report.kept_dirs == [str(certs_d / "gcr.io")]
    assert sorted(p.name for p in (certs_d / "gcr.io").iterdir()) == [".lokal-created", "ca.crt"]


def test_a_bad_operator_file_with_prepend_fails_naming_it_and_writes_nothing(certs_d: Path) -> None:
    (certs_d / "docker.io" / "hosts.toml").write_bytes(b"server = [unclosed\n")
    before = snapshot(certs_d)
    with pytest.raises(HostsTreeError, match=r"docker\.io/hosts\.toml: not valid TOML"):
        configure_tree(certs_d, settings(prepend_existing=True))
    assert snapshot(certs_d) == before


def test_a_registry_path_that_is_a_file_fails_naming_the_setting_and_writes_nothing(certs_d: Path) -> None:
    (certs_d / "quay.io" / "ca.crt").unlink()
    (certs_d / "quay.io").rmdir()
    (certs_d / "quay.io").write_bytes(b"not a directory\n")
    before = snapshot(certs_d)
    with pytest.raises(HostsTreeError, match=r"^LOKAL_CONFIG_PATH: .*quay\.io is not a directory"):
        configure_tree(certs_d, settings(), config_setting="LOKAL_CONFIG_PATH")
    assert snapshot(certs_d) == before


def test_a_config_path_without_a_parent_fails_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(HostsTreeError, match=r"^--config-path: .*does not exist"):
        configure_tree(tmp_path / "missing" / "certs.d", settings())
    assert list(tmp_path.iterdir()) == []


NEEDS_MOUNT_NAMESPACE = (os.geteuid() != 0 or shutil.which("unshare") is None) and not IN_CI
# Runs inside the private mount namespace: configure, then print the error and every path left behind.
_IN_NAMESPACE = """
import sys
from pathlib import Path
from sidecar.hosts import HostsSettings, HostsTreeError, configure_tree
root = Path(sys.argv[1])
try:
    configure_tree(root, HostsSettings(listen_port=5050, registries=tuple(sys.argv[2:])))
except HostsTreeError as error:
    print(error)
    print(sorted(str(p.relative_to(root)) for p in root.rglob("*")))
    sys.exit(2)
"""


def _configure_in_own_mount_namespace(
    setup: str, config_path: Path, *registries: str
) -> subprocess.CompletedProcess[str]:
    """The mounts in `setup` exist only in this private mount namespace and vanish with its process."""
    script = f'{setup} && exec "$0" -c "$1" "${{@:2}}"'
    command = ["unshare", "--mount", "--propagation", "private", "bash", "-c", script]
    return subprocess.run(
        [*command, sys.executable, _IN_NAMESPACE, str(config_path), *registries],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )


@pytest.mark.skipif(NEEDS_MOUNT_NAMESPACE, reason="needs root and unshare for a private read-only mount")
def test_a_read_only_config_path_fails_naming_the_setting_and_writes_nothing(certs_d: Path) -> None:
    before = snapshot(certs_d)
    setup = f"mount --bind {certs_d} {certs_d} && mount -o remount,bind,ro {certs_d}"
    result = _configure_in_own_mount_namespace(setup, certs_d, "ghcr.io", "docker.io")
    assert result.returncode == 2, result.stderr
    assert result.stdout.startswith("--config-path: ") and "is not writable" in result.stdout
    assert snapshot(certs_d) == before


@pytest.mark.skipif(NEEDS_MOUNT_NAMESPACE, reason="needs root and unshare for a private small tmpfs")
def test_a_write_failing_midway_is_undone(tmp_path: Path) -> None:
    # 6 inodes: the root, docker.io, then ghcr.io (dir, marker, hosts.toml) and docker.io's hosts.toml are
    # written before quay.io's directory runs out of inodes. The run must leave the tree as it found it.
    config = tmp_path / "certs.d"
    config.mkdir()
    setup = f"mount -t tmpfs -o nr_inodes=6,size=1m tmpfs {config} && mkdir {config}/docker.io"
    result = _configure_in_own_mount_namespace(setup, config, "ghcr.io", "docker.io", "quay.io", "gcr.io")
    assert result.returncode == 2, result.stderr
    error, leftover = result.stdout.splitlines()
    assert error.startswith("--config-path: writing under") and "nothing changed" in error
    assert leftover == "['docker.io']"

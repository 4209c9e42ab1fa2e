"""Writing and restoring the hosts.toml tree under containerd's config path (the only I/O of `hosts`).

Layout that lokal leaves in `<config path>/<registry>/`, and nothing else:
- `hosts.toml`, lokal's file, recognised by its first line (`render.is_lokal_file`);
- `hosts.toml.lokal-backup`, the operator's previous hosts.toml. It is a hard link to the original inode,
  so restoring it with one rename gives back the same bytes, mode, owner and times. Where a link is not
  possible, it is a copy with the same bytes, mode, owner and times;
- `.lokal-created`, present when lokal created the directory (or the config path itself), so that cleanup
  removes exactly what lokal added and keeps directories the operator had.

Rules:
- The backup always holds the last hosts.toml lokal did not write. Configuring again leaves it alone; only
  a file the operator put in lokal's place after configure replaces it.
- `configure_tree` reads and checks everything first (names, directories, writability, the operator's
  files), then writes. A failure while writing undoes this run's steps, so nothing is left half-written.
- Every file write is atomic (a temp file in the same directory, then `os.replace`) and skipped when the
  content is already right.
- Cleanup is a sequence of single atomic steps, each safe to repeat, so running it twice is harmless.
- containerd ignores every file in a host directory except hosts.toml, so the extra files are inert.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.hosts.render import ExistingHosts, ExistingHostsError, parse_existing, render_hosts_toml
from sidecar.hosts.render import is_lokal_file as _is_lokal_text
from sidecar.hosts.settings import HostsSettings
from sidecar.hosts.toml_writer import TomlWriteError

HOSTS_FILE = "hosts.toml"
BACKUP_FILE = "hosts.toml.lokal-backup"
CREATED_MARKER = ".lokal-created"
TMP_SUFFIX = ".lokal-tmp"
_LOKAL_NAMES = (HOSTS_FILE, BACKUP_FILE, CREATED_MARKER)


class HostsTreeError(Exception):
    """The tree cannot be configured or cleaned. `str()` is the one-line message naming the input."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


@dataclass
class ConfigureReport:
    written: list[str] = field(default_factory=list)  # registries whose hosts.toml changed
    unchanged: list[str] = field(default_factory=list)
    backed_up: list[str] = field(default_factory=list)  # registries whose operator file was backed up now
    pruned: list[str] = field(default_factory=list)  # registries no longer mirrored, restored


@dataclass
class CleanupReport:
    restored: list[str] = field(default_factory=list)  # the operator's hosts.toml is back
    removed: list[str] = field(default_factory=list)  # lokal's hosts.toml removed, there was none before
    kept_dirs: list[str] = field(default_factory=list)  # created by lokal, but now hold others' files


@dataclass(frozen=True)
class _Plan:
    registry: str
    directory: Path
    create_dir: bool
    current: bytes | None  # hosts.toml as it is now
    current_is_lokal: bool
    backup_exists: bool
    content: bytes


def configure_tree(
    config_path: Path, settings: HostsSettings, config_setting: str = "--config-path"
) -> ConfigureReport:
    """Point containerd at lokal for every registry in `settings`; restore registries no longer listed.

    Raises HostsTreeError (naming `config_setting` or the offending file) before writing anything.
    """
    create_root = _check_config_root(config_path, config_setting)
    plans = [_plan_registry(config_path, name, settings, config_setting) for name in settings.registries]
    report = ConfigureReport()
    journal = _Journal()
    try:
        if create_root and any(plan.current != plan.content for plan in plans):
            _make_dir(config_path, journal)
        for plan in plans:
            _apply(plan, report, journal)
    except OSError as error:
        journal.rollback()
        message = f"writing under {config_path} failed, nothing changed ({error})"
        raise HostsTreeError(config_setting, message) from None
    journal.commit()
    stale = [d for d in _lokal_dirs(config_path) if d.name not in settings.registries]
    for directory in stale:
        _restore_dir(directory, CleanupReport(), config_setting)
        report.pruned.append(directory.name)
    return report


def cleanup_tree(
    config_path: Path, registries: Iterable[str] | None = None, config_setting: str = "--config-path"
) -> CleanupReport:
    """Put back every operator hosts.toml and remove what lokal added; all registries unless narrowed."""
    report = CleanupReport()
    if not config_path.exists():
        return report
    if not config_path.is_dir():
        raise HostsTreeError(config_setting, f"{config_path} is not a directory")
    if registries is None:
        directories = _lokal_dirs(config_path)
    else:
        directories = [config_path / name for name in registries if (config_path / name).is_dir()]
    for directory in [config_path, *directories]:
        if not os.access(directory, os.W_OK | os.X_OK):
            raise HostsTreeError(config_setting, f"{directory} is not writable")
    for directory in directories:
        _restore_dir(directory, report, config_setting)
    _remove_created_dir(config_path, report)
    return report


def _check_config_root(config_path: Path, setting: str) -> bool:
    """True when lokal has to create the config path itself."""
    if config_path.is_dir():
        if not os.access(config_path, os.W_OK | os.X_OK):
            raise HostsTreeError(setting, f"{config_path} is not writable")
        return False
    if config_path.exists():
        raise HostsTreeError(setting, f"{config_path} is not a directory")
    parent = config_path.parent
    if not parent.is_dir():
        raise HostsTreeError(setting, f"{config_path}: its parent directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HostsTreeError(setting, f"{config_path} does not exist and {parent} is not writable")
    return True


def _plan_registry(config_path: Path, registry: str, settings: HostsSettings, setting: str) -> _Plan:
    directory = config_path / registry
    if directory.exists() and not directory.is_dir():
        raise HostsTreeError(setting, f"{directory} is not a directory")
    if directory.is_dir() and not os.access(directory, os.W_OK | os.X_OK):
        raise HostsTreeError(setting, f"{directory} is not writable")
    hosts, backup = directory / HOSTS_FILE, directory / BACKUP_FILE
    current = _read_regular(hosts, setting)
    saved = _read_regular(backup, setting)
    current_is_lokal = current is not None and _is_lokal(current)
    existing: ExistingHosts | None = None
    if settings.prepend_existing:
        # The operator's configuration is the file in place, unless that is lokal's; then the backup.
        operator_in_place = current is not None and not current_is_lokal
        source, source_path = (current, hosts) if operator_in_place else (saved, backup)
        if source is not None:
            existing = _parse_operator_file(source, source_path)
    try:
        content = render_hosts_toml(registry, settings, existing).encode()
    except TomlWriteError as error:
        raise HostsTreeError(str(hosts), f"cannot keep the existing hosts: {error}") from None
    return _Plan(
        registry=registry,
        directory=directory,
        create_dir=not directory.is_dir(),
        current=current,
        current_is_lokal=current_is_lokal,
        backup_exists=saved is not None,
        content=content,
    )


def _parse_operator_file(data: bytes, path: Path) -> ExistingHosts:
    try:
        return parse_existing(data.decode("utf-8"), str(path))
    except UnicodeDecodeError:
        raise HostsTreeError(str(path), "not UTF-8 text") from None
    except ExistingHostsError as error:
        raise HostsTreeError(str(path), str(error).removeprefix(f"{path}: ")) from None


def _apply(plan: _Plan, report: ConfigureReport, journal: _Journal) -> None:
    if plan.current == plan.content:
        report.unchanged.append(plan.registry)
        return
    hosts, backup = plan.directory / HOSTS_FILE, plan.directory / BACKUP_FILE
    if plan.create_dir:
        _make_dir(plan.directory, journal)
    if plan.current is not None and not plan.current_is_lokal:
        if plan.backup_exists:
            # The operator replaced lokal's file since the last run: theirs becomes the backup.
            stash = plan.directory / f".{BACKUP_FILE}.stash{TMP_SUFFIX}"
            os.replace(backup, stash)
            journal.did(undo=lambda: os.replace(stash, backup), commit=lambda: stash.unlink(missing_ok=True))
        _link_or_copy(hosts, backup)
        journal.did(undo=lambda: backup.unlink(missing_ok=True))
        report.backed_up.append(plan.registry)
    _write_atomic(hosts, plan.content)
    journal.did(undo=_undo_write(plan, hosts, backup))
    report.written.append(plan.registry)


def _undo_write(plan: _Plan, hosts: Path, backup: Path) -> Callable[[], None]:
    previous = plan.current
    if previous is None:
        return lambda: hosts.unlink(missing_ok=True)
    if plan.current_is_lokal:
        return lambda: _write_atomic(hosts, previous)
    return lambda: os.replace(backup, hosts)  # the backup is the operator's original inode (or a copy)


def _restore_dir(directory: Path, report: CleanupReport, setting: str) -> None:
    hosts, backup = directory / HOSTS_FILE, directory / BACKUP_FILE
    try:
        for stray in directory.glob(f"*{TMP_SUFFIX}"):
            stray.unlink(missing_ok=True)
        current = _read_regular(hosts, setting)
        if backup.is_file():
            if current is not None and not _is_lokal(current):
                backup.unlink()  # the operator replaced lokal's file after configure: theirs wins
            else:
                os.replace(backup, hosts)
                _fsync_dir(directory)
                report.restored.append(directory.name)
        elif current is not None and _is_lokal(current):
            hosts.unlink()
            report.removed.append(directory.name)
        _remove_created_dir(directory, report)
    except OSError as error:
        raise HostsTreeError(setting, f"restoring {directory} failed ({error})") from None


def _remove_created_dir(directory: Path, report: CleanupReport) -> None:
    marker = directory / CREATED_MARKER
    if not marker.is_file():
        return
    if [p.name for p in directory.iterdir()] != [CREATED_MARKER]:
        report.kept_dirs.append(str(directory))  # someone else's files are in it now: keep the marker too
        return
    marker.unlink()
    directory.rmdir()


def _lokal_dirs(config_path: Path) -> list[Path]:
    """The registry directories holding anything lokal wrote."""
    if not config_path.is_dir():
        return []
    return sorted(
        d
        for d in config_path.iterdir()
        if d.is_dir()
        and not d.is_symlink()
        and (
            (d / BACKUP_FILE).exists()
            or (d / CREATED_MARKER).exists()
            or _is_lokal(_read_regular(d / HOSTS_FILE, "--config-path") or b"")
        )
    )


def _is_lokal(data: bytes) -> bool:
    return _is_lokal_text(data[:200].decode("utf-8", errors="replace"))


def _read_regular(path: Path, setting: str) -> bytes | None:
    if not path.exists():
        return None
    if not path.is_file():
        raise HostsTreeError(setting, f"{path} is not a regular file")
    try:
        return path.read_bytes()
    except OSError as error:
        raise HostsTreeError(setting, f"cannot read {path} ({error.strerror})") from None


def _make_dir(directory: Path, journal: _Journal) -> None:
    directory.mkdir(mode=0o755)
    journal.did(undo=directory.rmdir)
    os.chmod(directory, 0o755)  # mkdir's mode is filtered by the umask
    _write_atomic(directory / CREATED_MARKER, b"lokal configure created this directory; cleanup removes it\n")
    journal.did(undo=lambda: (directory / CREATED_MARKER).unlink(missing_ok=True))


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link keeps the original inode; a copy (when linking is refused) keeps bytes, mode and times."""
    try:
        os.link(source, target)
        return
    except OSError:
        pass
    status = source.stat()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(source.read_bytes())
            os.fchmod(handle.fileno(), status.st_mode & 0o7777)
            if hasattr(os, "fchown") and os.geteuid() == 0:
                os.fchown(handle.fileno(), status.st_uid, status.st_gid)
            os.fsync(handle.fileno())
        os.utime(tmp, ns=(status.st_atime_ns, status.st_mtime_ns))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Journal:
    """Undo steps for one configure run, replayed backwards if a later step fails."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], object]] = []
        self._commit: list[Callable[[], object]] = []

    def did(self, undo: Callable[[], object], commit: Callable[[], object] | None = None) -> None:
        self._undo.append(undo)
        if commit is not None:
            self._commit.append(commit)

    def rollback(self) -> None:
        for undo in reversed(self._undo):
            with contextlib.suppress(OSError):  # best effort: keep undoing the rest
                undo()

    def commit(self) -> None:
        for step in self._commit:
            with contextlib.suppress(OSError):  # a leftover stash is inert; cleanup removes it
                step()

"""containerd registry host configuration: render `<config path>/<registry>/hosts.toml`, back up, restore.

`render` and `settings` are pure; `tree` is the only module that touches the filesystem.
"""

from sidecar.hosts.containerd_config import config_path_includes
from sidecar.hosts.render import (
    ExistingHosts,
    ExistingHostsError,
    is_lokal_file,
    parse_existing,
    render_hosts_toml,
)
from sidecar.hosts.settings import (
    DEFAULT_LISTEN,
    DEFAULT_REGISTRIES,
    HostsSettings,
    SettingError,
    check_upstreams,
    default_upstream,
    mirror_url,
    parse_bool,
    parse_listen,
    parse_registries,
    parse_upstreams,
)
from sidecar.hosts.tree import (
    BACKUP_FILE,
    CREATED_MARKER,
    HOSTS_FILE,
    CleanupReport,
    ConfigureReport,
    HostsTreeError,
    cleanup_tree,
    configure_tree,
)

__all__ = [
    "BACKUP_FILE",
    "CREATED_MARKER",
    "DEFAULT_LISTEN",
    "DEFAULT_REGISTRIES",
    "HOSTS_FILE",
    "CleanupReport",
    "ConfigureReport",
    "ExistingHosts",
    "ExistingHostsError",
    "HostsSettings",
    "HostsTreeError",
    "SettingError",
    "check_upstreams",
    "cleanup_tree",
    "config_path_includes",
    "configure_tree",
    "default_upstream",
    "is_lokal_file",
    "mirror_url",
    "parse_bool",
    "parse_existing",
    "parse_listen",
    "parse_registries",
    "parse_upstreams",
    "render_hosts_toml",
]

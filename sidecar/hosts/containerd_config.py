"""What containerd's own configuration must say for lokal's hosts files to count: pure checks.

The lead's startup check reads containerd's CRI config (CRI `Status`, verbose) and asks these functions.
"""

from __future__ import annotations

import os.path


def config_path_includes(containerd_config_path: str, directory: str) -> bool:
    """True when the CRI registry `config_path` (a `:`-separated list, possibly empty) holds `directory`.

    containerd reads hosts.toml files only under its `config_path`: empty (the default before 2.2) means
    containerd ignores everything lokal writes.
    """
    wanted = os.path.normpath(directory)
    entries = [entry for entry in containerd_config_path.split(os.pathsep) if entry.strip()]
    return any(os.path.normpath(entry) == wanted for entry in entries)

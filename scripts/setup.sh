#!/usr/bin/env bash
# Installs everything lokal, its tests, its lab and its benchmarks need on a fresh Debian machine:
# the real parts from Debian's packages, and the Python packages (pinned in pyproject.toml) in .venv.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# buildah and debootstrap build lokal's image (scripts/build_image.sh, tests/image).
apt_packages=(containerd runc docker-registry skopeo iproute2 nginx-light buildah debootstrap)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: installing Debian packages needs root (run as root, or install: ${missing[*]})" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian starts services on install where it can; lokal runs its own private instances instead.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$python" -m venv .venv
fi
stamp=.venv/.lokal-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ lab/pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing Python packages into .venv"
    # lokal itself, and the lab (tests, demo, benchmarks), which is never part of lokal's wheel or image.
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' -e ./lab
    touch "$stamp"
fi

# containerd 1.7 and 2.1 beside the system's 1.6, for the lab's version matrix (never over the system's).
bash scripts/containerd_versions.sh

# The real-apiserver tier of the tests: kube-apiserver 1.20.2 built once from Debian's source package and
# cached in /var/cache/lokal (4-7 minutes on a fresh machine), and etcd. LOKAL_SKIP_KUBE_APISERVER=1 skips
# it; the tier's tests are then skipped with the reason.
if [ "${LOKAL_SKIP_KUBE_APISERVER:-0}" != 1 ]; then
    bash scripts/kube_apiserver.sh
fi

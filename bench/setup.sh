#!/usr/bin/env bash
# Installs what the benchmarks in bench/ need on a fresh Debian machine: the project's own setup
# (containerd, docker-registry, skopeo, nginx-light, the .venv) plus wrk, the load generator.
# Idempotent: a second run only checks. Run as root from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bench/setup: installing wrk needs root (run as root, or: apt-get install -y wrk)" >&2
        exit 1
    fi
    echo "bench/setup: installing wrk"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

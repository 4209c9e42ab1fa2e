#!/usr/bin/env bash
# The main job: set up, then run the local multi-region demo (root, Linux).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/lokal demo "$@"

#!/usr/bin/env bash
# The whole test suite, set-up included: lint, types, stub freshness and every test with real parts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check sidecar lab tests bench
.venv/bin/mypy
exec .venv/bin/pytest "$@"

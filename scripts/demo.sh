#!/usr/bin/env bash
# The demo: set up .venv if needed, then run the whole pipeline on the embedded defaults.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
exec "$ROOT/.venv/bin/feedrank" demo "$@"

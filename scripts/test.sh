#!/usr/bin/env bash
# The test command: set up .venv if needed, run the static checks, then pytest
# with coverage. CI (.ci/run and .github/workflows/ci.yml) runs exactly this.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/bootstrap.sh"
"$ROOT/scripts/lint.sh"
echo "== pytest"
exec "$ROOT/.venv/bin/pytest" --cov --cov-report=term --cov-report=xml --cov-fail-under=85 "$@"

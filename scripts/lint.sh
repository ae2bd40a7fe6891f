#!/usr/bin/env bash
# Static checks; every one can fail the build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
PACKAGES=(feedrank simulation features feature_repo training serving metrics benchmarks)

echo "== ruff"; "$BIN/ruff" check . && "$BIN/ruff" format --check .
echo "== pylint"; "$BIN/pylint" --fail-under=9.0 "${PACKAGES[@]}"
echo "== bandit"; "$BIN/bandit" -q -c pyproject.toml -r "${PACKAGES[@]}" --severity-level medium

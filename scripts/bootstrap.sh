#!/usr/bin/env bash
# Make sure uv is available, then install the locked workspace into .venv.
# Used by every Makefile target that needs Python, so a fresh clone needs only python3 and make
# (no root: uv goes to ~/.local/bin, the workspace to .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  if [ -x "$HOME/.local/bin/uv" ]; then
    export PATH="$HOME/.local/bin:$PATH"
  else
    echo "==> uv not found: installing it from PyPI (python3 -m pip install --user uv)"
    python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
    export PATH="$HOME/.local/bin:$PATH"
  fi
fi
command -v uv >/dev/null || { echo "uv is still not on PATH; install it: https://docs.astral.sh/uv/" >&2; exit 1; }

# Nothing here needs root: system packages belong to the test tiers that use them
# (scripts/test.sh installs them). Prometheus is optional for `make up`.
if ! command -v prometheus >/dev/null 2>&1; then
  echo "==> prometheus not found: optional, \`make up\` runs without it. To get it: apt-get install prometheus (Debian/Ubuntu), brew install prometheus, or https://prometheus.io/download/"
fi

# --frozen: install exactly what uv.lock says; a stale lock is an error, not a silent update.
uv sync --frozen --all-packages --quiet

#!/usr/bin/env bash
# Security lint, part of `make lint`: bandit on the code, pip-audit on the locked dependencies.
# Exceptions are documented where they are configured: [tool.bandit] in pyproject.toml, and the
# infra-only skips below.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"  # uv, as the Makefile sets it

echo "==> bandit: libraries, services, gateway (tests excluded)"
.venv/bin/bandit -q -c pyproject.toml -r libs/servicekit/src services/*/src gateway/src
# infra/local runs fixed argv lists without a shell (B404, B603) and probes the stack's own
# http://127.0.0.1 URLs (B310): by design, so these three are skipped there and only there.
echo "==> bandit: infra (local process runner)"
.venv/bin/bandit -q -c pyproject.toml -s B404,B603,B310 -r infra

echo "==> pip-audit: the locked dependencies (uv.lock), against the PyPI advisory database"
requirements="$(mktemp)"
trap 'rm -f "$requirements"' EXIT
uv export --frozen --no-hashes --no-emit-workspace --all-groups --quiet >"$requirements"
# --no-deps: the export is already the complete, pinned set; --disable-pip: nothing installed.
# A package the advisory service does not know is reported as "could not be audited" and does
# not fail the run; PIP_AUDIT_STRICT=1 makes it fail (use it where CI reaches pypi.org: some
# sandboxes proxy only part of PyPI's JSON API, and then nothing can be audited at all).
strict=()
[ "${PIP_AUDIT_STRICT:-0}" = "1" ] && strict=(--strict)
.venv/bin/pip-audit --requirement "$requirements" --no-deps --disable-pip \
  --vulnerability-service pypi --progress-spinner off "${strict[@]}"

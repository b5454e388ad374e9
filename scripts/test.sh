#!/usr/bin/env bash
# Run one test tier (unit | integration | e2e | loadtest | fuzz | chaos | canary | observability |
# containers | scaffold | browser) with
# pytest; every tier must find tests. The tiers that need system tools install them first
# (scripts/system-packages.sh) and fail when they cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
tier="${1:?usage: scripts/test.sh unit|integration|e2e|loadtest|fuzz|chaos|canary|observability|containers|scaffold|browser [pytest args]}"
shift

case "$tier" in
  unit)        paths=(tests/unit tests/architecture tests/security libs/*/tests/unit services/*/tests/unit gateway/tests/unit loadtest/tests/unit) ;;
  loadtest)    paths=(tests/loadtest) ;;
  integration) paths=(libs/*/tests/integration services/*/tests/integration gateway/tests/integration) ;;
  e2e)         paths=(tests/e2e) ;;
  fuzz)        paths=(tests/fuzz) ;;
  chaos)       paths=(tests/chaos) ;;
  canary)      paths=(tests/canary) ;;
  scaffold)    paths=(tests/scaffold) ;;
  observability) paths=(tests/observability); scripts/system-packages.sh observability ;;
  containers)  paths=(tests/containers); scripts/system-packages.sh containers ;;
  browser)     paths=(tests/browser); scripts/system-packages.sh browser ;;
  *) echo "unknown tier: $tier (expected unit, integration, e2e, loadtest, fuzz, chaos, canary, observability, containers, scaffold or browser)" >&2; exit 2 ;;
esac

existing=()
for p in "${paths[@]}"; do [ -d "$p" ] && existing+=("$p"); done
echo "==> $tier tests: ${existing[*]}"
# Exit code 5 (no tests collected) is a failure: a tier that runs nothing proves nothing.
exec .venv/bin/python -m pytest "${existing[@]}" "$@"

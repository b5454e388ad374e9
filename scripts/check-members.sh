#!/usr/bin/env bash
# Each workspace member must install and pass its unit tests alone: a member that silently
# relies on another member's dependencies (or imports another app) fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
members=(libs/servicekit services/order services/inventory services/payment gateway loadtest)
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

for dir in "${members[@]}"; do
  name="$(basename "$dir")"
  echo "==> $name: uv sync --package $name (alone), unit tests"
  UV_PROJECT_ENVIRONMENT="$scratch/$name" uv sync --frozen --package "$name" --group dev --quiet
  # Only the summary on success; the whole report when something fails (CI must say what).
  if ! "$scratch/$name/bin/python" -m pytest "$dir/tests/unit" -q -p no:cacheprovider \
      --no-header --tb=short >"$scratch/$name.log" 2>&1; then
    cat "$scratch/$name.log"
    exit 1
  fi
  tail -n 1 "$scratch/$name.log"
done

#!/usr/bin/env bash
# Each workspace member must install and pass its unit tests alone: a member that silently
# relies on another member's dependencies (or imports another app) fails here.
# Members: every [tool.uv.workspace] member of pyproject.toml, the library first; the manifest
# reader refuses to list them when a service package of services.toml is not one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"  # where scripts/bootstrap.sh installs uv, as in the Makefile
members_out="$(python3 infra/manifest.py members)"  # its own clear message on failure
mapfile -t members <<<"$members_out"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

for dir in "${members[@]}"; do
  name="$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["name"])' "$dir/pyproject.toml")"
  if [ ! -d "$dir/tests/unit" ]; then
    echo "check-members: $name ($dir) has no tests/unit; every member shows it works alone" >&2
    exit 1
  fi
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

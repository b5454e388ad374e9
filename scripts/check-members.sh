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

# Two members at a time (two cores): each one's output goes to its own log, printed in order.
jobs_max="${MEMBERS_JOBS:-2}"

check_member() {
  local dir="$1" name="$2" log="$scratch/$2.log"
  {
    echo "==> $name: uv sync --package $name (alone), unit tests"
    UV_PROJECT_ENVIRONMENT="$scratch/$name" uv sync --frozen --package "$name" --group dev --quiet
    "$scratch/$name/bin/python" -m pytest "$dir/tests/unit" -q -p no:cacheprovider \
      --no-header --tb=short
  } >"$log" 2>&1
}

names=()
for dir in "${members[@]}"; do
  name="$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["name"])' "$dir/pyproject.toml")"
  if [ ! -d "$dir/tests/unit" ]; then
    echo "check-members: $name ($dir) has no tests/unit; every member shows it works alone" >&2
    exit 1
  fi
  names+=("$name")
done

declare -A pid_of
for i in "${!members[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
  check_member "${members[$i]}" "${names[$i]}" &
  pid_of["${names[$i]}"]=$!
done

# Only the summary on success; the whole report when something fails (CI must say what).
failed=0
for name in "${names[@]}"; do
  if wait "${pid_of[$name]}"; then
    head -n 1 "$scratch/$name.log"
    tail -n 1 "$scratch/$name.log"
  else
    cat "$scratch/$name.log"
    failed=1
  fi
done
exit "$failed"

#!/usr/bin/env bash
# `make up-docker` / `make down-docker`: the whole stack in docker compose (docker-compose.yml).
#   scripts/compose.sh up     build the images, start everything, wait until healthy, print URLs
#   scripts/compose.sh down   stop and remove the containers (volumes are kept; -v drops them)
# Needs a Docker engine with the compose plugin, and infra/docker/.env (from .env.example).
set -euo pipefail
cd "$(dirname "$0")/.."

ENV_FILE=infra/docker/.env
action="${1:-}"
case "$action" in
  up|down) ;;
  *) echo "usage: scripts/compose.sh up|down [docker compose args]" >&2; exit 2 ;;
esac
shift

if ! command -v docker >/dev/null 2>&1; then
  echo "docker is needed for the containers (https://docs.docker.com/get-docker/); \`make up\` runs the services without it" >&2
  exit 1
fi
if ! docker compose version >/dev/null 2>&1; then
  echo "docker compose (the Compose v2 plugin) is needed: https://docs.docker.com/compose/install/" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "docker is installed but no Docker engine answers (is the daemon running, may you use it?)" >&2
  exit 1
fi
if [ ! -f "$ENV_FILE" ]; then
  echo "$ENV_FILE is missing: cp infra/docker/.env.example $ENV_FILE, then set real secrets in it" >&2
  exit 1
fi

compose=(docker compose --env-file "$ENV_FILE")
if [ "$action" = down ]; then
  exec "${compose[@]}" --profile loadtest down --remove-orphans "$@"
fi

# --wait: return once every service is healthy (or its one-shot has exited 0); fail otherwise.
"${compose[@]}" up --build --detach --wait "$@"
cat <<'URLS'
Up:
  gateway      http://127.0.0.1:8000   (the only public entry: /api/products, /api/orders)
  grafana      http://127.0.0.1:3000   (anonymous read-only; dashboards in the "Services" folder)
  jaeger       http://127.0.0.1:16686
  prometheus   http://127.0.0.1:9090
Stop with: make down-docker
URLS

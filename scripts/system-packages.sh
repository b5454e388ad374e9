#!/usr/bin/env bash
# Debian packages the tests and benchmarks need, installed only when missing:
#   prometheus (prometheus + promtool): the observability tests run a real Prometheus and promtool.
#   wrk: the HTTP load generator of `make bench` (pass `bench` to install it too).
# Fails loudly with what to do when a package is missing and cannot be installed here.
set -euo pipefail

wanted=(prometheus:promtool)
[ "${1:-}" = "bench" ] && wanted+=(wrk:wrk)

missing=()
for entry in "${wanted[@]}"; do
  package="${entry%%:*}" binary="${entry##*:}"
  command -v "$binary" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${missing[*]}; install them with your package manager" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo -n"
echo "==> installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/servicekit-apt.log 2>&1; then
  cat /tmp/servicekit-apt.log >&2
  echo "could not install ${missing[*]} (see above); install them as root: apt-get install ${missing[*]}" >&2
  exit 1
fi

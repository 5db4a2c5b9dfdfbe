#!/usr/bin/env bash
# Installs what the tests and `make run` need on a fresh Debian bookworm machine, idempotently:
# Debian packages (etcd, Prometheus, Go toolchain, umoci for the image, Lua 5.1 for the Argo CD
# health checks, Chromium for the dashboard's browser tests), mdBook from crates.io for the book
# in docs/, the Helm engine from
# PyPI (helm-python-sdk, for the chart), and a Kubernetes 1.20 control plane built from
# Debian's `kubernetes` source package, cached outside the work tree.
set -euo pipefail

CACHE="${GREENLIGHT_CACHE:-$HOME/.cache/greenlight}"
K8S_DIR="$CACHE/k8s-1.20.2"
BIN="$K8S_DIR/bin"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { echo "[install-deps] $*" >&2; }

need_pkgs=()
for p in etcd-server prometheus golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev build-essential curl openssl umoci ca-certificates tmux lua5.1 postgresql chromium fonts-dejavu-core; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  # The tests run their own etcd and Prometheus on random ports, so the packaged services
  # are not started at install (policy-rc.d). Nothing already running is stopped or killed.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# The Helm v4 engine as a library (no helm binary, no Go toolchain): hack/helm.py uses it.
HELM_SDK_VERSION=0.2.2
if ! python3 -c "import helm_python, importlib.metadata as m; assert m.version('helm-python-sdk') == '$HELM_SDK_VERSION'" 2>/dev/null; then
  log "installing helm-python-sdk $HELM_SDK_VERSION from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "helm-python-sdk==$HELM_SDK_VERSION"
fi

# The book in docs/ (`mdbook build docs` in `make test`): only the renderer, no live server.
MDBOOK_VERSION=0.5.4
if [ "$(mdbook --version 2>/dev/null)" != "mdbook v$MDBOOK_VERSION" ]; then
  log "installing mdbook $MDBOOK_VERSION from crates.io (about 2 minutes)"
  cargo install --quiet --locked --no-default-features --version "$MDBOOK_VERSION" mdbook
fi

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]; then
  log "using kube-apiserver from \$KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
fi

mkdir -p "$BIN"
if [ ! -x "$BIN/kubectl" ]; then
  log "fetching kubectl 1.20 from Debian's kubernetes-client package"
  tmp=$(mktemp -d); chmod 755 "$tmp"
  (cd "$tmp" && { apt-get download -qq kubernetes-client >/dev/null 2>&1 || { $SUDO apt-get update -qq && apt-get download -qq kubernetes-client >/dev/null; }; } && dpkg -x kubernetes-client_*.deb root)
  cp "$tmp/root/usr/bin/kubectl" "$BIN/kubectl"
  rm -rf "$tmp"
fi

if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; then
  exit 0
fi

log "building kube-apiserver and kube-controller-manager 1.20.2 from Debian sources (about 5 minutes)"
if ! grep -rqs '^deb-src .*bookworm\|^Types: .*deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  # deb822 form, signed by the same keyring as the binary entries (apt rejects a mismatch).
  printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    | $SUDO tee /etc/apt/sources.list.d/greenlight-src.sources >/dev/null
  $SUDO apt-get update -qq
fi
SRC="$CACHE/src"
rm -rf "$SRC"
mkdir -p "$SRC"; chmod 755 "$SRC"
(cd "$SRC" && apt-get source -qq --download-only kubernetes >/dev/null && dpkg-source --no-check -x kubernetes_*.dsc tree >/dev/null)
TREE="$SRC/tree"
# The vendored reflect2 v1.0.1 makes the apiserver crash (SIGSEGV in mapiterinit) under Go 1.18+.
rm -rf "$TREE/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$TREE/vendor/github.com/modern-go/reflect2"
(cd "$TREE" && GOFLAGS=-mod=vendor GOTOOLCHAIN=local make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$SRC/build.log" 2>&1) || {
  tail -40 "$SRC/build.log" >&2; exit 1; }
out="$TREE/_output/local/bin/linux/$(dpkg --print-architecture)"
[ -d "$out" ] || out=$(dirname "$(find "$TREE/_output" -name kube-apiserver -type f | head -1)")
cp "$out/kube-apiserver" "$out/kube-controller-manager" "$BIN/"
rm -rf "$SRC"
log "control plane ready in $BIN"

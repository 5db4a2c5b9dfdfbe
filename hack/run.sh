#!/usr/bin/env bash
# `make run`: the controller on a local control plane (the test bed's, with the admission
# webhooks and a fake kubelet). It never talks to whatever cluster the current kubeconfig
# points at: to run against a real cluster, name its context:
#
#     GREENLIGHT_CONTEXT=kind-dev make run
#
# It refuses to start where a Greenlight controller already runs: an installed operator (a
# Deployment labelled app.kubernetes.io/name=greenlight with ready pods), or another
# `make run` on this machine for the same context. Two controllers would both act.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bins

locks="${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}}/greenlight-run"
mkdir -p "$locks"

if [ -z "${GREENLIGHT_CONTEXT:-}" ]; then
  echo "Starting the local control plane (set GREENLIGHT_CONTEXT=<context> to use a cluster)."
  bash hack/install-deps.sh
  exec target/debug/greenlight-devcluster
fi

context="$GREENLIGHT_CONTEXT"
kubectl() { command kubectl --context "$context" --request-timeout=10s "$@"; }
if ! kubectl version >/dev/null 2>&1; then
  echo "make run: the cluster of context '$context' is not reachable" >&2
  exit 1
fi

slug=$(printf '%s' "$context" | tr -c 'A-Za-z0-9._-' '_')
if ! command -v flock >/dev/null 2>&1; then
  echo "make run: flock (util-linux) is needed to tell whether another 'make run' uses '$context'" >&2
  exit 1
fi
exec 9>"$locks/$slug.lock"
if ! flock -n 9; then
  echo "make run: another 'make run' on this machine already runs a controller on context '$context'" >&2
  exit 1
fi
if ! running=$(kubectl get deployments --all-namespaces -l app.kubernetes.io/name=greenlight \
  -o jsonpath='{range .items[?(@.status.readyReplicas)]}{.metadata.namespace}/{.metadata.name} {end}' 2>&1); then
  echo "make run: cannot tell whether a Greenlight controller already runs on context '$context': $running" >&2
  exit 1
fi
if [ -n "$running" ]; then
  echo "make run: a Greenlight controller already runs on context '$context' ($running); stop it first, or two controllers would both act" >&2
  exit 1
fi

# The identity key of this context's runs, made once and kept. Stamps made by another
# operator's key (an installed one) do not verify with it.
key="${XDG_STATE_HOME:-$HOME/.local/state}/greenlight/$slug.identity.key"
if [ ! -s "$key" ]; then
  mkdir -p "$(dirname "$key")"
  (umask 077 && head -c 48 /dev/urandom | base64 > "$key")
fi

echo "Installing the CRDs and running the controller on context '$context'"
kubectl apply -f crds/
exec target/debug/greenlight controller --context "$context" --identity-key-file "$key"

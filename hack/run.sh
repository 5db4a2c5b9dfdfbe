#!/usr/bin/env bash
# `make run`: the controller against the current kubeconfig; without a reachable cluster, a
# local control plane from the test bed first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bins
reachable=false
if command -v kubectl >/dev/null 2>&1 && { [ -n "${KUBECONFIG:-}" ] || [ -f "$HOME/.kube/config" ]; }; then
  if timeout 10 kubectl version --request-timeout=5s >/dev/null 2>&1; then reachable=true; fi
fi
if $reachable; then
  echo "Installing the CRDs and running the controller against $(kubectl config current-context)"
  kubectl apply -f crds/
  exec target/debug/greenlight controller
fi
echo "No reachable cluster: starting the local test-bed control plane."
bash hack/install-deps.sh
exec target/debug/greenlight-devcluster

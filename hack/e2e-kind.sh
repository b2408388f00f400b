#!/usr/bin/env bash
# End to end on a real cluster (needs Docker and kind): create a kind cluster, build and load the
# image, install the chart, check that the runners of the default pool come up under their
# admission policy, then run the API-level suites against the cluster. The tests touch only the
# cluster whose kubeconfig this script writes (GIGAFACTORY_TEST_KUBECONFIG), never $KUBECONFIG.
#
#   hack/e2e-kind.sh              # KEEP=1 keeps the cluster afterwards
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=gigafactory-e2e
image=ghcr.io/gigafactory/gigafactory:e2e
kubeconfig=$(mktemp)

cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    kind delete cluster --name "$cluster" || true
    rm -f "$kubeconfig"
  else
    echo "kept: kind cluster $cluster, kubeconfig $kubeconfig"
  fi
}
trap cleanup EXIT

make venv
kind create cluster --name "$cluster" --config hack/kind.yaml --kubeconfig "$kubeconfig" --wait 120s
docker build -t "$image" .
kind load docker-image "$image" --name "$cluster"

kubectl=(.venv/bin/kubectl --kubeconfig "$kubeconfig")
.venv/bin/helm install gigafactory charts/gigafactory --kubeconfig "$kubeconfig" \
  -n gigafactory-system --create-namespace --set image.tag=e2e -f examples/helm/values-script-agent.yaml \
  --wait --timeout 5m

# The runner's heartbeat went through RBAC and the admission policy, and the operator saw it.
"${kubectl[@]}" wait factory/default --for=jsonpath='{.status.phase}'=Ready --timeout=120s
# The API server type-checked the policies' CEL against the CRD schema: no warnings expected.
warnings=$("${kubectl[@]}" get validatingadmissionpolicies -l app.kubernetes.io/instance=gigafactory \
  -o jsonpath='{.items[*].status.typeChecking.expressionWarnings}')
if [ -n "$warnings" ]; then
  echo "admission policy type-check warnings: $warnings" >&2
  exit 1
fi

GIGAFACTORY_TEST_KUBECONFIG="$kubeconfig" .venv/bin/python -m pytest -n 2 --dist loadgroup \
  tests/conformance tests/chart tests/integration/api "$@"

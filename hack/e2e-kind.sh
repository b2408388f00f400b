#!/usr/bin/env bash
# Create a kind cluster, build and load the image, install the chart, run the suite against it.
# Needs Docker and kind; the tests touch only the cluster whose kubeconfig this script writes.
set -euo pipefail
cd "$(dirname "$0")/.."
image=ghcr.io/gigafactory/gigafactory:e2e
kubeconfig=$(mktemp)
kind create cluster --config hack/kind.yaml --kubeconfig "$kubeconfig"
trap 'kind delete cluster --name gigafactory' EXIT
docker build -t "$image" .
kind load docker-image "$image" --name gigafactory
make venv
.venv/bin/helm install gigafactory charts/gigafactory --kubeconfig "$kubeconfig" \
  -n gigafactory-system --create-namespace --set image.tag=e2e --wait
GIGAFACTORY_TEST_KUBECONFIG="$kubeconfig" make test ARGS="tests/conformance tests/integration/api"

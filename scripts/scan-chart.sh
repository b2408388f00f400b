#!/usr/bin/env bash
# Render the chart with default, full and demo values (the full ones also as for a 1.28 cluster) and scan it
# with checkov (its own venv, pinned and hashed by requirements-tools.lock, so its many dependencies stay out of the
# project's). Fails on any finding not skipped with a reason in .checkov.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools-venv.sh
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
.venv/bin/helm template gf charts/gigafactory -n gigafactory-system > "$out/default.yaml"
.venv/bin/helm template gf charts/gigafactory -n gigafactory-system -f charts/gigafactory/ci/full-values.yaml > "$out/full.yaml"
.venv/bin/helm template gf charts/gigafactory -n gigafactory-system -f examples/helm/values-script-agent.yaml > "$out/demo.yaml"
# As rendered for Kubernetes 1.28/1.29 (admission policies at admissionregistration.k8s.io/v1beta1).
.venv/bin/helm template gf charts/gigafactory -n gigafactory-system -f charts/gigafactory/ci/full-values.yaml \
  --kube-version 1.28.7 --api-versions admissionregistration.k8s.io/v1beta1/ValidatingAdmissionPolicy > "$out/full-v1beta1.yaml"
"$tools/bin/checkov" --config-file .checkov.yaml --skip-download -d "$out"

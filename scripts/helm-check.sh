#!/usr/bin/env bash
# Offline check of the Helm chart deploy/helm/products-service (make helm-check, CI):
#   - helm lint --strict, with the default values and with every option on;
#   - helm template under each value set of deploy/helm/test-values/ok/, and every
#     rendered object validated by kubeconform -strict against the schemas kept in
#     deploy/helm/schemas/ (generated from the Kubernetes OpenAPI spec by
#     scripts/k8s-schemas.py; the three CRDs hand-written): no network needed;
#   - the rendered config file uses only keys of config/default.yaml, and the
#     PrometheusRule carries exactly the rules of deploy/prometheus/alerts.yml;
#   - every value set of deploy/helm/test-values/fail/ MUST fail (values schema,
#     a template check, or kubeconform): the check fails if one renders and validates.
# Prints one line per case and "N passed, M failed"; exits non-zero on any failure.
# helm and kubeconform are built once from the Go module proxy (scripts/lib/helm-tools.sh).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/stack-lib.sh
source "$SCRIPT_DIR/lib/stack-lib.sh"
# shellcheck source=lib/helm-tools.sh
source "$SCRIPT_DIR/lib/helm-tools.sh"
log() { printf '[helm-check] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

ensure_helm
ensure_kubeconform
ensure_helm_python

cd "$REPO"
CHART=deploy/helm/products-service
SCHEMAS=deploy/helm/schemas
CASES=deploy/helm/test-values
# The Kubernetes version rendered for (.Capabilities) = the one the schemas come from.
KUBE_VERSION="$(cat "$SCHEMAS/KUBE_VERSION")"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# helm keeps no state outside $WORK (no repositories, no cache in $HOME).
export HELM_CACHE_HOME="$WORK/helm/cache" HELM_CONFIG_HOME="$WORK/helm/config" HELM_DATA_HOME="$WORK/helm/data"

passed=0 failed=0
pass() { passed=$((passed + 1)); printf 'PASS  %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$*"; }
# Indented detail of a failure (the tool's own message), at most 15 lines.
detail() { sed -e 's/^/      /' "$1" | head -15; }

render() { # render OUT [VALUES_FILE]: helm template into OUT, stderr into OUT.err
  local out=$1; shift
  "$HELM_BIN" template products "$CHART" --namespace products --kube-version "$KUBE_VERSION" ${1:+-f "$1"} >"$out" 2>"$out.err"
}
validate() { # validate FILE: kubeconform, strict, offline schemas only
  "$KUBECONFORM_BIN" -strict -summary -output text \
    -schema-location "$SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json" "$1"
}

# --- lint ----------------------------------------------------------------------------
for values in "" "$CASES/ok/all-options.yaml"; do
  name="helm lint --strict ${values:-(defaults)}"
  if "$HELM_BIN" lint --strict --kube-version "$KUBE_VERSION" "$CHART" ${values:+-f "$values"} >"$WORK/lint.out" 2>&1; then
    pass "$name"
  else
    fail "$name"; detail "$WORK/lint.out"
  fi
done

# --- value sets that must render and validate -------------------------------------------
ok_cases=("" "$CASES"/ok/*.yaml)
for values in "${ok_cases[@]}"; do
  case_name="ok   ${values:-(defaults)}"
  out="$WORK/rendered.yaml"
  if ! render "$out" "$values"; then
    fail "$case_name: helm template failed"; detail "$out.err"; continue
  fi
  if ! validate "$out" >"$WORK/kc.out" 2>&1; then
    fail "$case_name: kubeconform"; detail "$WORK/kc.out"; continue
  fi
  if ! "$HELM_PYTHON" scripts/helm-check.py rendered "$out" config/default.yaml \
         deploy/prometheus/alerts.yml >"$WORK/py.out" 2>&1; then
    fail "$case_name: rendered content"; detail "$WORK/py.out"; continue
  fi
  pass "$case_name: $(tail -1 "$WORK/kc.out" | sed 's/^Summary: //'); $(tail -1 "$WORK/py.out")"
done

# --- the chart's copy of the alert rules ----------------------------------------------
if "$HELM_PYTHON" scripts/helm-check.py alerts deploy/prometheus/alerts.yml "$CHART/files/alerts.yml" \
     >"$WORK/py.out" 2>&1; then
  pass "alerts $CHART/files/alerts.yml: $(tail -1 "$WORK/py.out")"
else
  fail "alerts $CHART/files/alerts.yml differs from deploy/prometheus/alerts.yml (copy it over)"; detail "$WORK/py.out"
fi

# --- value sets that must be refused ---------------------------------------------------
for values in "$CASES"/fail/*.yaml; do
  case_name="fail $values"
  # The file's first line says why it must fail, and a word the error must contain:
  #   # expect: <substring of the error>
  expect="$(sed -n 's/^# expect: //p' "$values" | head -1)"
  out="$WORK/rendered.yaml"
  if ! render "$out" "$values"; then
    err="$out.err"
  elif ! validate "$out" >"$WORK/kc.out" 2>&1; then
    err="$WORK/kc.out"
  else
    fail "$case_name: rendered and validated, but must be refused"; continue
  fi
  if [[ -n $expect ]] && ! grep -qiF -- "$expect" "$err"; then
    fail "$case_name: refused, but not for the expected reason ($expect)"; detail "$err"; continue
  fi
  pass "$case_name: refused ($(grep -iF -m1 -- "${expect:-error}" "$err" | sed -e 's/^[[:space:]]*//' | cut -c1-150))"
done

echo "helm-check: $passed passed, $failed failed"
((failed == 0))

# shellcheck shell=bash
# Tools of the Helm chart check (scripts/helm-check.sh), each pinned, built from the
# Go module proxy (no prebuilt download) and kept in the stack's cache; installed only
# when missing. Sourced after stack-lib.sh (CACHE, log, die, missing, check_go).
#   ensure_helm          go install helm.sh/helm/v3/cmd/helm                -> $CACHE/bin/helm-<ver>
#   ensure_kubeconform   go install github.com/yannh/kubeconform/cmd/...    -> $CACHE/bin/kubeconform-<ver>
#   ensure_helm_python   python3 with PyYAML (system, else a venv in $CACHE) -> $HELM_PYTHON
# The binaries' names carry the version, so changing a pin installs the new one.

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-v0.8.0}"
PYYAML_VERSION="6.0.3"
HELM_BIN="$CACHE/bin/helm-${HELM_VERSION#v}"
KUBECONFORM_BIN="$CACHE/bin/kubeconform-${KUBECONFORM_VERSION#v}"
HELM_PYTHON_VENV="$CACHE/venv-helm-check"

# go_install_pinned NAME MODULE_PATH VERSION DEST: `go install` into a private GOBIN,
# then move the binary to DEST (a versioned name). Logs to $CACHE/NAME-build.log.
go_install_pinned() {
  local name=$1 pkg=$2 version=$3 dest=$4
  [[ -x $dest ]] && return 0
  check_go
  log "$name: go install $pkg@$version (first time only)"
  mkdir -p "$CACHE/bin"
  local blog="$CACHE/$name-build.log" gobin
  gobin="$(mktemp -d "$CACHE/bin/.$name.XXXXXX")"
  local started=$SECONDS
  if ! (cd "$CACHE" && GOBIN="$gobin" GOWORK=off GOFLAGS=-mod=mod \
         go install -trimpath "$pkg@$version") >"$blog" 2>&1; then
    tail -20 "$blog" >&2
    rm -rf "$gobin"
    die "$name: go install failed (full log: $blog)"
  fi
  mv "$gobin/$(basename "$pkg")" "$dest"
  rm -rf "$gobin"
  log "$name: installed $dest ($((SECONDS - started)) s)"
}

ensure_helm() {
  go_install_pinned helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "$HELM_BIN"
}

ensure_kubeconform() {
  go_install_pinned kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" "$KUBECONFORM_BIN"
}

# The check's Python helpers read YAML: the system python3 if it has PyYAML, else a
# small venv with the pinned PyYAML from PyPI.
ensure_helm_python() {
  check_cmd python3 "install with: apt-get install -y python3 python3-venv"
  if python3 -c 'import yaml' >/dev/null 2>&1; then HELM_PYTHON=python3; return 0; fi
  HELM_PYTHON="$HELM_PYTHON_VENV/bin/python"
  if "$HELM_PYTHON" -c 'import yaml' >/dev/null 2>&1; then return 0; fi
  log "PyYAML: installing $PYYAML_VERSION into $HELM_PYTHON_VENV"
  python3 -m venv "$HELM_PYTHON_VENV" \
    || missing "python3 venv support — install with: apt-get install -y python3-venv"
  "$HELM_PYTHON_VENV/bin/pip" install --quiet --disable-pip-version-check "PyYAML==$PYYAML_VERSION"
}

# shellcheck shell=bash
# Test and supply-chain tools that come from package registries, each pinned and
# installed only when missing or at another version. Sourced (after stack-lib.sh)
# by scripts/install-prereqs.sh and scripts/fuzz.sh.
#   ensure_cargo_deny      cargo install cargo-deny            -> ~/.cargo/bin
#   ensure_cargo_fuzz      cargo install cargo-fuzz + nightly  -> ~/.cargo/bin
#   ensure_schemathesis    pip install -r scripts/requirements-schemathesis.txt -> $CACHE/venv

CARGO_DENY_VERSION="0.20.2"
CARGO_FUZZ_VERSION="0.13.2"
FUZZ_TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"   # cargo-fuzz needs nightly (-Zsanitizer)
SCHEMATHESIS_VENV="$CACHE/venv"

ensure_cargo_deny() {
  if [[ "$(cargo deny --version 2>/dev/null)" == "cargo-deny $CARGO_DENY_VERSION" ]]; then return 0; fi
  log "cargo-deny: installing $CARGO_DENY_VERSION (cargo install --locked)"
  cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"
}

ensure_cargo_fuzz() {
  if ! rustup run "$FUZZ_TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    log "rust $FUZZ_TOOLCHAIN: installing (rustup, minimal profile)"
    rustup toolchain install "$FUZZ_TOOLCHAIN" --profile minimal
  fi
  if [[ "$(cargo fuzz --version 2>/dev/null)" == "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then return 0; fi
  log "cargo-fuzz: installing $CARGO_FUZZ_VERSION (cargo install --locked)"
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
}

ensure_schemathesis() {
  local req="$REPO/scripts/requirements-schemathesis.txt" stamp="$SCHEMATHESIS_VENV/.requirements.sha256" want
  want="$(sha256sum "$req" | cut -c1-64)"
  if [[ -x $SCHEMATHESIS_VENV/bin/st && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then return 0; fi
  check_cmd python3 "install with: apt-get install -y python3 python3-venv"
  if [[ ! -x $SCHEMATHESIS_VENV/bin/pip ]]; then
    log "schemathesis: creating the venv $SCHEMATHESIS_VENV"
    python3 -m venv "$SCHEMATHESIS_VENV" \
      || missing "python3 venv support — install with: apt-get install -y python3-venv"
  fi
  log "schemathesis: installing $req"
  "$SCHEMATHESIS_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
}

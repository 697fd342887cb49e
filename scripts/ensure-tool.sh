#!/usr/bin/env bash
# Installs one pinned registry tool if it is missing (scripts/lib/test-tools.sh), so
# each make target installs only what it needs: `make deny` cargo-deny, `make fuzz`
# cargo-fuzz (scripts/fuzz.sh), `make test` schemathesis (install-prereqs.sh).
#   scripts/ensure-tool.sh cargo-deny | cargo-fuzz | schemathesis | ghz
# (ghz, the gRPC load tool of `make bench`, is in lib/stack-lib.sh; it prints its path)
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/stack-lib.sh
source "$SCRIPT_DIR/lib/stack-lib.sh"
# shellcheck source=lib/test-tools.sh
source "$SCRIPT_DIR/lib/test-tools.sh"
case "${1:-}" in
  cargo-deny) ensure_cargo_deny ;;
  cargo-fuzz) ensure_cargo_fuzz ;;
  schemathesis) ensure_schemathesis ;;
  ghz) ensure_ghz; echo "$GHZ_BIN" ;;
  *) echo "usage: $0 cargo-deny|cargo-fuzz|schemathesis|ghz" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Install the system prerequisites of the local stack (scripts/stack.sh) on Debian 12.
#
#   scripts/install-prereqs.sh          # apt packages (only the missing ones) + toolchain checks
#   scripts/install-prereqs.sh --all    # ... and also fetch/build the cached stack artifacts
#                                       # (Kafka jars, FerretDB, Jaeger) = scripts/stack.sh install
#
# Idempotent: runs `apt-get update` only when something has to be installed, and
# installs nothing that is already there. Must run as root (or with sudo available).
# Java 17 and Maven are installed from Debian only if absent; Go >= 1.24 (Debian 12's
# golang is 1.19, too old) must come with the machine and is only checked.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/stack-lib.sh
source "$SCRIPT_DIR/lib/stack-lib.sh"
# shellcheck source=lib/test-tools.sh
source "$SCRIPT_DIR/lib/test-tools.sh"

want_all=0
for arg in "$@"; do
  case "$arg" in
    --all) want_all=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--all]" >&2; exit 2 ;;
  esac
done

# Debian packages: package name -> a file it installs (checked instead of dpkg state so a
# tool that came another way counts as present too).
declare -A PKG_FILE=(
  [redis-server]=/usr/bin/redis-server
  [redis-tools]=/usr/bin/redis-cli
  [prometheus]=/usr/bin/prometheus
  [protobuf-compiler]=/usr/bin/protoc
  [curl]=/usr/bin/curl
  [netcat-openbsd]=/bin/nc.openbsd
  [chromium]=/usr/bin/chromium
  [chromium-driver]=/usr/bin/chromedriver
  [fonts-liberation]=/usr/share/fonts/truetype/liberation
  [ca-certificates]=/etc/ssl/certs/ca-certificates.crt
  # Building the service: protoc + the well-known protos (google/protobuf/timestamp.proto),
  # and librdkafka (built from source by the rdkafka crate; librdkafka 2.12 includes
  # curl.h even with curl disabled, hence libcurl4-openssl-dev).
  [libprotobuf-dev]=/usr/include/google/protobuf/timestamp.proto
  [cmake]=/usr/bin/cmake
  [g++]=/usr/bin/g++
  [make]=/usr/bin/make
  [pkg-config]=/usr/bin/pkg-config
  [zlib1g-dev]=/usr/include/zlib.h
  [libcurl4-openssl-dev]=/usr/include/x86_64-linux-gnu/curl/curl.h
  # librdkafka with TLS and SASL/SCRAM to Kafka (rdkafka feature `ssl`) links OpenSSL.
  [libssl-dev]=/usr/include/openssl/ssl.h
  # REST load generator for `make bench`.
  [wrk]=/usr/bin/wrk
  # scripts/lib/stack-lib.sh applies scripts/ferretdb/*.patch before building FerretDB.
  [patch]=/usr/bin/patch
)
ORDER=(curl ca-certificates netcat-openbsd protobuf-compiler libprotobuf-dev cmake g++ make pkg-config zlib1g-dev libcurl4-openssl-dev libssl-dev redis-tools redis-server prometheus chromium chromium-driver fonts-liberation wrk patch)

missing=()
for p in "${ORDER[@]}"; do
  [[ -e "${PKG_FILE[$p]}" ]] || missing+=("$p")
done
# schemathesis (scripts/lib/test-tools.sh) lives in a venv: Debian's python3 needs python3-venv.
if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  missing+=(python3-venv)
fi
# Java 17 and Maven come with the machine image; on a bare Debian 12 take Debian's.
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)

if ((${#missing[@]})); then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "missing: root — run scripts/install-prereqs.sh as root (it installs: ${missing[*]})"
    SUDO="sudo"
  fi
  log "installing: ${missing[*]}"
  # Keep the Debian packages' own services (redis-server, prometheus) from starting on
  # install: they would take 6379/9090 (prometheus on all interfaces) away from the stack.
  # policy-rc.d is honoured by invoke-rc.d and deb-systemd-invoke.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# temporary, scripts/install-prereqs.sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    created_policy=1
    trap '[[ $created_policy == 1 ]] && $SUDO rm -f "$policy"' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # If the package manager still started them (no policy support), stop the system
  # services so the ports are free for scripts/stack.sh.
  for svc in redis-server prometheus; do
    if [[ " ${missing[*]} " == *" $svc "* ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
      $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
  log "installed: ${missing[*]}"
else
  log "apt packages: all present"
fi

# Toolchains that the machine image is expected to provide.
check_java
check_cmd mvn "install with: apt-get install -y maven"
check_cmd cargo "install the Rust toolchain (rustup; see rust-toolchain.toml for the version)"
check_go
log "java: $(java -version 2>&1 | head -1)"
log "mvn:  $(mvn -v 2>/dev/null | head -1 | sed 's/\x1b\[[0-9;]*m//g')"
log "go:   $(go version)"
log "redis-server $(redis-server --version | awk '{print $3}'), prometheus $(prometheus --version 2>&1 | awk 'NR==1{print $3}'), $(chromium --version 2>/dev/null || echo 'chromium ?')"

# Registry tools the tests need, pinned (scripts/lib/test-tools.sh): the OpenAPI
# conformance test's schemathesis. `make deny` (cargo-deny) and `make fuzz` (cargo-fuzz,
# nightly Rust) install their own tools: `make test` never compiles them.
ensure_schemathesis
log "$("$SCHEMATHESIS_VENV/bin/st" --version)"

if ((want_all)); then
  "$SCRIPT_DIR/stack.sh" install
else
  log "ok. next: scripts/stack.sh up   (first run fetches Kafka and builds FerretDB/Jaeger into ${CACHE})"
fi

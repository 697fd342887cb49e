# shellcheck shell=bash
# Shared by scripts/stack.sh and scripts/install-prereqs.sh. Sourced, not run.
#
# This file owns every install step of the local stack that is not an apt package:
#   ensure_kafka_libs   Maven fetch of the Kafka broker jars  -> $CACHE/kafka-<ver>/libs
#   ensure_ferretdb     go build of FerretDB (module source + scripts/ferretdb/*.patch)
#                                                         -> $CACHE/ferretdb-<ver>/ferretdb
#   ensure_jaeger       go build of Jaeger (tools/jaeger)     -> $CACHE/bin/jaeger-<ver>
#   ensure_grpcurl      go install of grpcurl (test tool)     -> $CACHE/bin/grpcurl
#   ensure_ghz          go install of ghz (bench gRPC load)   -> $CACHE/bin/ghz-<ver>
# The apt packages are owned by scripts/install-prereqs.sh.

LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$LIB_DIR/../.." && pwd)"
CACHE="${PRODUCTS_STACK_CACHE:-$HOME/.cache/products-stack}"

KAFKA_VERSION="${KAFKA_VERSION:-4.1.2}"       # also the default in scripts/kafka/pom.xml
FERRETDB_VERSION="${FERRETDB_VERSION:-v1.24.2}"
JAEGER_VERSION="v1.76.0"                       # pinned by tools/jaeger/go.mod
GRPCURL_VERSION="${GRPCURL_VERSION:-v1.9.3}"
GHZ_VERSION="${GHZ_VERSION:-v0.120.0}"         # the gRPC load tool of `make bench`

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] %s\n' "$*" >&2; exit 1; }

# One clear line naming the missing prerequisite and how to get it, then exit non-zero.
missing() { printf 'missing: %s\n' "$*" >&2; exit 1; }

check_cmd() { # check_cmd NAME "install with: ..."
  command -v "$1" >/dev/null 2>&1 || missing "$1 — $2, or run scripts/install-prereqs.sh"
}

check_java() {
  command -v java >/dev/null 2>&1 || missing "java (17+) — install with: apt-get install -y openjdk-17-jre-headless"
  local v
  v=$(java -version 2>&1 | awk -F'"' '/version/{print $2; exit}')
  [[ ${v%%.*} =~ ^[0-9]+$ && ${v%%.*} -ge 17 ]] || missing "java 17+ (found ${v:-none}) — install with: apt-get install -y openjdk-17-jre-headless"
}

check_go() {
  command -v go >/dev/null 2>&1 || missing "go (1.24+) — install Go 1.24 or newer (Debian 12's golang is too old) and put it on PATH"
  local v
  v=$(go env GOVERSION 2>/dev/null); v=${v#go}
  local major=${v%%.*} rest=${v#*.}; local minor=${rest%%.*}
  [[ $major =~ ^[0-9]+$ && $minor =~ ^[0-9]+$ ]] && { ((major > 1)) || ((minor >= 24)); } \
    || missing "go 1.24+ (found ${v:-none}) — needed for the 'tool' directive of tools/jaeger/go.mod"
}

# ---------------------------------------------------------------------------------------
# Kafka: broker + CLI jars from Maven Central, via scripts/kafka/pom.xml
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"

ensure_kafka_libs() {
  local pom="$REPO/scripts/kafka/pom.xml" stamp="$KAFKA_HOME/.complete" want
  want="$(sha256sum "$pom" | cut -c1-64) $KAFKA_VERSION"
  if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then return 0; fi
  check_java
  check_cmd mvn "install with: apt-get install -y maven"
  log "kafka: fetching kafka_2.13 $KAFKA_VERSION jars with Maven into $KAFKA_LIBS"
  local tmp="$KAFKA_HOME/libs.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$KAFKA_HOME"
  if ! mvn -B -q -f "$pom" -Dkafka.version="$KAFKA_VERSION" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$KAFKA_HOME/mvn.log" 2>&1; then
    tail -20 "$KAFKA_HOME/mvn.log" >&2
    rm -rf "$tmp"
    die "kafka: Maven fetch failed (full log: $KAFKA_HOME/mvn.log)"
  fi
  rm -rf "$REPO/scripts/kafka/target"
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka: kafka_2.13-$KAFKA_VERSION.jar not fetched"
  rm -rf "$KAFKA_LIBS"; mv "$tmp" "$KAFKA_LIBS"
  echo "$want" >"$stamp"
  log "kafka: $(ls "$KAFKA_LIBS" | wc -l) jars, $(du -sh "$KAFKA_LIBS" | cut -f1)"
}

# java -cp with the Kafka jars: kafka_java CLASS ARGS...
kafka_java() {
  java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$REPO/scripts/kafka/log4j2.xml" \
    -Dkafka.logs.dir="${KAFKA_CLI_LOG_DIR:-${TMPDIR:-/tmp}/products-stack-kafka-cli}" "$@"
}

# ---------------------------------------------------------------------------------------
# FerretDB (MongoDB wire protocol on SQLite), built from the module source with the
# stack's patch scripts/ferretdb/$FERRETDB_VERSION-products.patch (see docs/LOCAL-STACK.md,
# "The database: FerretDB on SQLite, patched"): SQLite lookups by _id use the _id index,
# and createIndexes no longer panics when two requested indexes already exist.
FERRETDB_BIN="$CACHE/ferretdb-${FERRETDB_VERSION#v}/ferretdb"
FERRETDB_PATCH="$REPO/scripts/ferretdb/${FERRETDB_VERSION}-products.patch"

# What the cached binary was built from: version + patch checksum (in $FERRETDB_BIN.built).
ferretdb_build_id() {
  local sum=none
  [[ -f $FERRETDB_PATCH ]] && sum=$(sha256sum "$FERRETDB_PATCH" | cut -c1-16)
  echo "$FERRETDB_VERSION patch:$sum"
}

ensure_ferretdb() {
  local want; want=$(ferretdb_build_id)
  [[ -x $FERRETDB_BIN && -f $FERRETDB_BIN.built && "$(cat "$FERRETDB_BIN.built")" == "$want" ]] && return 0
  check_go
  [[ -f $FERRETDB_PATCH ]] && check_cmd patch "install with: apt-get install -y patch"
  # Not a plain `go install ...@v1.24.2`: that binary panics at start ("Invalid
  # build/version/version.txt file content") because build/version/version.txt is
  # generated by FerretDB's release tooling and is not in the module zip. So: take the
  # module source from the Go module proxy, add version.txt, apply the stack's patch and
  # build it in place. A binary built before the patch existed (no .built stamp) is rebuilt.
  log "ferretdb: building github.com/FerretDB/FerretDB/cmd/ferretdb@$FERRETDB_VERSION + $(basename "$FERRETDB_PATCH") (a few minutes the first time)"
  local blog="$CACHE/ferretdb-build.log" src="$CACHE/src/ferretdb-${FERRETDB_VERSION#v}" dir
  mkdir -p "$(dirname "$FERRETDB_BIN")" "$CACHE/src"
  {
    dir=$(cd "$CACHE" && GOWORK=off GOFLAGS=-mod=mod go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
            | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') &&
    [[ -d $dir ]] &&
    rm -rf "$src" && cp -r "$dir" "$src" && chmod -R u+w "$src" &&
    echo "$FERRETDB_VERSION" >"$src/build/version/version.txt" &&
    { [[ ! -f $FERRETDB_PATCH ]] || patch -d "$src" -p1 --batch --forward <"$FERRETDB_PATCH"; } &&
    (cd "$src" && GOWORK=off GOFLAGS=-buildvcs=false \
       go build -trimpath -ldflags='-s -w' -o "$FERRETDB_BIN.tmp" ./cmd/ferretdb) &&
    mv "$FERRETDB_BIN.tmp" "$FERRETDB_BIN" &&
    echo "$want" >"$FERRETDB_BIN.built"
  } >"$blog" 2>&1 || { tail -20 "$blog" >&2; die "ferretdb: build failed (full log: $blog)"; }
  log "ferretdb: built $FERRETDB_BIN ($("$FERRETDB_BIN" --version 2>&1 | awk '/^version:/{print $2}'), $want)"
}

# ---------------------------------------------------------------------------------------
# Jaeger (v2, OTel-collector based all-in-one) built from the tools module tools/jaeger
JAEGER_BIN="$CACHE/bin/jaeger-${JAEGER_VERSION#v}"

ensure_jaeger() {
  [[ -x $JAEGER_BIN ]] && return 0
  check_go
  log "jaeger: go build github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION from tools/jaeger (large: ~10 min on 2 cores the first time)"
  mkdir -p "$(dirname "$JAEGER_BIN")"
  local blog="$CACHE/jaeger-build.log" tmp="$JAEGER_BIN.tmp.$$"
  if ! (cd "$REPO/tools/jaeger" && GOWORK=off \
         go build -trimpath -ldflags='-s -w' -o "$tmp" github.com/jaegertracing/jaeger/cmd/jaeger) >"$blog" 2>&1; then
    tail -20 "$blog" >&2
    rm -f "$tmp"
    die "jaeger: go build failed (full log: $blog)"
  fi
  mv "$tmp" "$JAEGER_BIN"
  log "jaeger: built $JAEGER_BIN"
}

# ---------------------------------------------------------------------------------------
# grpcurl: not a service, a CLI the gRPC tests run ($CACHE/bin/grpcurl, or GRPCURL_BIN)
GRPCURL_BIN="$CACHE/bin/grpcurl"

ensure_grpcurl() {
  [[ -x $GRPCURL_BIN ]] && return 0
  check_go
  log "grpcurl: go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
  mkdir -p "$CACHE/bin"
  local blog="$CACHE/grpcurl-build.log"
  if ! (cd "$CACHE" && GOBIN="$CACHE/bin" GOWORK=off \
         go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION") >"$blog" 2>&1; then
    tail -20 "$blog" >&2
    die "grpcurl: go install failed (full log: $blog)"
  fi
  log "grpcurl: installed $GRPCURL_BIN"
}

# ghz: the gRPC load generator users reach for; `make bench` runs it against the
# service (BENCHMARKS.md). The name carries the version, so a new pin installs anew.
GHZ_BIN="$CACHE/bin/ghz-${GHZ_VERSION#v}"

ensure_ghz() {
  [[ -x $GHZ_BIN ]] && return 0
  check_go
  log "ghz: go install github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION (first time only)"
  mkdir -p "$CACHE/bin"
  local blog="$CACHE/ghz-build.log" gobin
  gobin="$(mktemp -d "$CACHE/bin/.ghz.XXXXXX")"
  if ! (cd "$CACHE" && GOBIN="$gobin" GOWORK=off GOFLAGS=-mod=mod \
         go install -trimpath "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION") >"$blog" 2>&1; then
    tail -20 "$blog" >&2
    rm -rf "$gobin"
    die "ghz: go install failed (full log: $blog)"
  fi
  mv "$gobin/ghz" "$GHZ_BIN"
  rm -rf "$gobin"
  log "ghz: installed $GHZ_BIN"
}

#!/usr/bin/env bash
# The local stack without Docker: Kafka (KRaft), FerretDB (MongoDB wire protocol),
# Redis, Prometheus and Jaeger as plain processes on 127.0.0.1. See docs/LOCAL-STACK.md.
#
#   scripts/stack.sh up   [COMPONENT...]   install what is missing, start what is not running,
#                                          wait until each answers (idempotent)
#   scripts/stack.sh down [COMPONENT...]   stop what this script started (pid files), verified
#   scripts/stack.sh restart [COMPONENT...]
#   scripts/stack.sh status                one line per component: running (pid, port) / stopped
#   scripts/stack.sh check  [COMPONENT...] exit 0 iff every (given) component runs and answers
#   scripts/stack.sh env                   the connection settings as shell exports
#   scripts/stack.sh kafka TOOL [ARGS...]  Kafka CLI with the cached jars; TOOL: topics,
#                                          console-producer, console-consumer, consumer-groups,
#                                          get-offsets, or a class name
#                                          e.g. scripts/stack.sh kafka topics --bootstrap-server 127.0.0.1:9092 --list
#   scripts/stack.sh install               only fetch/build the cached artifacts (no start),
#                                          including the grpcurl CLI ($CACHE/bin/grpcurl)
#
# COMPONENT: kafka mongo redis prometheus jaeger  (mongo = FerretDB; "ferretdb" works too)
#
# Environment:
#   KAFKA_NODES=1|3         1 (default): one combined broker+controller on 9092/9093;
#                           3: node ids 1-3 on 9092/9093, 9094/9095, 9096/9097
#   KAFKA_HEAP=512m         broker -Xmx
#   KAFKA_PORT_BASE=9092    first broker port (only to run a second stack's Kafka elsewhere)
#   FERRETDB_PORT=27017     FerretDB port (likewise; MONGO_URI follows it)
#   PRODUCTS_STACK_CACHE    downloads/builds (default ~/.cache/products-stack)
#   STACK_TIMEOUT=120       seconds to wait for each component to answer
# State (data, logs, pid files) lives in $REPO/.stack/ (git-ignored).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/stack-lib.sh
source "$SCRIPT_DIR/lib/stack-lib.sh"

STACK="$REPO/.stack"
RUN="$STACK/run"
LOGS="$STACK/logs"
DATA="$STACK/data"
TMPD="$STACK/tmp"

KAFKA_NODES="${KAFKA_NODES:-1}"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
KAFKA_PORT_BASE="${KAFKA_PORT_BASE:-9092}"   # node i: broker BASE+2(i-1), controller BASE+2(i-1)+1
STACK_TIMEOUT="${STACK_TIMEOUT:-120}"

COMPONENTS=(kafka mongo redis prometheus jaeger)

FERRETDB_PORT="${FERRETDB_PORT:-27017}"
REDIS_PORT=6379
PROM_PORT=9090
JAEGER_OTLP_GRPC=4317
JAEGER_OTLP_HTTP=4318
JAEGER_QUERY=16686
PROM_CONFIG="$REPO/deploy/prometheus/prometheus.local.yml"
JAEGER_CONFIG="$REPO/deploy/jaeger/config.yaml"

case "$KAFKA_NODES" in 1|3) ;; *) die "KAFKA_NODES must be 1 or 3 (got $KAFKA_NODES)";; esac

# ------------------------------------------------------------------------------ helpers
now_ms() { date +%s%3N; }

tcp_open() { # tcp_open PORT -> 0 if something accepts on 127.0.0.1:PORT
  timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

proc_starttime() { # field 22 of /proc/PID/stat (clock ticks since boot): identifies a process
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }                       # drop "pid (comm) " — comm may contain spaces
  awk '{print $20}' <<<"$s"
}

# The string a process of ours must have in /proc/PID/cmdline (checked before any kill).
marker() {
  case "$1" in
    kafka-*)    echo "$STACK/kafka/server-${1#kafka-}.properties" ;;
    ferretdb)   echo "--sqlite-url=file:$DATA/ferretdb/" ;;
    redis)      echo "products-stack:$STACK" ;;   # redis rewrites its argv: see --proc-title-template
    prometheus) echo "--storage.tsdb.path=$DATA/prometheus" ;;
    jaeger)     echo "$JAEGER_CONFIG" ;;
  esac
}

# ours NAME: true if NAME's pid file names a live process that is really ours; sets PID.
ours() {
  local f="$RUN/$1.pid" pid start cur
  PID=""
  [[ -f $f ]] || return 1
  read -r pid start <"$f" || true
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cur=$(proc_starttime "$pid") || return 1
  [[ -z $start || $cur == "$start" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$(marker "$1")" || return 1
  PID=$pid
}

# start_bg NAME LOGFILE CMD... : start detached (own session, stdin closed, output to
# LOGFILE) and record "PID STARTTIME" in $RUN/NAME.pid. The pid is written by the
# process itself right before it execs CMD, so it is the pid of CMD.
start_bg() {
  local name=$1 logf=$2; shift 2
  local pf="$RUN/$name.pid"
  mkdir -p "$RUN" "$(dirname "$logf")"
  rm -f "$pf" "$pf.tmp"
  # one log per run (readiness probes read it); the previous run's stays as .prev
  [[ -f $logf ]] && mv -f "$logf" "$logf.prev"
  # fd 9 (the stack.sh lock) must not leak into the long-lived process
  (cd "$STACK" && exec 9>&- && exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pf.tmp" "$@") \
    </dev/null >>"$logf" 2>&1 &
  local deadline=$(( $(now_ms) + 5000 )) pid=""
  while (( $(now_ms) < deadline )); do
    [[ -s $pf.tmp ]] && { read -r pid <"$pf.tmp"; [[ $pid =~ ^[0-9]+$ ]] && break; }
    sleep 0.05
  done
  [[ $pid =~ ^[0-9]+$ ]] || die "$name: could not start (see $logf)"
  echo "$pid $(proc_starttime "$pid" || true)" >"$pf"
  rm -f "$pf.tmp"
}

port_owner() { ss -Hltnp "sport = :$1" 2>/dev/null | head -1 | sed -E 's/.*users:\(\((.*)\)\).*/\1/'; }

# refuse to start NAME if one of its ports is taken by a process that is not ours
ensure_ports_free() {
  local name=$1 p; shift
  for p in "$@"; do
    if tcp_open "$p"; then
      die "$name: port 127.0.0.1:$p is already in use by another process ($(port_owner "$p")) — stop it first (a Debian service? e.g. systemctl stop redis-server / prometheus)"
    fi
  done
}

# ------------------------------------------------------------------------------ probes
# Each probe: exit 0 iff the component answers for real.
kafka_port() { echo $(( KAFKA_PORT_BASE + 2 * ($1 - 1) )); }
kafka_ctrl_port() { echo $(( KAFKA_PORT_BASE + 1 + 2 * ($1 - 1) )); }

probe_kafka() { # node id; log line of this run + an ApiVersions answer on the broker port
  local n=$1 port; port=$(kafka_port "$n")
  grep -qF 'Kafka Server started' "$LOGS/kafka-$n/server.log" 2>/dev/null || return 1
  # ApiVersions v0 request, correlation id 7, client id "stack": the answer starts with
  # its length (4 bytes) then the correlation id 00 00 00 07.
  local ans
  ans=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port
    printf '\x00\x00\x00\x0f\x00\x12\x00\x00\x00\x00\x00\x07\x00\x05stack' >&3
    head -c 8 <&3 | od -An -tx1" 2>/dev/null) || return 1
  [[ $(tr -d ' \n' <<<"$ans") == ????????00000007 ]]
}

probe_ferretdb() { # log line + an OP_MSG {hello: 1, $db: "admin"} answered with an OP_MSG
  grep -qF 'Listening on TCP' "$LOGS/ferretdb.log" 2>/dev/null || return 1
  local ans
  ans=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$FERRETDB_PORT
    printf '\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00\x00\x00\x00\x00\x00\x1f\x00\x00\x00\x10hello\x00\x01\x00\x00\x00\x02\$db\x00\x06\x00\x00\x00admin\x00\x00' >&3
    head -c 16 <&3 | od -An -tx1" 2>/dev/null) || return 1
  [[ $(tr -d ' \n' <<<"$ans") == ????????????????01000000dd070000 ]]
}

probe_redis() { [[ $(timeout 2 redis-cli -h 127.0.0.1 -p $REDIS_PORT ping 2>/dev/null) == PONG ]]; }

probe_prometheus() { curl -fs -m 2 -o /dev/null "http://127.0.0.1:$PROM_PORT/-/ready"; }

probe_jaeger() {
  curl -fs -m 2 -o /dev/null "http://127.0.0.1:$JAEGER_QUERY/api/services" &&
    tcp_open $JAEGER_OTLP_GRPC && tcp_open $JAEGER_OTLP_HTTP
}

probe() { # probe NAME
  case "$1" in
    kafka-*) probe_kafka "${1#kafka-}" ;;
    *) "probe_$1" ;;
  esac
}

# ------------------------------------------------------------------------------ components
# instance names of a component
instances() {
  case "$1" in
    kafka) local i; for ((i = 1; i <= KAFKA_NODES; i++)); do echo "kafka-$i"; done ;;
    mongo|ferretdb) echo ferretdb ;;
    redis|prometheus|jaeger) echo "$1" ;;
    *) die "unknown component '$1' (known: ${COMPONENTS[*]})" ;;
  esac
}

# instances with a pid file, whatever KAFKA_NODES is now (for down/status)
recorded_instances() {
  case "$1" in
    kafka) local f; for f in "$RUN"/kafka-*.pid; do [[ -e $f ]] && basename "$f" .pid; done; instances kafka ;;
    *) instances "$1" ;;
  esac | awk '!seen[$0]++'
}

ports_of() {
  case "$1" in
    kafka-*) echo "$(kafka_port "${1#kafka-}") $(kafka_ctrl_port "${1#kafka-}")" ;;
    ferretdb) echo "$FERRETDB_PORT" ;;
    redis) echo $REDIS_PORT ;;
    prometheus) echo $PROM_PORT ;;
    jaeger) echo "$JAEGER_OTLP_GRPC $JAEGER_OTLP_HTTP $JAEGER_QUERY" ;;
  esac
}

describe() {
  case "$1" in
    kafka-*) echo "127.0.0.1:$(kafka_port "${1#kafka-}") (controller $(kafka_ctrl_port "${1#kafka-}"))" ;;
    ferretdb) echo "127.0.0.1:$FERRETDB_PORT (mongodb://127.0.0.1:$FERRETDB_PORT)" ;;
    redis) echo "127.0.0.1:$REDIS_PORT" ;;
    prometheus) echo "127.0.0.1:$PROM_PORT" ;;
    jaeger) echo "127.0.0.1:$JAEGER_OTLP_GRPC otlp-grpc, :$JAEGER_OTLP_HTTP otlp-http, :$JAEGER_QUERY query" ;;
  esac
}

prereqs() { # check the prerequisites of one instance and fetch/build what is cached
  check_cmd curl "install with: apt-get install -y curl"
  check_cmd ss "install with: apt-get install -y iproute2"
  check_cmd setsid "install with: apt-get install -y util-linux"
  case "$1" in
    kafka-*) check_java; ensure_kafka_libs ;;
    ferretdb) ensure_ferretdb ;;
    redis) check_cmd redis-server "install with: apt-get install -y redis-server"
           check_cmd redis-cli "install with: apt-get install -y redis-tools" ;;
    prometheus) check_cmd prometheus "install with: apt-get install -y prometheus" ;;
    jaeger) ensure_jaeger ;;
  esac
}

kafka_cluster_id() { # one cluster id per KAFKA_NODES mode, kept in .stack
  local f="$STACK/kafka/cluster-id-${KAFKA_NODES}n" id
  if [[ ! -s $f ]]; then
    # a Kafka Uuid: 16 random bytes, base64url without padding, not starting with '-'
    id=-
    while [[ $id == -* ]]; do
      id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    done
    mkdir -p "$STACK/kafka"; echo "$id" >"$f"
  fi
  cat "$f"
}

kafka_write_props() { # node id -> server-N.properties
  local n=$1 voters="" i rf minisr
  for ((i = 1; i <= KAFKA_NODES; i++)); do voters+="${voters:+,}$i@127.0.0.1:$(kafka_ctrl_port "$i")"; done
  # 3 nodes: with controlled shutdown on, the last node standing waits (minutes) for a
  # controller quorum that is gone when the whole cluster stops; off, all stop in seconds.
  local ctrl_shutdown=true
  if ((KAFKA_NODES >= 3)); then rf=3; minisr=2; ctrl_shutdown=false; else rf=1; minisr=1; fi
  mkdir -p "$STACK/kafka"
  cat >"$STACK/kafka/server-$n.properties" <<EOF
# generated by scripts/stack.sh — do not edit (rewritten at every start)
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(kafka_port "$n"),CONTROLLER://127.0.0.1:$(kafka_ctrl_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(kafka_port "$n")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA/kafka-${KAFKA_NODES}n/node-$n
num.partitions=3
default.replication.factor=$rf
min.insync.replicas=$minisr
auto.create.topics.enable=true
group.initial.rebalance.delay.ms=0
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$minisr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$minisr
log.retention.hours=24
log.segment.bytes=67108864
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
controlled.shutdown.enable=$ctrl_shutdown
EOF
}

start_kafka() { # node id
  local n=$1 name="kafka-$1" dir="$DATA/kafka-${KAFKA_NODES}n/node-$1" props="$STACK/kafka/server-$1.properties"
  kafka_write_props "$n"
  mkdir -p "$dir" "$TMPD" "$LOGS/$name"
  if [[ ! -f $dir/meta.properties ]]; then
    log "$name: formatting storage (cluster id $(kafka_cluster_id))"
    java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$REPO/scripts/kafka/log4j2.xml" \
      -Dkafka.logs.dir="$LOGS/$name" -Djava.io.tmpdir="$TMPD" \
      kafka.tools.StorageTool format -t "$(kafka_cluster_id)" -c "$props" -g \
      >"$LOGS/$name.format.log" 2>&1 || { tail -5 "$LOGS/$name.format.log" >&2; die "$name: storage format failed (see $LOGS/$name.format.log)"; }
  fi
  # the readiness probe reads this run's server.log: keep the previous one aside
  [[ -f $LOGS/$name/server.log ]] && mv -f "$LOGS/$name/server.log" "$LOGS/$name/server.log.prev"
  start_bg "$name" "$LOGS/$name.out" \
    java "-Xmx$KAFKA_HEAP" -Xms128m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true \
    -Dlog4j2.configurationFile="$REPO/scripts/kafka/log4j2.xml" -Dkafka.logs.dir="$LOGS/$name" \
    -Djava.io.tmpdir="$TMPD" -Dorg.xerial.snappy.tempdir="$TMPD" -DZstdTempFolder="$TMPD" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$props"
}

start_ferretdb() {
  mkdir -p "$DATA/ferretdb" "$DATA/ferretdb-state"
  # FerretDB adds busy_timeout(10000), journal_mode(wal), auto_vacuum(none) itself;
  # synchronous(normal) (WAL: no fsync per commit, the database stays consistent; an OS
  # crash or power loss may lose the last commits) halves write latency: see
  # docs/LOCAL-STACK.md, "The database".
  start_bg ferretdb "$LOGS/ferretdb.log" \
    "$FERRETDB_BIN" --handler=sqlite --sqlite-url="file:$DATA/ferretdb/?_pragma=synchronous(normal)" \
    --listen-addr="127.0.0.1:$FERRETDB_PORT" --debug-addr=- \
    --state-dir="$DATA/ferretdb-state" --telemetry=disable --log-level=info
}

start_redis() {
  mkdir -p "$DATA/redis"
  start_bg redis "$LOGS/redis.log" \
    redis-server --bind 127.0.0.1 --port $REDIS_PORT --save '' --appendonly no --daemonize no \
    --dir "$DATA/redis" --protected-mode yes \
    --proc-title-template "{title} {listen-addr} $(marker redis)"
}

start_prometheus() {
  # Tests register service instances on random ports here (file_sd in the config).
  mkdir -p "$DATA/prometheus" "$STACK/prometheus-targets"
  if command -v promtool >/dev/null; then
    promtool check config "$PROM_CONFIG" >/dev/null 2>"$LOGS/promtool.log" \
      || { cat "$LOGS/promtool.log" >&2; die "prometheus: invalid $PROM_CONFIG"; }
  fi
  start_bg prometheus "$LOGS/prometheus.log" \
    prometheus --config.file="$PROM_CONFIG" --storage.tsdb.path="$DATA/prometheus" \
    --storage.tsdb.retention.time=2d --web.listen-address="127.0.0.1:$PROM_PORT" \
    --web.enable-lifecycle
}

start_jaeger() {
  start_bg jaeger "$LOGS/jaeger.log" "$JAEGER_BIN" --config="$JAEGER_CONFIG"
}

start_instance() {
  case "$1" in
    kafka-*) start_kafka "${1#kafka-}" ;;
    *) "start_$1" ;;
  esac
}

wait_ready() { # NAME: poll the probe until it answers, the process dies, or the deadline
  local name=$1 t0 deadline
  t0=$(now_ms); deadline=$(( t0 + STACK_TIMEOUT * 1000 ))
  while :; do
    if probe "$name"; then
      log "$name: ready in $(( ($(now_ms) - t0) ))ms — $(describe "$name")"
      return 0
    fi
    if ! ours "$name"; then
      log "$name: process exited while starting; last log lines:"
      tail -15 "$(logfile_of "$name")" >&2 || true
      rm -f "$RUN/$name.pid"
      return 1
    fi
    if (( $(now_ms) > deadline )); then
      log "$name: not answering after ${STACK_TIMEOUT}s (pid $PID); last log lines:"
      tail -15 "$(logfile_of "$name")" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

# A component still running a binary that has been rebuilt since it started (e.g. FerretDB
# after scripts/ferretdb/*.patch changed) keeps the old code until it is restarted.
stale_binary_hint() {
  [[ -n ${PID:-} && $(readlink "/proc/$PID/exe" 2>/dev/null) == *" (deleted)" ]] || return 0
  log "$1: runs an older build of its binary (rebuilt since it started) — scripts/stack.sh restart ${1%%-*}"
}

logfile_of() {
  case "$1" in
    kafka-*) echo "$LOGS/$1/server.log" ;;
    *) echo "$LOGS/$1.log" ;;
  esac
}

# ------------------------------------------------------------------------------ stop
still_there() { # PID STARTTIME: the same process exists and is not a zombie
  local st
  [[ $(proc_starttime "$1" 2>/dev/null) == "$2" ]] || return 1
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [[ ${st%% *} != Z ]]
}

stop_instances() { # NAME...: SIGTERM all of ours at once, wait, then SIGKILL what is left
  local name pids=() starts=() names=() i
  for name in "$@"; do
    if ours "$name"; then
      pids+=("$PID"); starts+=("$(proc_starttime "$PID")"); names+=("$name")
      log "$name: stopping pid $PID"
      kill -TERM "$PID" 2>/dev/null || true
    else
      [[ -f $RUN/$name.pid ]] && log "$name: pid file is stale (process gone or not ours), removing it"
      rm -f "$RUN/$name.pid"
    fi
  done
  ((${#pids[@]})) || return 0
  local t0 deadline killed=0 alive
  t0=$(now_ms); deadline=$(( t0 + 30000 ))
  while :; do
    alive=0
    for i in "${!pids[@]}"; do
      [[ -n ${pids[$i]} ]] || continue
      if still_there "${pids[$i]}" "${starts[$i]}"; then
        alive=1
      else
        log "${names[$i]}: stopped ($(( $(now_ms) - t0 ))ms)"
        rm -f "$RUN/${names[$i]}.pid"; pids[$i]=""
      fi
    done
    ((alive)) || break
    if (( $(now_ms) > deadline )); then
      ((killed)) && die "could not stop: ${names[*]}"
      for i in "${!pids[@]}"; do
        [[ -n ${pids[$i]} ]] || continue
        log "${names[$i]}: still running after 30s, SIGKILL pid ${pids[$i]}"
        kill -KILL "${pids[$i]}" 2>/dev/null || true
      done
      killed=1; deadline=$(( $(now_ms) + 10000 ))
    fi
    sleep 0.1
  done
}

# ------------------------------------------------------------------------------ commands
validate() { # die (in the calling shell) on an unknown component name
  local c
  for c in "$@"; do
    case "$c" in kafka|mongo|ferretdb|redis|prometheus|jaeger) ;;
      *) die "unknown component '$c' (known: ${COMPONENTS[*]})" ;; esac
  done
}

expand() { # components (default: all) -> instance names
  local c
  if (($# == 0)); then set -- "${COMPONENTS[@]}"; fi
  for c in "$@"; do instances "$c"; done
}

with_lock() { # one stack.sh up/down at a time
  mkdir -p "$STACK"
  exec 9>"$STACK/.lock"
  flock -w 600 9 || die "another scripts/stack.sh is running (lock $STACK/.lock)"
}

cmd_install() {
  local c
  for c in $(expand "$@"); do prereqs "$c"; done
  (($#)) || ensure_grpcurl
  log "install: done (cache $CACHE)"
}

cmd_up() {
  with_lock
  local t0 names name started=() failed=0
  t0=$(now_ms)
  mapfile -t names < <(expand "$@")
  for name in "${names[@]}"; do prereqs "$name"; done
  (($#)) || ensure_grpcurl     # a test tool, no service: installed by a full `up` only
  mkdir -p "$RUN" "$LOGS" "$DATA" "$TMPD"
  for name in "${names[@]}"; do
    if ours "$name"; then
      continue                      # already running: only (re)checked below
    fi
    rm -f "$RUN/$name.pid"
    # shellcheck disable=SC2046
    ensure_ports_free "$name" $(ports_of "$name")
    log "$name: starting"
    start_instance "$name"
    started+=("$name")
  done
  for name in "${names[@]}"; do
    if [[ " ${started[*]} " == *" $name "* ]]; then
      wait_ready "$name" || failed=1
    elif probe "$name"; then
      ours "$name" || true
      log "$name: already running (pid $PID) — $(describe "$name")"
      stale_binary_hint "$name"
    else
      wait_ready "$name" || failed=1
    fi
  done
  write_env
  if ((failed)); then
    die "up: some components did not come up (logs in $LOGS)"
  fi
  log "up: done in $(( ($(now_ms) - t0) ))ms"
}

cmd_down() {
  with_lock
  local names=() c
  if (($# == 0)); then set -- "${COMPONENTS[@]}"; fi
  for c in "$@"; do mapfile -t -O "${#names[@]}" names < <(recorded_instances "$c"); done
  stop_instances "${names[@]}"
  if (($# == ${#COMPONENTS[@]})); then rm -f "$STACK/env"; fi
}

cmd_status() {
  local c name state
  for c in "${COMPONENTS[@]}"; do
    while read -r name; do
      if ours "$name"; then
        if probe "$name"; then state="running"; else state="running-NOT-ANSWERING"; fi
        printf '%-11s %-8s pid %-7s %s\n' "$name" "$state" "$PID" "$(describe "$name")"
      else
        local busy="" p
        for p in $(ports_of "$name"); do tcp_open "$p" && busy+=" $p"; done
        printf '%-11s stopped%s\n' "$name" "${busy:+ (but port${busy} in use by another process)}"
      fi
    done < <(recorded_instances "$c")
  done
}

cmd_check() {
  local name bad=0
  for name in $(expand "$@"); do
    if ! { ours "$name" && probe "$name"; }; then echo "not up: $name" >&2; bad=1; fi
  done
  return $bad
}

env_lines() {
  local brokers="" i
  for ((i = 1; i <= KAFKA_NODES; i++)); do brokers+="${brokers:+,}127.0.0.1:$(kafka_port "$i")"; done
  cat <<EOF
export KAFKA_BROKERS=$brokers
export MONGO_URI=mongodb://127.0.0.1:$FERRETDB_PORT
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$JAEGER_OTLP_GRPC
export PROMETHEUS_URL=http://127.0.0.1:$PROM_PORT
export JAEGER_QUERY_URL=http://127.0.0.1:$JAEGER_QUERY
EOF
  # 3 nodes: the service creates its topics replicated like the cluster's own
  if ((KAFKA_NODES >= 3)); then
    echo "export APP__KAFKA__REPLICATION_FACTOR=3"
    echo "export APP__KAFKA__MIN_INSYNC_REPLICAS=2"
  fi
}

write_env() { env_lines >"$STACK/env"; }

cmd_kafka() {
  local tool=${1:-} cls
  (($#)) && shift
  case "$tool" in
    topics) cls=org.apache.kafka.tools.TopicCommand ;;
    console-producer) cls=org.apache.kafka.tools.ConsoleProducer ;;
    console-consumer) cls=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    consumer-groups) cls=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    get-offsets) cls=org.apache.kafka.tools.GetOffsetShell ;;
    *.*) cls=$tool ;;
    *) die "usage: scripts/stack.sh kafka topics|console-producer|console-consumer|consumer-groups|get-offsets|CLASS [ARGS...]" ;;
  esac
  ensure_kafka_libs
  KAFKA_CLI_LOG_DIR="$LOGS/kafka-cli" kafka_java "$cls" "$@"
}

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; }

main() {
  local cmd=${1:-}
  (($#)) && shift
  case "$cmd" in up|down|restart|check|install) validate "$@" ;; esac
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    restart) cmd_down "$@"; cmd_up "$@" ;;
    status) cmd_status ;;
    check) cmd_check "$@" ;;
    env) env_lines ;;
    install) cmd_install "$@" ;;
    kafka) cmd_kafka "$@" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"

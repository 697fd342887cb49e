# products-service — the targets a newcomer needs (as the Go original had).
#   make run          local stack + the service in the foreground
#   make test         local stack + every test
#   make lint         rustfmt check + clippy -D warnings
#   make deny         cargo-deny: licenses, bans, sources (offline)
#   make fuzz         bounded fuzzing of the input decoders (FUZZ_SECONDS per target)
#   make bench        benchmarks (release build, needs the local stack)
#   make cert         local CA + server certificate in .certs/ (HTTPS / gRPC over TLS)
#   make stack-up / stack-down / stack-status
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help prereqs stack-up stack-down stack-status build run test test-unit lint fmt deny deny-advisories fuzz bench cert

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

prereqs: ## install missing system packages (apt, as root) and check Java/Maven/Go/Rust
	scripts/install-prereqs.sh

stack-up: prereqs ## start Kafka, FerretDB, Redis, Prometheus, Jaeger on 127.0.0.1 (idempotent)
	scripts/stack.sh up

stack-down: ## stop what stack-up started
	scripts/stack.sh down

stack-status: ## show which stack components run
	scripts/stack.sh status

build: ## debug build of the whole workspace
	$(CARGO) build --workspace --locked

run: stack-up ## stack + the service in the foreground (Ctrl-C stops the service)
	$(CARGO) build --locked --bin products-service
	OTEL_EXPORTER_OTLP_ENDPOINT=$${OTEL_EXPORTER_OTLP_ENDPOINT:-http://127.0.0.1:4317} \
		$(CARGO) run --locked --quiet --bin products-service

test: stack-up ## stack + every test (unit, integration, end-to-end)
	$(CARGO) test --workspace --all-targets --locked

test-unit: ## tests that need no running stack
	$(CARGO) test --workspace --lib --bins --locked

lint: ## formatting and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

CERT_DIR ?= .certs
cert: ## local CA + server certificate for localhost/127.0.0.1 in .certs/ (see docs/SECURITY-CONFIG.md)
	$(CARGO) run --locked --quiet --bin products-service -- gen-cert --out $(CERT_DIR)

deny: ## supply chain (deny.toml): licenses, banned/duplicate crates, sources; works offline
	scripts/ensure-tool.sh cargo-deny
	$(CARGO) fetch --locked --quiet
	$(CARGO) deny --locked --offline check licenses bans sources

deny-advisories: ## RustSec advisories too (clones the advisory DB from github.com)
	scripts/ensure-tool.sh cargo-deny
	$(CARGO) deny --locked check advisories

FUZZ_SECONDS ?= 60
fuzz: ## coverage-guided fuzzing, FUZZ_SECONDS (60) per target; fails on a crash (scripts/fuzz.sh)
	scripts/fuzz.sh $(FUZZ_SECONDS)

BENCH_N ?= 100000
# A git worktree uses the stack of the checkout that started it:
#   make bench STACK_SH=/path/to/main/scripts/stack.sh
STACK_SH ?= scripts/stack.sh
# BENCH_SECTIONS=a,b writes bench/results/<date>-a-b.{json,md}: a partial run
# never replaces the day's full run.
bench: ## benchmarks on a release build (BENCH_N=100000): bench/results/<date>.json + .md, see BENCHMARKS.md
	@$(STACK_SH) check kafka mongo redis jaeger || { echo "make bench: the local stack is not running (make stack-up)" >&2; exit 1; }
	@command -v wrk >/dev/null || { echo "missing: wrk — install with: apt-get install -y wrk" >&2; exit 1; }
	@scripts/ensure-tool.sh ghz >/dev/null
	$(CARGO) build --release --locked --bin products-service --bin products-bench
	@mkdir -p bench/results
	s=$${BENCH_SECTIONS:-}; d=$$(date +%F)$${s:+-$${s//,/-}}; \
	BENCH_N=$(BENCH_N) BENCH_SERVICE_BIN=target/release/products-service \
	BENCH_OUT_JSON=bench/results/$$d.json.tmp BENCH_OUT_MD=bench/results/$$d.md.tmp \
		target/release/products-bench; \
	mv bench/results/$$d.json.tmp bench/results/$$d.json; \
	mv bench/results/$$d.md.tmp bench/results/$$d.md; \
	echo "make bench: wrote bench/results/$$d.json and bench/results/$$d.md"

# Helm chart (deploy/helm/products-service), checked offline: lint, render under several
# value sets, kubeconform against deploy/helm/schemas/, and value sets that must be refused.
.PHONY: helm-check
helm-check: ## Helm chart: lint, render, validate against the Kubernetes schemas (offline; scripts/helm-check.sh)
	scripts/helm-check.sh

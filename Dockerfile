# syntax=docker/dockerfile:1
#
# products-service image: a Rust build stage and a slim Debian runtime.
# Needs BuildKit (the default builder of Docker 23+ and of `docker compose`).
#
#   docker build -t products-service .
#   docker run --rm -p 127.0.0.1:5007:5007 products-service
#
# The toolchain matches rust-toolchain.toml (a test checks they agree).

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

# --------------------------------------------------------------------------
# Build stage
# --------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder

# protoc + the well-known .proto files (google/protobuf/timestamp.proto is in
# libprotobuf-dev, only "recommended" by protobuf-compiler) for build.rs;
# cmake and a C/C++ toolchain for rdkafka's `cmake-build` of librdkafka.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        protobuf-compiler libprotobuf-dev \
        cmake g++ make pkg-config \
        libcurl4-openssl-dev zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Install whatever rust-toolchain.toml asks for (a no-op when the image's
# toolchain already matches) in its own cached layer.
COPY rust-toolchain.toml ./
RUN (rustup toolchain install || true) && cargo --version

# build.rs stamps the `build_info` metric with the git sha; .git is not in the
# build context, so it can be handed in: --build-arg GIT_SHA=$(git rev-parse --short=12 HEAD)
ARG GIT_SHA=unknown
ENV PRODUCTS_GIT_SHA=${GIT_SHA} \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

COPY . .

# Cache mounts keep the crates.io registry and the compiled dependencies
# between builds: after a source change only the workspace crates recompile.
# The binary is copied out of the cache mount (which is not part of the image).
RUN --mount=type=cache,id=products-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=products-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=products-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p products-service --bin products-service \
 && install -D -m 0755 target/release/products-service /out/products-service

# --------------------------------------------------------------------------
# Runtime stage
# --------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# librdkafka is linked statically (built without curl, with OpenSSL for TLS and
# SASL/SCRAM to Kafka); the binary needs glibc, libgcc_s, zlib and libssl3 at
# run time, plus CA roots for TLS (rustls for everything but Kafka).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 products \
 && useradd --system --uid 10001 --gid products --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin products

COPY --from=builder /out/products-service /usr/local/bin/products-service

# Fail the build, not the first start, if a shared library is missing.
RUN if ldd /usr/local/bin/products-service | grep 'not found'; then \
        echo 'products-service: missing shared libraries (see above)' >&2; exit 1; \
    fi

# In a container the listeners must bind every interface (config/default.yaml
# binds loopback). Everything else is configured by the environment, see
# docker-compose.yml and docs/DOCKER.md.
ENV HTTP_ADDR=0.0.0.0:5007 \
    GRPC_ADDR=0.0.0.0:5000 \
    METRICS_ADDR=0.0.0.0:7070 \
    LOG_FORMAT=json

USER 10001:10001
EXPOSE 5007 5000 7070

# Liveness through GET /health on the HTTP port, with bash's /dev/tcp (the slim
# image has no curl or wget).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "port=\"${HTTP_ADDR##*:}\"; exec 3<>\"/dev/tcp/127.0.0.1/${port:-5007}\" || exit 1; printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3; IFS= read -r -t 2 status <&3; [[ \"$status\" == *' 200 '* ]]"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/products-service"]

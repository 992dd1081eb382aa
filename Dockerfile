# Both services in one image: `gateway` (the default command) and `ingestor`.
#
# Two ways to fill it, one runtime stage:
#
# - From binaries built on the host (no registry, no network in any step;
#   what `deploy/docker/build-images.sh` and `scripts/compose-test.sh` do):
#     strip -o ctx/gateway target/release/gateway (and the ingestor), then
#     docker build --target prebuilt --build-arg BASE_IMAGE=mt5-debian:bookworm \
#       -f Dockerfile -t mt5-gateway:dev ctx/
#   (BASE_IMAGE: the Debian 12 base that script imports with debootstrap.)
#
# - From source, where a registry is reachable (the default target):
#     DOCKER_BUILDKIT=1 docker build -t mt5-gateway:dev .
#   with a pinned toolchain, the cargo registry and target directory kept in
#   BuildKit cache mounts (a rebuild after a source change recompiles only
#   our crates), and stripped binaries.
#
# The runtime runs as uid/gid 10001 (numeric, so Kubernetes' runAsNonRoot
# can verify it), needs no writable file system and no capabilities.

ARG BASE_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1.95.0-slim-bookworm

FROM ${BASE_IMAGE} AS runtime
ENV GATEWAY_ADDR=0.0.0.0:9090 LOG_FORMAT=json
EXPOSE 9090
# SIGTERM starts the drain; give it DRAIN_TIMEOUT_SECS (10 s) plus a margin.
STOPSIGNAL SIGTERM
USER 10001:10001
CMD ["gateway"]

# Binaries from the build context (already stripped release builds).
FROM runtime AS prebuilt
COPY --chown=0:0 gateway ingestor /usr/local/bin/

# From source.
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gateway -p ingestor \
 && mkdir -p /out \
 && cp target/release/gateway target/release/ingestor /out/

FROM runtime AS source
COPY --from=build /out/gateway /out/ingestor /usr/local/bin/

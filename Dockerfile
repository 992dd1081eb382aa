# Both services in one image: `gateway` (the default command) and `ingestor`.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p gateway -p ingestor

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 mt5
COPY --from=build /src/target/release/gateway /src/target/release/ingestor /usr/local/bin/
USER mt5
ENV GATEWAY_ADDR=0.0.0.0:9090 LOG_FORMAT=json
EXPOSE 9090
# SIGTERM starts the drain; give it DRAIN_TIMEOUT_SECS (10 s) plus a margin.
STOPSIGNAL SIGTERM
CMD ["gateway"]

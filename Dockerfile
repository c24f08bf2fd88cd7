# sluice: the host binary and the example plugins, for docker-compose.yml.
#   docker build -t sluice .
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cd plugins && cargo build --release --target wasm32-wasip2 \
 && cd .. && cargo build --release -p sluice-cli

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd -m -u 10001 sluice \
 && mkdir -p /var/lib/sluice && chown sluice /var/lib/sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY --from=build /src/plugins/target/wasm32-wasip2/release/*.wasm /opt/sluice/plugins/
COPY pipelines /opt/sluice/pipelines
ENV SLUICE_PLUGINS=/opt/sluice/plugins SLUICE_CACHE_DIR=/var/lib/sluice/cache
WORKDIR /opt/sluice
USER sluice
ENTRYPOINT ["sluice"]
CMD ["--help"]

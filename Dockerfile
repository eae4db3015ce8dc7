# Multi-stage build of the ovasabi node.
#   docker build -t ovasabi .
#   docker run -e OVASABI_ADMIN_PASSWORD=change-me-now -p 8090:8090 -p 8080:8080 -p 9090:9090 ovasabi
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p api --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/ovasabi ovasabi \
 && mkdir -p /var/lib/ovasabi \
 && chown ovasabi /var/lib/ovasabi
COPY --from=build /src/target/release/ovasabi /usr/local/bin/ovasabi
USER ovasabi
WORKDIR /var/lib/ovasabi
ENV OVASABI_DATA_DIR=/var/lib/ovasabi \
    OVASABI_LOG_FORMAT=json
EXPOSE 8090 8080 9090
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
ENTRYPOINT ["ovasabi"]
CMD ["serve"]

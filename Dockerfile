# Multi-stage build of the ovasabi node.
#   docker build -t ovasabi .
#   docker run -e OVASABI_ADMIN_PASSWORD=change-me-now -p 8090:8090 -p 8080:8080 -p 9090:9090 \
#     -v ovasabi-data:/var/lib/ovasabi ovasabi
# Written and checked here by replaying its steps outside Docker (no engine on the development
# machine); see docs/operations.md.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# 1. Dependencies in a layer of their own: the manifests, the lock file, the generated-code
#    crate (its .proto files change rarely) and empty stand-ins for the other crates' sources.
COPY Cargo.toml Cargo.lock ./
COPY engine/Cargo.toml engine/
COPY services/Cargo.toml services/
COPY api/Cargo.toml api/
COPY loadtest/Cargo.toml loadtest/
COPY benches/Cargo.toml benches/
COPY fuzz/Cargo.toml fuzz/
COPY proto proto
RUN for c in engine services api loadtest benches fuzz; do mkdir -p $c/src && touch $c/src/lib.rs; done \
 && echo 'fn main() {}' > api/src/main.rs \
 && echo 'fn main() {}' > loadtest/src/main.rs \
 && mkdir -p benches/benches && echo 'fn main() {}' > benches/benches/hot_paths.rs
# A stripped release binary without debug info (the repository's release profile keeps line
# tables for profiling; 134 MB with them).
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=true
RUN cargo build --release -p api --locked
# 2. The sources; touched so that cargo rebuilds the crates the stand-ins stood for.
COPY . .
RUN find engine services api clients/js/src -type f -exec touch {} + \
 && cargo build --release -p api --locked

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
# The SQLite file and the single node's seq file live here: keep them on a volume.
VOLUME ["/var/lib/ovasabi"]
ENV OVASABI_DATA_DIR=/var/lib/ovasabi \
    OVASABI_LOG_FORMAT=json
EXPOSE 8090 8080 9090
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
ENTRYPOINT ["ovasabi"]
CMD ["serve"]

# syntax=docker/dockerfile:1
# The control plane's image. The build context is the repository root:
#   docker build -f fly/control-plane.Dockerfile -t crosscheck-control-plane .
#   fly deploy . --config fly/control-plane.fly.toml        (builds the same file)

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cargo registry and the target directory are BuildKit cache mounts with the same ids as in
# probe-agent.Dockerfile, so the second image reuses the first one's compiled dependencies.
# A cache mount is gone after this step, so the binary is copied out of it here.
RUN --mount=type=cache,id=crosscheck-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=crosscheck-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=crosscheck-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p control-plane --bin control-plane \
    && install -D -m 0755 target/release/control-plane /out/control-plane

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 crosscheck \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin crosscheck
COPY --from=build /out/control-plane /usr/local/bin/control-plane
USER 10001:10001
# 8080: REST API, /metrics, /healthz, /readyz (CROSSCHECK_LISTEN).
# 7443: gRPC result ingest over mutual TLS (CROSSCHECK_INGEST_LISTEN).
EXPOSE 8080 7443
# Listen addresses default to 127.0.0.1; the deployment sets CROSSCHECK_LISTEN and
# CROSSCHECK_INGEST_LISTEN (fly/control-plane.fly.toml does). Arguments go to the binary:
# `serve` (default), `migrate`, `create-tenant --name …`, `create-token …`.
ENTRYPOINT ["/usr/local/bin/control-plane"]

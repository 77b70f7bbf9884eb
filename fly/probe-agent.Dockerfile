# syntax=docker/dockerfile:1
# The probe agent's image. The build context is the repository root:
#   docker build -f fly/probe-agent.Dockerfile -t crosscheck-probe-agent .
#   fly deploy . --config fly/probe-agent.fly.toml --app crosscheck-agent-ams …   (see fly/README.md)

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Same cache ids as control-plane.Dockerfile: the shared crates and dependencies compile once.
RUN --mount=type=cache,id=crosscheck-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=crosscheck-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=crosscheck-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p probe-agent --bin probe-agent \
    && install -D -m 0755 target/release/probe-agent /out/probe-agent

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 crosscheck \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin crosscheck
COPY --from=build /out/probe-agent /usr/local/bin/probe-agent
USER 10001:10001
# 9090: /metrics, /healthz, /readyz, /debug/* (CROSSCHECK_AGENT_LISTEN). Not a public service.
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/probe-agent"]

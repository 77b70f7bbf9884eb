#!/usr/bin/env bash
# Runs the Crosscheck demo: makes sure PostgreSQL and Redis answer on 127.0.0.1 (starting or
# installing them when they do not), builds the workspace, and runs the walkthrough.
# Usage: ./demo.sh [--keep]
set -euo pipefail
cd "$(dirname "$0")"

pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }
wait_for() { for _ in $(seq 1 60); do "$1" && return 0; sleep 0.5; done; return 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

start_postgres() {
  if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql >/dev/null 2>&1; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  wait_for pg_up
}

start_redis() {
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
  fi
  wait_for redis_up
}

if ! pg_up || ! redis_up; then
  echo "== PostgreSQL or Redis is not answering on 127.0.0.1; bringing them up"
  pg_up || start_postgres || true
  redis_up || start_redis || true
  if { ! pg_up || ! redis_up; } && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing postgresql and redis-server from Debian packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null
    # Trust local connections, as the defaults expect (user postgres, no password).
    hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -1)
    sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/' "$hba"
    pg_up || start_postgres || true
    redis_up || start_redis || true
  fi
  if { ! pg_up || ! redis_up; } && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    echo "== starting PostgreSQL and Redis with docker compose"
    docker compose -f bench/docker-compose.yml up -d
    wait_for pg_up && wait_for redis_up
  fi
  pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
  redis_up || { echo "Redis is not reachable on 127.0.0.1:6379" >&2; exit 1; }
fi

echo "== building (release)"
cargo build --release --workspace --bins
exec target/release/bench demo "$@"

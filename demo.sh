#!/usr/bin/env bash
# Runs the Crosscheck demo: makes sure PostgreSQL and Redis answer on 127.0.0.1 (starting or
# installing them when they do not), builds the four binaries the demo runs, and runs the
# walkthrough (about two minutes).
# Usage: ./demo.sh [--keep] [--yes]
#   --keep  leave everything running after the walkthrough, until ctrl-c
#   --yes   answer yes to the one question this script may ask (see below)
#
# What it may change on this machine, and only when PostgreSQL or Redis is not answering:
#   - starts the installed PostgreSQL cluster and/or a Redis server (no persistence);
#   - as root with apt-get: installs the Debian packages `postgresql` and `redis-server`;
#   - after such an install, and only if you say yes: sets the `host all all 127.0.0.1/32` line of
#     pg_hba.conf to `trust`, so user `postgres` connects without a password as the defaults
#     expect (the file is backed up beside itself as pg_hba.conf.crosscheck-backup);
#   - where a Docker engine runs instead: `docker compose -f bench/docker-compose.yml up -d`.
set -euo pipefail
cd "$(dirname "$0")"

demo_args=()
assume_yes=false
for arg in "$@"; do
  case "$arg" in
    --yes) assume_yes=true ;;
    *) demo_args+=("$arg") ;;
  esac
done

step() { printf '\n== %s\n' "$*"; }
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

# Asks before changing PostgreSQL's authentication; without a terminal (and without --yes) the
# answer is no and the change to make by hand is printed.
trust_local_postgres() {
  local hba
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf 2>/dev/null | head -1) || true
  [ -n "$hba" ] || return 0
  echo "   The demo connects as user postgres without a password. That needs this line in $hba:"
  echo "     host all all 127.0.0.1/32 trust"
  local answer=n
  if $assume_yes; then
    answer=y
  elif [ -t 0 ]; then
    read -r -p "   Change the 127.0.0.1/32 line of pg_hba.conf to trust (a backup is kept)? [y/N] " answer
  fi
  case "$answer" in
    y|Y|yes)
      cp "$hba" "$hba.crosscheck-backup"
      sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/' "$hba"
      as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main reload || true
      echo "   changed; the previous file is $hba.crosscheck-backup" ;;
    *) echo "   left unchanged: make that change yourself (or run ./demo.sh --yes) if the demo cannot connect" ;;
  esac
}

step "1/3 PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379)"
if pg_up && redis_up; then
  echo "   both answer"
else
  pg_up || start_postgres || true
  redis_up || start_redis || true
  if { ! pg_up || ! redis_up; } && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "   installing the Debian packages postgresql and redis-server (a minute or two)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null
    pg_up || start_postgres || true
    redis_up || start_redis || true
    trust_local_postgres
  fi
  if { ! pg_up || ! redis_up; } && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    echo "   starting PostgreSQL and Redis with docker compose"
    docker compose -f bench/docker-compose.yml up -d
    wait_for pg_up && wait_for redis_up
  fi
  pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
  redis_up || { echo "Redis is not reachable on 127.0.0.1:6379" >&2; exit 1; }
  echo "   both answer"
fi

# The dev profile: the quickest first build, and the same artifacts `cargo test` uses.
step "2/3 building control-plane, probe-agent, certs and the demo runner (dev profile)"
if [ -x target/debug/bench ]; then
  echo "   incremental: seconds unless the sources changed"
else
  echo "   first build: about 4 minutes on 2 idle cores, up to 9 when they are busy (dependencies"
  echo "   included); later builds take seconds"
fi
started=$(date +%s)
cargo build --bins -p control-plane -p probe-agent -p certs -p bench
echo "   built in $(( $(date +%s) - started )) s"

step "3/3 the walkthrough (about two minutes; logs in .demo/logs/)"
exec target/debug/bench demo "${demo_args[@]+"${demo_args[@]}"}"

#!/usr/bin/env bash
# System prerequisites: Java 17+ (checked), PostgreSQL server binaries (installed when missing and we are root),
# and, with --test, Debian's Chromium for the dashboard's browser tests.
set -euo pipefail

apt_install() {
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing: $1 — install it with: sudo apt-get install -y $2" >&2
    exit 1
  fi
  echo "installing $2 (Debian packages)..."
  [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq >/dev/null; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

java_major=$(java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print v[1]; exit}' || true)
if [ -z "${java_major}" ] || [ "${java_major}" -lt 17 ]; then
  echo "missing: Java 17+ (Spark needs it) — install it with: apt-get install -y openjdk-17-jre-headless" >&2
  exit 1
fi

if [ -z "${LAKEHOUSE_PG_DSN:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  apt_install "PostgreSQL server" postgresql
fi
# btree_gist (the SCD2 exclusion constraint) ships with the server package on Debian.

if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null || apt_install "Chromium (dashboard browser tests)" chromium
fi
exit 0

#!/usr/bin/env bash
# The GCS emulator of `make test` and `make gcs-demo`: fake-gcs-server, built once from its Go module into .tools/bin.
# It speaks GCS's JSON, XML and batch APIs and honours generation preconditions (ifGenerationMatch) on every upload
# kind, resumable ones included (since v1.55.0), which Delta's GCS log store relies on.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=v1.55.1
BIN=.tools/bin
if [ -x "$BIN/fake-gcs-server" ] && [ -e "$BIN/.fake-gcs-server-$VERSION" ]; then
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "missing: Go (builds the GCS emulator fake-gcs-server) — install it with: apt-get install -y golang-go" >&2
  exit 1
fi
echo "building the GCS emulator fake-gcs-server $VERSION from its Go module (once; a few minutes the first time)..."
rm -f "$BIN"/.fake-gcs-server-*
GOBIN="$PWD/$BIN" GOFLAGS=-mod=mod go install "github.com/fsouza/fake-gcs-server@$VERSION"
touch "$BIN/.fake-gcs-server-$VERSION"

#!/usr/bin/env bash
# README command (a): install what is missing, build `wharf`, and run a single-host Wharf
# in the foreground. It prints the DOCKER_HOST / DOCKER_TLS_VERIFY / DOCKER_CERT_PATH lines
# (also written to $WHARF_DATA_DIR/client.env, default /var/lib/wharf/client.env).
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/wharf/target}"
cargo build --release --bin wharf
install -m 0755 "$CARGO_TARGET_DIR/release/wharf" /usr/local/bin/wharf
exec /usr/local/bin/wharf up "$@"

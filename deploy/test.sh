#!/usr/bin/env bash
# README command (b): the whole test suite. Installs what is missing, then rustfmt,
# clippy (warnings are errors) and every test of the workspace, unit and integration
# (the integration tests start real `wharf up` instances and drive the stock docker CLI).
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/wharf/target}"
# The docker CLI must never reach a daemon other than the Wharf under test.
unset DOCKER_HOST DOCKER_CONTEXT DOCKER_CERT_PATH DOCKER_TLS_VERIFY
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace 2>&1

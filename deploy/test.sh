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
bash deploy/check-boundary.sh
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace 2>&1
# deploy/local-cluster's own plumbing (namespaces, faults, down after a crash) with a fake
# daemon; the real multi-host tests are controller/tests/cluster.rs above.
bash deploy/test-local-cluster.sh
# The integration suite once more with `wharf up`'s agent behind a unix socket: nothing
# may depend on the controller and the agent sharing a process.
WHARF_AGENT_TRANSPORT=unix cargo test -p wharf-controller --test '*' 2>&1

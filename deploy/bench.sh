#!/usr/bin/env bash
# README "Benchmarks against Docker Engine": Wharf side by side with a private dockerd.
# As root. Installs what is missing (deploy/deps.sh; wharf-bench itself installs Debian's
# docker.io if dockerd is absent), builds the release binaries, runs the cases given (all by
# default) and writes the Markdown table to wharf-bench.md (or --out FILE).
# Example: ./deploy/bench.sh all --runs 20 --out /tmp/bench.md
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/wharf/target}"
cargo build --release -p wharf-controller --bin wharf -p wharf-chaos-tests --bin wharf-bench
exec "$CARGO_TARGET_DIR/release/wharf-bench" "$@"

#!/usr/bin/env bash
# README "Benchmarks against Docker Engine": Wharf side by side with a private dockerd.
# As root. Installs what is missing (deploy/deps.sh; wharf-bench itself installs Debian's
# docker.io if dockerd is absent), builds the release binaries, runs the cases given (all by
# default) and writes the Markdown table to wharf-bench.md (or --out FILE).
# Example: ./deploy/bench.sh all --runs 20 --out /tmp/bench.md
#
# With --against OLD_WHARF it compares the wharf built here ("new") with an older wharf
# binary ("old") instead of dockerd (issue 16: run, exec, load and memory within 10% or 5 ms
# of the old build): a second private `wharf up` of OLD_WHARF takes dockerd's place (own
# data dir, socket, port, bridge, chains, cgroups; Docker Engine is neither started nor
# installed), runs alternate old and new, and each row says ok or over. Cases default to
# run exec load memory. Build the old binary first from a detached worktree, e.g.:
#   git worktree add --detach /var/tmp/wharf-old-src 649ff19
#   (cd /var/tmp/wharf-old-src && cargo build --release -p wharf-controller --bin wharf)
#   mkdir -p /var/tmp/wharf-old && cp "$CARGO_TARGET_DIR/release/wharf" /var/tmp/wharf-old/
#   git worktree remove /var/tmp/wharf-old-src
#   ./deploy/bench.sh --against /var/tmp/wharf-old/wharf --runs 20 --heavy-runs 20 --out /tmp/issue16.md
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/wharf/target}"
cargo build --release -p wharf-controller --bin wharf -p wharf-chaos-tests --bin wharf-bench
exec "$CARGO_TARGET_DIR/release/wharf-bench" "$@"

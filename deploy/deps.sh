#!/usr/bin/env bash
# Install the system packages Wharf needs to build and test, if any is missing.
# Debian, as root. Safe to run again: it installs only what is absent.
set -euo pipefail

packages=(
  build-essential   # gcc/g++ for RocksDB and libseccomp bindings
  pkg-config
  libclang-dev      # bindgen for RocksDB
  libseccomp-dev    # youki's libcontainer (seccomp)
  busybox-static    # the test image is built from /bin/busybox
  tini              # /usr/bin/tini-static: the init of `docker run --init`
  iptables
  iproute2          # network tests: a netns + veth of their own (ip netns, ip link)
  wget              # network tests: fetch a published port from that netns
  curl              # TLS tests
  ca-certificates
  util-linux        # deploy/local-cluster: nsenter, unshare, setsid
  iputils-ping      # deploy/test-local-cluster.sh: reachability between hosts
  netcat-openbsd    # deploy/test-local-cluster.sh: partitions checked over UDP
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v docker >/dev/null 2>&1; then
  # Only the CLI is used; Wharf is the engine. Debian ships the CLI in docker.io.
  missing+=(docker.io)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  for c in "$HOME/.cargo/bin/cargo" /usr/local/cargo/bin/cargo; do
    [ -x "$c" ] && export PATH="$(dirname "$c"):$PATH"
  done
fi
command -v cargo >/dev/null 2>&1 || {
  echo "no Rust toolchain found: install one with rustup (https://rustup.rs), then run this again" >&2
  exit 1
}

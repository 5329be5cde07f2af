#!/usr/bin/env bash
# Soak bench (README "Bounded under churn"): `docker run --rm --network none` of a tiny
# image RUNS times in a row against a fresh `wharf up` of its own, printing the daemon's
# RSS, the data dir's size (all and Raft alone) and its open fds at each checkpoint.
# Not run in CI. As root, from the repository, after a build:
#   WHARF=/var/cache/wharf/target/release/wharf ./deploy/soak.sh 10000 1000,10000
set -euo pipefail
runs=${1:-1000}
marks=${2:-100,250,500,1000}
wharf=${WHARF:-/var/cache/wharf/target/release/wharf}
work=$(mktemp -d /var/tmp/wharf-soak.XXXXXX)
port=$((24000 + RANDOM % 1000))
cleanup() {
  "$wharf" down --data-dir "$work/data" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"$wharf" up --data-dir "$work/data" --api-addr "127.0.0.1:$port" \
  --unix-socket "$work/docker.sock" >"$work/wharf.log" 2>&1 &
pid=$!
for _ in $(seq 120); do [ -f "$work/data/client.env" ] && break; sleep 0.5; done
# shellcheck disable=SC1091
source "$work/data/client.env"
# A one-file image: busybox-static as /bin/true's multi-call binary.
mkdir -p "$work/img/bin"
cp /bin/busybox "$work/img/bin/busybox"
ln -s busybox "$work/img/bin/true"
tar -C "$work/img" -cf - bin | docker import -c 'CMD ["/bin/true"]' - soak:1 >/dev/null
kib() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
echo "| runs | wharf up RSS (MiB) | data dir (MiB) | raft (MiB) | open fds | s per run |"
echo "|---|---|---|---|---|---|"
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
row() {
  echo "| $1 | $(mib "$(kib)") | $(mib "$(du -sk "$work/data" | cut -f1)") |" \
    "$(mib "$(du -sk "$work/data/raft" | cut -f1)") | $(ls "/proc/$pid/fd" | wc -l) | $2 |"
}
row 0 -
IFS=, read -r -a checkpoints <<<"$marks"
done_runs=0
start=$(date +%s.%N)
for m in "${checkpoints[@]}"; do
  while [ "$done_runs" -lt "$m" ] && [ "$done_runs" -lt "$runs" ]; do
    out=$(docker run --rm --network none soak:1 2>&1) || { echo "run $done_runs failed: $out" >&2; exit 1; }
    done_runs=$((done_runs + 1))
  done
  now=$(date +%s.%N)
  row "$done_runs" "$(awk -v a="$start" -v b="$now" -v n="$done_runs" 'BEGIN { printf "%.3f", (b - a) / n }')"
done
left=$(docker ps -aq | wc -l)
[ "$left" -eq 0 ] || { echo "containers left: $left" >&2; exit 1; }

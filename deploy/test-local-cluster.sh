#!/usr/bin/env bash
# Tests deploy/local-cluster's plumbing with a fake `wharf` (a shell script that sleeps,
# starts a fake zygote, shim and container, and writes client.env): namespaces, addresses,
# host names, faults checked with ping/nc between the hosts, status, restart/poweroff/wipe,
# `down` (also after an `up` killed with SIGKILL half way) leaving nothing behind, and two
# clusters at once. Needs root, iproute2, iptables, ping (iputils-ping), nc (netcat).
# Does not need the real binary and never waits on `docker node ls`.
set -euo pipefail
cd "$(dirname "$0")/.."
LC="$PWD/deploy/local-cluster"
[ "$(id -u)" = 0 ] || {
  echo "test-local-cluster: needs root" >&2
  exit 1
}
for t in ping nc; do
  command -v "$t" >/dev/null || {
    echo "test-local-cluster: needs $t (apt-get install iputils-ping netcat-openbsd)" >&2
    exit 1
  }
done

WORK="$(mktemp -d /tmp/wlc-test.XXXXXX)"
export WHARF_BIN="$WORK/fake-wharf"
export WHARF_LOCAL_CLUSTER_NO_WAIT=1
DIRS=()
cleanup() {
  local d
  for d in "${DIRS[@]}"; do "$LC" down --dir "$d" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WHARF_BIN" <<'EOF'
#!/usr/bin/env bash
# Fake wharf: enough of the command lines for deploy/local-cluster's plumbing.
set -euo pipefail
role="$1"; shift
if [ "$role" = cluster ]; then shift; echo "FAKE-TOKEN-${*: -1}"; exit 0; fi
d=""; api=""; name=""; args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) d="$2"; shift 2 ;;
    --node-name) name="$2"; shift 2 ;;
    --api-addr) api="$2"; shift 2 ;;
    *) shift ;;
  esac
done
if [ "$role" = down ]; then echo "fake down $d"; exit 0; fi
echo "fake $role in $(hostname) argv: ${args[*]}"
sleep "${FAKE_SLOW:-0}"
mkdir -p "$d/client" "$d/containers/c1/rootfs"
bash -c "exec -a 'wharf shim-zygote --containers-dir $d/containers' sleep 100000" &
if [ "$role" = node ]; then
  bash -c "exec -a 'wharf shim --state-dir $d/containers/c1' sleep 100000" &
  # A "container": its own netns, in the containers' cgroup parent; a mount in the host.
  cg="wharf-$(printf '%s' "$d" | sha256sum | cut -c1-12)"
  mount -t tmpfs tmpfs "$d/containers/c1/rootfs"
  unshare --net sleep 100000 &
  c=$!
  for h in /sys/fs/cgroup/pids /sys/fs/cgroup/unified /sys/fs/cgroup; do
    if [ -e "$h/cgroup.procs" ]; then
      mkdir -p "$h/$cg/c1" && echo "$c" >"$h/$cg/c1/cgroup.procs"
      break
    fi
  done
fi
if [ "$role" = controller ]; then
  printf 'export DOCKER_HOST=tcp://%s\nexport DOCKER_TLS_VERIFY=1\nexport DOCKER_CERT_PATH=%s/client\n' "$api" "$d" >"$d/client.env"
fi
# Seen by the fake docker's `node ls` (below) unless this host is never to be Ready.
if [ -n "${FAKE_NODES:-}" ] && [ "$name" != "${FAKE_NOT_READY:-}" ]; then
  echo "$$" >"$FAKE_NODES/$name"
fi
while :; do sleep 1; done
EOF
chmod +x "$WHARF_BIN"

# A fake docker CLI: `node ls` lists each fake daemon that started, Ready while it runs.
mkdir -p "$WORK/bin"
cat >"$WORK/bin/docker" <<'EOF'
#!/usr/bin/env bash
[ "$1 $2" = "node ls" ] || exit 1
[[ "$DOCKER_HOST" == tcp://*:2376 ]] && [ "$DOCKER_TLS_VERIFY" = 1 ] && [ -n "$DOCKER_CERT_PATH" ] || exit 1
for f in "$FAKE_NODES"/*; do
  [ -e "$f" ] || continue
  if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$(basename "$f") Ready"; else echo "$(basename "$f") Down"; fi
done
EOF
chmod +x "$WORK/bin/docker"

PASS=0
FAIL=0
ok() {
  PASS=$((PASS + 1))
  echo "ok: $*"
}
bad() {
  FAIL=$((FAIL + 1))
  echo "FAIL: $*"
}
check() { # check DESCRIPTION CMD...
  local what="$1"
  shift
  if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}
check_not() {
  local what="$1"
  shift
  if "$@" >/dev/null 2>&1; then bad "$what"; else ok "$what"; fi
}

# `CMD | has PATTERN`: like `grep -q`, but reads all its input first, so that CMD never
# dies of SIGPIPE (which pipefail would count as a failure).
has() {
  local in
  in="$(cat)"
  grep -q "$@" <<<"$in"
}
cmdline_has() { # some process's command line contains the string
  # (grep exits 2 when a process vanished while it read; what it found still counts)
  [ -n "$(grep -lsaF -f <(echo "$1") /proc/[0-9]*/cmdline || true)" ]
}
hash_of() { printf '%s' "$1" | sha256sum | cut -c1-6; }
ip_of() { awk -v h="$2" '$1 == "host=" h {print $3}' "$1/cluster.state"; }
in_ns() { # in_ns DIR HOST CMD...
  local h
  h="$(hash_of "$1")"
  nsenter --net="/run/netns/wlc-$h-$2" -- "${@:3}"
}
reach() { in_ns "$1" "$2" ping -c1 -W1 "$(ip_of "$1" "$3")"; }
udp_arrives() { # udp_arrives DIR FROM TO: a datagram from FROM reaches TO
  local out="$WORK/udp.$RANDOM" to_ip
  to_ip="$(ip_of "$1" "$3")"
  in_ns "$1" "$3" timeout 3 nc -lu "$to_ip" 9999 >"$out" &
  local l=$!
  sleep 0.5
  echo "hello" | in_ns "$1" "$2" timeout 2 nc -u -w1 "$to_ip" 9999 || true
  wait "$l" || true
  grep -q hello "$out"
}

# Nothing of cluster DIR may be left: namespaces, links, routes, iptables, mounts,
# processes, cgroups.
assert_clean() {
  local d="$1" h left=""
  h="$(hash_of "$d")"
  ip netns list | has "wlc-$h-" && left="$left netns"
  ip -o link show | has "wlc$h" && left="$left links"
  ip -4 route show | has "wlc$h" && left="$left routes"
  iptables-save | has "$h" && left="$left iptables"
  awk '{print $5}' /proc/self/mountinfo | has "^$d\(/\|$\)" && left="$left mounts"
  cmdline_has "$d/hosts/" && left="$left processes"
  local dd cg
  for dd in "$d"/hosts/*/data "$d"/hosts/ctl-1/data "$d"/hosts/node-1/data "$d"/hosts/node-2/data; do
    cg="wharf-$(printf '%s' "$dd" | sha256sum | cut -c1-12)"
    ls -d /sys/fs/cgroup/"$cg" /sys/fs/cgroup/*/"$cg" >/dev/null 2>&1 && left="$left cgroups($cg)"
  done
  if [ -z "$left" ]; then ok "nothing of $d is left"; else bad "left of $d:$left"; fi
}

# --- argument errors --------------------------------------------------------------------
D="$WORK/c1"
DIRS+=("$D")
check_not "up without --controllers fails" "$LC" up --dir "$D" --agents 1
check_not "up with 2 controllers fails" "$LC" up --dir "$D" --controllers 2 --agents 1
check_not "up without --dir fails" "$LC" up --controllers 1 --agents 1
check_not "a label for a missing host fails" "$LC" up --dir "$D" --controllers 1 --agents 1 --label node-3:a=b
check_not "status of no cluster fails" "$LC" status --dir "$D"
check_not "an unknown verb fails" "$LC" explode --dir "$D"
assert_clean "$D"

# --- up -----------------------------------------------------------------------------------
mkdir -p "$D"
check "up 3 controllers 2 agents (flags in any order)" "$LC" up --agents 2 --label node-1:zone=a --dir "$D" --controllers 3
H="$(hash_of "$D")"
check_not "up twice fails" "$LC" up --dir "$D" --controllers 1 --agents 0
check "client.env has exactly the three lines" \
  diff <(printf 'export DOCKER_HOST=tcp://%s:2376\nexport DOCKER_TLS_VERIFY=1\nexport DOCKER_CERT_PATH=%s\n' \
    "$(ip_of "$D" ctl-1)" "$D/hosts/ctl-1/data/client") "$D/client.env"
check "five network namespaces" test "$(ip netns list | grep -c "^wlc-$H-")" = 5
for n in ctl-1 ctl-2 ctl-3 node-1 node-2; do
  check "$n runs its daemon with host name $n" grep -q "fake .* in $n argv" "$D/hosts/$n/wharf.log"
  check "$n's pid file names the daemon" grep -qaF -- "$D/hosts/$n/data" "/proc/$(cat "$D/hosts/$n/pid")/cmdline"
  check "$n's UTS namespace says $n" test "$(nsenter --uts="$D/ns/$n.uts" hostname)" = "$n"
done
check "node-1's args carry the label, bridge and subnet" \
  grep -qz -- "--label.zone=a" <(tr '\n' '.' <"$D/hosts/node-1/args")
check "node-1 has its own container bridge name" grep -qx "wlc${H}b1" "$D/hosts/node-1/args"
check "agents get different container subnets" \
  test "$(grep -A1 -- --bridge-subnet "$D/hosts/node-1/args" | tail -1)" != "$(grep -A1 -- --bridge-subnet "$D/hosts/node-2/args" | tail -1)"
check "ctl-2 joins ctl-1 with the controller token" grep -qx FAKE-TOKEN-controller "$D/hosts/ctl-2/args"
check "node-2 joins with the agent token" grep -qx FAKE-TOKEN-agent "$D/hosts/node-2/args"
check "a host's sysfs is its own netns's" test "$(nsenter --net="/run/netns/wlc-$H-node-1" --mount="$D/ns/node-1.mnt" ls /sys/class/net | tr '\n' ' ')" = "eth0 lo "
check "a host sees the cgroup hierarchies" nsenter --net="/run/netns/wlc-$H-node-1" --mount="$D/ns/node-1.mnt" test -e /sys/fs/cgroup/pids/cgroup.procs -o -e /sys/fs/cgroup/cgroup.procs
check "a host holds no namespace files (they would pin other namespaces)" \
  test "$(nsenter --mount="$D/ns/node-2.mnt" grep -c nsfs /proc/self/mounts)" = 0
check "ctl-1 reaches node-2" reach "$D" ctl-1 node-2
check "the root namespace reaches ctl-1" ping -c1 -W1 "$(ip_of "$D" ctl-1)"
out="$("$LC" status --dir "$D")"
check "status shows 5 running hosts" test "$(grep -c ' running$' <<<"$out")" = 5

# --- faults -------------------------------------------------------------------------------
check "partition ctl-1" "$LC" partition --dir "$D" ctl-1
check_not "partitioned: ctl-1 does not reach ctl-2" reach "$D" ctl-1 ctl-2
check_not "partitioned: node-1 does not reach ctl-1" reach "$D" node-1 ctl-1
check "partitioned: ctl-2 still reaches node-1" reach "$D" ctl-2 node-1
check "partitioned: the root namespace still reaches ctl-1" ping -c1 -W1 "$(ip_of "$D" ctl-1)"
check "heal" "$LC" heal --dir "$D"
check "healed: ctl-1 reaches ctl-2" reach "$D" ctl-1 ctl-2
check "partition --oneway node-1 node-2" "$LC" partition --dir "$D" node-1 --oneway node-2
check_not "oneway: node-1's datagram does not reach ctl-1" udp_arrives "$D" node-1 ctl-1
check "oneway: ctl-1's datagram reaches node-1" udp_arrives "$D" ctl-1 node-1
check "oneway: node-1 still reaches node-2" udp_arrives "$D" node-1 node-2
check_not "partition of every host fails" "$LC" partition --dir "$D" ctl-1 ctl-2 ctl-3 node-1 node-2
check "heal" "$LC" heal --dir "$D"
check "healed: node-1's datagram reaches ctl-1" udp_arrives "$D" node-1 ctl-1
check "loss node-2 100" "$LC" loss --dir "$D" node-2 100
check_not "100% loss: ctl-1 does not reach node-2" reach "$D" ctl-1 node-2
check "loss node-2 0" "$LC" loss --dir "$D" node-2 0
check "no loss: ctl-1 reaches node-2" reach "$D" ctl-1 node-2
check_not "loss 150 fails" "$LC" loss --dir "$D" node-2 150
check "rate node-1 1mbit" "$LC" rate --dir "$D" node-1 1mbit
check "tbf on node-1's root side" grep -q tbf <(tc qdisc show dev "wlc${H}n1")
check "tbf on node-1's eth0" grep -q tbf <(in_ns "$D" node-1 tc qdisc show dev eth0)
check_not "rate with a bad RATE fails" "$LC" rate --dir "$D" node-1 fast
if err="$("$LC" delay --dir "$D" node-1 20 2>&1)"; then
  check "delay: netem on node-1" grep -q netem <(tc qdisc show dev "wlc${H}n1")
else
  check "delay refused with the reason (no netem)" grep -q netem <<<"$err"
fi
check "stop ctl-2" "$LC" stop --dir "$D" ctl-2
check "status says ctl-2 stopped" grep -q "^ctl-2 .* stopped$" <("$LC" status --dir "$D")
check "heal" "$LC" heal --dir "$D"
check "heal removed node-1's qdisc" grep -qv tbf <(tc qdisc show dev "wlc${H}n1")
check "heal continued ctl-2" grep -q "^ctl-2 .* running$" <("$LC" status --dir "$D")
check_not "kill of an unknown host fails" "$LC" kill --dir "$D" node-9

# --- kill, restart, poweroff ------------------------------------------------------------
check "kill node-1" "$LC" kill --dir "$D" node-1
check "status says node-1 dead" grep -q "^node-1 .* dead$" <("$LC" status --dir "$D")
check "kill left node-1's shim alive" cmdline_has "wharf shim --state-dir $D/hosts/node-1/data"
cmdline_has "wharf shim --state-dir $D/hosts/node-1/data" || pgrep -af "$D/hosts/node-1" || true
check_not "kill of a dead daemon fails" "$LC" kill --dir "$D" node-1
check "restart node-1" "$LC" restart --dir "$D" node-1
check "status says node-1 running" grep -q "^node-1 .* running$" <("$LC" status --dir "$D")
check_not "restart of a running daemon fails" "$LC" restart --dir "$D" node-1
check "poweroff node-2" "$LC" poweroff --dir "$D" node-2
check "poweroff left no process in node-2's netns" test -z "$(ip netns pids "wlc-$H-node-2")"
check_not "poweroff left no process naming node-2's data dir" cmdline_has "$D/hosts/node-2/data"
check "node-1's processes live on" test -n "$(ip netns pids "wlc-$H-node-1")"
check "restart node-2 after poweroff" "$LC" restart --dir "$D" node-2
check "status says node-2 running" grep -q "^node-2 .* running$" <("$LC" status --dir "$D")
check_not "wipe of a running host fails" "$LC" wipe --dir "$D" ctl-1
check "poweroff ctl-1" "$LC" poweroff --dir "$D" ctl-1
check "wipe ctl-1" "$LC" wipe --dir "$D" ctl-1
check "wipe left nothing in ctl-1's data dir but the client certificate" \
  test -z "$(ls -A "$D/hosts/ctl-1/data" | grep -vx client)"
check_not "the wiped first controller no longer bootstraps" grep -qx -- --bootstrap "$D/hosts/ctl-1/args"
check "the wiped ctl-1 joins a running controller with the controller token" \
  grep -qx FAKE-TOKEN-controller "$D/hosts/ctl-1/args"
check "the wiped ctl-1 joins through ctl-2" grep -qx "$(ip_of "$D" ctl-2):2377" "$D/hosts/ctl-1/args"
check "the wiped ctl-1 keeps its own addresses" grep -qx "$(ip_of "$D" ctl-1):2376" "$D/hosts/ctl-1/args"
check "restart ctl-1 after wipe" "$LC" restart --dir "$D" ctl-1
check "status says ctl-1 running" grep -q "^ctl-1 .* running$" <("$LC" status --dir "$D")

# --- down -----------------------------------------------------------------------------
"$LC" partition --dir "$D" ctl-3 >/dev/null 2>&1
"$LC" rate --dir "$D" ctl-1 10mbit >/dev/null 2>&1
"$LC" stop --dir "$D" node-2 >/dev/null 2>&1
check "down" "$LC" down --dir "$D"
assert_clean "$D"
check "down again is fine" "$LC" down --dir "$D"
check "up again into the same DIR" "$LC" up --dir "$D" --controllers 1 --agents 1
check "down" "$LC" down --dir "$D"
assert_clean "$D"

# --- down when the binary is gone ----------------------------------------------------
G="$WORK/g"
DIRS+=("$G")
cp "$WHARF_BIN" "$WORK/gone-wharf"
check "up with a binary that will be gone" env WHARF_BIN="$WORK/gone-wharf" "$LC" up --dir "$G" --controllers 1 --agents 1
rm -f "$WORK/gone-wharf"
check "down without the binary" "$LC" down --dir "$G"
assert_clean "$G"

# --- two clusters at once ------------------------------------------------------------
A="$WORK/a"
B="$WORK/b"
DIRS+=("$A" "$B")
"$LC" up --dir "$A" --controllers 1 --agents 2 >"$WORK/a.out" 2>&1 &
pa=$!
"$LC" up --dir "$B" --controllers 3 --agents 1 >"$WORK/b.out" 2>&1 &
pb=$!
check "cluster a up (concurrently)" wait $pa
check "cluster b up (concurrently)" wait $pb
check "the two clusters have different networks" \
  test "$(grep ^net= "$A/cluster.state")" != "$(grep ^net= "$B/cluster.state")"
check "a's agents' subnets differ from b's" \
  test -z "$(comm -12 <(grep -h -A1 -- --bridge-subnet "$A"/hosts/node-*/args | grep / | sort) <(grep -h -A1 -- --bridge-subnet "$B"/hosts/node-*/args | grep / | sort))"
check "partition in a leaves b alone" "$LC" partition --dir "$A" ctl-1
check "b: ctl-1 reaches node-1" reach "$B" ctl-1 node-1
check "down a" "$LC" down --dir "$A"
assert_clean "$A"
check "b still runs" test "$("$LC" status --dir "$B" | grep -c ' running$')" = 4
check "down b" "$LC" down --dir "$B"
assert_clean "$B"

# --- waiting on docker node ls (the fake docker) ----------------------------------------
W="$WORK/w"
DIRS+=("$W")
export FAKE_NODES="$WORK/nodes"
mkdir -p "$FAKE_NODES"
check "up waits until docker node ls shows every host Ready" \
  env -u WHARF_LOCAL_CLUSTER_NO_WAIT PATH="$WORK/bin:$PATH" "$LC" up --dir "$W" --controllers 3 --agents 2
check "status: the cluster answers, 5/5 Ready" \
  grep -q "answers (via ctl-1); 5/5 hosts Ready" <(PATH="$WORK/bin:$PATH" "$LC" status --dir "$W")
"$LC" kill --dir "$W" node-2 >/dev/null 2>&1
check "restart waits until the host is Ready" \
  env -u WHARF_LOCAL_CLUSTER_NO_WAIT PATH="$WORK/bin:$PATH" "$LC" restart --dir "$W" node-2
check "down" "$LC" down --dir "$W"
assert_clean "$W"
rm -f "$FAKE_NODES"/*
if err="$(FAKE_NOT_READY=node-2 WHARF_LOCAL_CLUSTER_TIMEOUT=3 env -u WHARF_LOCAL_CLUSTER_NO_WAIT \
  PATH="$WORK/bin:$PATH" "$LC" up --dir "$W" --controllers 1 --agents 2 2>&1)"; then
  bad "up fails when a host never gets Ready"
else
  ok "up fails when a host never gets Ready"
fi
check "the failure names the host" grep -q "not Ready in docker node ls: node-2" <<<"$err"
check "the failure shows the host's log tail" grep -q "fake node in node-2" <<<"$err"
check "no client.env after a failed up" test ! -e "$W/client.env"
check "down after a failed up" "$LC" down --dir "$W"
assert_clean "$W"
unset FAKE_NODES

# --- down after an up killed half way ------------------------------------------------
for t in 0.2 0.5 1 2 3.5; do
  K="$WORK/k$t"
  DIRS+=("$K")
  FAKE_SLOW=1 "$LC" up --dir "$K" --controllers 3 --agents 2 >"$WORK/k.out" 2>&1 &
  pk=$!
  sleep "$t"
  kill -KILL $pk 2>/dev/null || true
  wait $pk 2>/dev/null || true
  check "down after up was killed at ${t}s" "$LC" down --dir "$K"
  assert_clean "$K"
done

echo "local-cluster plumbing: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]

#!/usr/bin/env bash
# bench-defrag.sh - the client-visible stall of a cluster-wide defragmentation of a ~200 MiB
# database: `etcd-bootstrap defrag --all` (one member at a time, followers first, the leader last
# after moving leadership away) against `etcdctl defrag --cluster`, in one lab and run.
#
# Usage: scripts/bench-defrag.sh [--runs 3] [--mib 200] [--summary FILE]
#
# A 3-member etcd 3.5 cluster formed by `etcd-bootstrap run` in a namespace lab (ebbenchd,
# 10.200.246, SRV discovery; maintenance.defrag_when = "" so the agents do not defragment by
# themselves), --mib values of ~1 MB. During each defrag a steady stream of writes and reads runs
# through each member's endpoint (one etcdctl put then get after another, per member); the stall
# is the longest single operation of all streams. Both ways alternate, --runs times each. Prints
# the medians of the longest stall and their ratio (goal: <= 0.5), and each stream's longest
# operation (a member's own clients stall while that member defragments, whichever tool runs it).
# Each etcdctl operation includes starting etcdctl (about 20-40 ms here): only stalls well
# above that mean anything. --summary FILE appends "DB_MIB ETCDCTL_MS BOOTSTRAP_MS RATIO".
# Needs root, scripts/install-deps.sh and `cargo build --release`.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
LAB="$HERE/lab.sh"
CACHE="${ETCD_BOOTSTRAP_LAB_CACHE:-/var/cache/etcd-bootstrap-lab}"
BIN="$REPO/target/x86_64-unknown-linux-gnu/release/etcd-bootstrap"
readonly NAME=ebbenchd SUBNET=10.200.246 DOMAIN=lab.test
RUNS=3 MIB=200 SUMMARY=""
# shellcheck source=lib/bench-common.sh
. "$HERE/lib/bench-common.sh"
# shellcheck source=lib/node-config.sh
. "$HERE/lib/node-config.sh"
die() { printf 'bench-defrag: ERROR: %s\n' "$*" >&2; exit 1; }
note() { printf 'bench-defrag: %s\n' "$*" >&2; }
while (($#)); do
    case "$1" in
    --runs) RUNS=${2:-}; shift ;;
    --mib) MIB=${2:-}; shift ;;
    --summary) SUMMARY=${2:-}; shift ;;
    -h | --help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs N (>= 1)"
[[ $MIB =~ ^[1-9][0-9]*$ && $MIB -le 1000 ]] || die "--mib N (1-1000)"
[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces)"
[[ -x $BIN ]] || die "$BIN missing: run 'cargo build --release' first"
[[ -f $CACHE/env ]] || die "$CACHE/env missing: run scripts/install-deps.sh first"
# shellcheck source=/dev/null
. "$CACHE/env"
EDIR=$ETCD_35_DIR

WORK=$(mktemp -d /tmp/bench-defrag.XXXXXX)
AGENTS=() LOADS=()
stop_loads() {
    local p
    touch "$WORK/stop-load"
    for p in "${LOADS[@]}"; do wait "$p" 2>/dev/null || true; done
    LOADS=()
    rm -f "$WORK/stop-load"
}
cleanup() {
    local p
    touch "$WORK/stop-load"
    for p in "${LOADS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${AGENTS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${AGENTS[@]}" "${LOADS[@]}"; do wait "$p" 2>/dev/null || true; done
    "$LAB" down --name "$NAME" --grace 1 >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip_of() { printf '%s.%d\n' "$SUBNET" "$((10 + $1))"; }
ns() { printf '%s-h%d\n' "$NAME" "$1"; }
"$LAB" down --name "$NAME" --grace 0 >/dev/null 2>&1 || true
"$LAB" up --name "$NAME" --subnet "$SUBNET" --hosts 3 --domain "$DOMAIN" >/dev/null 2>"$WORK/lab-up.err" ||
    die "lab.sh up: $(cat "$WORK/lab-up.err")"
"$BIN" ca init --out "$WORK/ca" >/dev/null

for h in 1 2 3; do
    d="$WORK/h$h"
    mkdir -p "$d"
    DISCOVERY_TIMEOUT=120s node_config "$d" bench 3 "$EDIR/etcd" "$WORK/ca" "srv:$DOMAIN" 2s >"$d/config.toml"
    cat >>"$d/config.toml" <<EOF
[etcd.flags]
quota-backend-bytes = 4294967296
[maintenance]
defrag_when = ""
EOF
    ip netns exec "$(ns "$h")" "$BIN" run --config "$d/config.toml" </dev/null >>"$d/agent.log" 2>&1 &
    AGENTS+=($!)
done
for _ in $(seq 1 600); do
    [[ -f $WORK/h1/pki/client.key ]] && break
    sleep 0.2
done
mkdir -p "$WORK/client"
cp "$WORK/h1/pki/ca.crt" "$WORK/h1/pki/client.crt" "$WORK/h1/pki/client.key" "$WORK/client/"
ctl() { # ENDPOINTS ARGS...
    local eps=$1
    shift
    ip netns exec "$(ns 1)" env ETCDCTL_API=3 "$EDIR/etcdctl" --endpoints "$eps" \
        --cacert "$WORK/client/ca.crt" --cert "$WORK/client/client.crt" --key "$WORK/client/client.key" \
        --dial-timeout 2s --command-timeout 120s "$@"
}
EPS="https://$(ip_of 1):2379,https://$(ip_of 2):2379,https://$(ip_of 3):2379"
for _ in $(seq 1 600); do
    ctl "$EPS" endpoint health >/dev/null 2>&1 && break
    sleep 0.2
done
ctl "$EPS" endpoint health >/dev/null 2>&1 || die "the cluster did not come up: $(tail -5 "$WORK/h1/agent.log")"

note "writing $MIB values of ~1 MB"
head -c 750000 /dev/urandom | base64 -w0 >"$WORK/value"
for i in $(seq 1 "$MIB"); do
    { printf '%04d' "$i"; cat "$WORK/value"; } | ctl "https://$(ip_of 1):2379" put "/bench/$i" >/dev/null
done
DB_MIB=$(($(stat -c %s "$WORK/h1/data/member/snap/db") / 1048576))
note "database: $DB_MIB MiB on each member"

load() { # HOST OUT: put then get through HOST's endpoint until stopped; one "ms" line per op
    local h=$1 out=$2 t
    : >"$out"
    while [[ ! -f $WORK/stop-load ]]; do
        stamp
        t=$NOW
        ctl "https://$(ip_of "$h"):2379" put "/probe/$h" x >/dev/null 2>&1 || true
        stamp
        echo "$((NOW - t))" >>"$out"
        t=$NOW
        ctl "https://$(ip_of "$h"):2379" get "/probe/$h" >/dev/null 2>&1 || true
        stamp
        echo "$((NOW - t))" >>"$out"
    done
}

measure() { # LABEL COMMAND... -> RES (longest op of all streams, ms), PER ("h1/h2/h3" longest)
    local label=$1 h
    shift
    rm -f "$WORK/stop-load"
    for h in 1 2 3; do
        load "$h" "$WORK/load-$h" &
        LOADS+=($!)
    done
    sleep 2
    "$@" >"$WORK/$label.out" 2>&1 || die "$label failed: $(tail -5 "$WORK/$label.out")"
    sleep 2
    stop_loads
    PER=$(for h in 1 2 3; do worst $(cat "$WORK/load-$h"); done | paste -sd/)
    RES=$(worst $(cat "$WORK"/load-1 "$WORK"/load-2 "$WORK"/load-3))
}

A=() B=()
for run in $(seq 1 "$RUNS"); do
    measure etcdctl ctl "$EPS" defrag --cluster
    A+=("$RES")
    note "run $run: etcdctl defrag --cluster: longest operation $RES ms (per member stream: $PER)"
    measure bootstrap ip netns exec "$(ns 1)" "$BIN" defrag --all --config "$WORK/h1/config.toml"
    B+=("$RES")
    note "run $run: etcd-bootstrap defrag --all: longest operation $RES ms (per member stream: $PER)"
done
ma=$(median "${A[@]}") mb=$(median "${B[@]}")
r=$(ratio "$ma" "$mb")
printf 'etcd 3.5, 3 members, %s MiB database, medians of %s:\n' "$DB_MIB" "$RUNS"
printf '  etcdctl defrag --cluster:      longest client operation %6s ms\n' "$ma"
printf '  etcd-bootstrap defrag --all:   longest client operation %6s ms  (ratio %s, goal <= 0.5)\n' "$mb" "$r"
[[ -n $SUMMARY ]] && echo "$DB_MIB $ma $mb $r" >>"$SUMMARY"
exit 0

#!/usr/bin/env bash
# bench-rollout.sh - a rolling etcd upgrade (issue 23): etcd 3.4.23 -> 3.5.30 on 3 members by a
# reload of every agent at once, against the same change applied by restarting every agent at
# once (what a fleet-wide `systemctl restart` did before the rollout), in one lab and run.
#
# Usage: scripts/bench-rollout.sh [--runs 3] [--summary FILE]
#
# Each trial forms a fresh 3-member cluster of etcd 3.4.23 with `etcd-bootstrap run` in a
# namespace lab (ebbenchu, 10.200.250, SRV discovery, heal.interval 2 s, service manager
# "process": etcd is the agent's child), writes 100 keys, starts a writer (one `etcdctl put`
# after another through all three client endpoints), then changes etcd.binary to 3.5.30 in every
# configuration and, at T0:
#   a. rolling: SIGHUP to every agent (`systemctl reload`): the agents roll it one member at a
#      time, the leader last;
#   b. all at once: SIGTERM to every agent, then all started again (their etcds stop with them).
# Timed from T0 to every member's etcd running 3.5.30, healthy, every key there ("total"); the
# writer's longest gap between two successful writes in that time is the stall (each put
# includes starting etcdctl, about 20-40 ms here). For (a) the agents log each member's restart
# and catch-up ("took="): the goal is total <= 3 x their median + 10 s.
# Prints the medians. --summary FILE appends
# "ROLL_TOTAL_MS ROLL_STALL_MS ONE_MEMBER_MS ALL_TOTAL_MS ALL_STALL_MS". Needs root,
# scripts/install-deps.sh and `cargo build --release`.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
LAB="$HERE/lab.sh"
CACHE="${ETCD_BOOTSTRAP_LAB_CACHE:-/var/cache/etcd-bootstrap-lab}"
BIN="${BENCH_BIN:-$REPO/target/x86_64-unknown-linux-gnu/release/etcd-bootstrap}"
readonly NAME=ebbenchu SUBNET=10.200.250 DOMAIN=lab.test KEYS=100
readonly STEP_TIMEOUT_MS=${STEP_TIMEOUT_MS:-180000}
RUNS=3 SUMMARY=""
# shellcheck source=lib/bench-common.sh
. "$HERE/lib/bench-common.sh"
# shellcheck source=lib/node-config.sh
. "$HERE/lib/node-config.sh"
die() { printf 'bench-rollout: ERROR: %s\n' "$*" >&2; exit 1; }
note() { printf 'bench-rollout: %s\n' "$*" >&2; }
while (($#)); do
    case "$1" in
    --runs) RUNS=${2:-}; shift ;;
    --summary) SUMMARY=${2:-}; shift ;;
    -h | --help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs N (>= 1)"
[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces)"
[[ -x $BIN ]] || die "$BIN missing: run 'cargo build --release' first"
[[ -f $CACHE/env ]] || die "$CACHE/env missing: run scripts/install-deps.sh first"
# shellcheck source=/dev/null
. "$CACHE/env"
OLD=$ETCD_34_DIR/etcd NEW=$ETCD_35_DIR/etcd

WORK=$(mktemp -d /tmp/bench-rollout.XXXXXX)
AGENTS=() WRITER=""
stop_all() {
    local p
    [[ -n $WRITER ]] && { kill -TERM "$WRITER" 2>/dev/null || true; wait "$WRITER" 2>/dev/null || true; WRITER=""; }
    for p in "${AGENTS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${AGENTS[@]}"; do wait "$p" 2>/dev/null || true; done
    AGENTS=()
}
cleanup() {
    stop_all
    "$LAB" down --name "$NAME" --grace 1 >/dev/null 2>&1 || true
    # BENCH_KEEP=DIR keeps the agents' logs.
    [[ -n ${BENCH_KEEP:-} ]] && cp -r "$WORK" "$BENCH_KEEP"
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

configure() { # ETCD_BINARY
    local h
    for h in 1 2 3; do
        mkdir -p "$WORK/h$h"
        DISCOVERY_TIMEOUT=120s node_config "$WORK/h$h" bench 3 "$1" "$WORK/ca" "srv:$DOMAIN" 2s >"$WORK/h$h/config.toml"
    done
}
start_agent() { # HOST
    ip netns exec "$(ns "$1")" "$BIN" run --config "$WORK/h$1/config.toml" </dev/null >>"$WORK/h$1/agent.log" 2>&1 &
    AGENTS+=($!)
}
EPS="https://$(ip_of 1):2379,https://$(ip_of 2):2379,https://$(ip_of 3):2379"
ctl() { # ENDPOINTS ARGS... with host 1's client certificate (3.4's etcdctl works with both)
    local eps=$1
    shift
    ip netns exec "$(ns 1)" env ETCDCTL_API=3 "$ETCD_34_DIR/etcdctl" --endpoints "$eps" \
        --cacert "$WORK/h1/pki/ca.crt" --cert "$WORK/h1/pki/client.crt" --key "$WORK/h1/pki/client.key" \
        --dial-timeout 1s --command-timeout 3s "$@"
}
# Every member's etcd runs BINARY, all healthy, every key there.
all_on() { # BINARY
    local h pid n=0
    for pid in $(pgrep -x etcd); do
        for h in 1 2 3; do
            if tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qx "ETCD_DATA_DIR=$WORK/h$h/data" &&
                [[ $(readlink "/proc/$pid/exe") == "$1" ]]; then n=$((n + 1)); fi
        done
    done
    ((n == 3)) || return 1
    ctl "$EPS" endpoint health >/dev/null 2>&1 || return 1
    [[ $(ctl "https://$(ip_of 3):2379" get /bench/ --prefix --keys-only 2>/dev/null | grep -c '^/bench/') == "$KEYS" ]]
}
# The writer: the end time (ms) of each successful put, one per line, into FILE.
writer() { # FILE
    local i=0
    while :; do
        i=$((i + 1))
        if ctl "$EPS" put /stall "$i" >/dev/null 2>&1; then
            stamp
            echo "$NOW" >>"$1"
        fi
    done
}
# The longest gap between successive lines of FILE from T0 to T1 (both included as ends).
longest_gap() { # FILE T0 T1
    awk -v t0="$2" -v t1="$3" 'BEGIN { prev = t0; max = 0 }
        { if ($1 < t0) next; if ($1 > t1) exit; if ($1 - prev > max) max = $1 - prev; prev = $1 }
        END { if (t1 - prev > max) max = t1 - prev; print max }' "$1"
}

# One trial; RES_TOTAL, RES_STALL (ms), RES_ONE (median of the agents' per-member restarts, ms;
# rolling only). MODE: rolling or all.
trial() {
    local mode=$1 h t0
    stop_all
    for h in 1 2 3; do
        rm -rf "$WORK/h$h/data" "$WORK/h$h/data."* "$WORK/h$h/pki"
        mkdir -p "$WORK/h$h"
        : >"$WORK/h$h/agent.log"
    done
    configure "$OLD"
    for h in 1 2 3; do start_agent "$h"; done
    for _ in $(seq 1 900); do
        [[ -f $WORK/h1/pki/client.key ]] && all_on "$OLD" 2>/dev/null && break
        ctl "$EPS" endpoint health >/dev/null 2>&1 && break
        sleep 0.2
    done
    for i in $(seq 1 "$KEYS"); do ctl "https://$(ip_of 1):2379" put "/bench/$i" "v$i" >/dev/null; done
    all_on "$OLD" || die "$mode: the 3.4 cluster did not come up: $(tail -5 "$WORK/h1/agent.log")"
    : >"$WORK/writes"
    writer "$WORK/writes" &
    WRITER=$!
    sleep 2
    configure "$NEW"
    stamp
    t0=$NOW
    if [[ $mode == rolling ]]; then
        for p in "${AGENTS[@]}"; do kill -HUP "$p"; done
    else
        for p in "${AGENTS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
        for p in "${AGENTS[@]}"; do wait "$p" 2>/dev/null || true; done
        AGENTS=()
        for h in 1 2 3; do start_agent "$h"; done
    fi
    while ! all_on "$NEW"; do
        stamp
        ((NOW - t0 > STEP_TIMEOUT_MS)) && { tail -n 20 "$WORK"/h*/agent.log >&2; die "$mode: not every member on 3.5.30 within $((STEP_TIMEOUT_MS / 1000)) s"; }
        sleep 0.1
    done
    stamp
    RES_TOTAL=$((NOW - t0))
    kill -TERM "$WRITER" 2>/dev/null || true
    wait "$WRITER" 2>/dev/null || true
    WRITER=""
    RES_STALL=$(longest_gap "$WORK/writes" "$t0" "$NOW")
    RES_ONE=-
    if [[ $mode == rolling ]]; then
        # "etcd restarted with the configuration in force: healthy and caught up ... took=6.1s",
        # logged by the last member a moment after the cluster is seen healthy.
        for _ in $(seq 1 100); do
            (($(cat "$WORK"/h*/agent.log | grep -c 'the rollout lock passes on') >= 3)) && break
            sleep 0.1
        done
        mapfile -t tooks < <(grep -h 'healthy and caught up; the rollout lock passes on' "$WORK"/h*/agent.log |
            sed -n 's/.*took=\([0-9.]*\)\(m\{0,1\}s\).*/\1 \2/p' |
            awk '{ if ($2 == "ms") printf "%d\n", $1; else printf "%d\n", $1 * 1000 }')
        ((${#tooks[@]} == 3)) || die "rolling: ${#tooks[@]} member restarts logged, not 3"
        RES_ONE=$(median "${tooks[@]}")
    fi
}

RT=() RS=() RO=() AT=() AS=()
for run in $(seq 1 "$RUNS"); do
    trial rolling
    RT+=("$RES_TOTAL") RS+=("$RES_STALL") RO+=("$RES_ONE")
    note "run $run: rolling (reload): all on 3.5.30 in $RES_TOTAL ms, longest write stall $RES_STALL ms, one member's restart and catch-up $RES_ONE ms (median of 3)"
    trial all
    AT+=("$RES_TOTAL") AS+=("$RES_STALL")
    note "run $run: every agent restarted at once: all on 3.5.30 in $RES_TOTAL ms, longest write stall $RES_STALL ms"
done
stop_all
rt=$(median "${RT[@]}") rs=$(median "${RS[@]}") ro=$(median "${RO[@]}") at=$(median "${AT[@]}") as=$(median "${AS[@]}")
printf 'etcd 3.4.23 -> 3.5.30, 3 members, medians of %s, from the change:\n' "$RUNS"
printf '  rolling (reload):            all on 3.5.30 %6s ms (goal <= 3 x %s + 10000 = %s ms), longest write stall %5s ms (goal <= 1000)\n' \
    "$rt" "$ro" "$((3 * ro + 10000))" "$rs"
printf '  every agent restarted at once: all on 3.5.30 %6s ms, longest write stall %5s ms\n' "$at" "$as"
[[ -n $SUMMARY ]] && echo "$rt $rs $ro $at $as" >>"$SUMMARY"
exit 0

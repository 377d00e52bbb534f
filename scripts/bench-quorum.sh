#!/usr/bin/env bash
# bench-quorum.sh - quorum lost with every member accounted for (issue 27): the agents' automatic
# recovery against `etcd-bootstrap recover` run by hand, in one lab and run.
#
# Usage: scripts/bench-quorum.sh [--runs 3] [--version 3.5] [--summary FILE]
#
# A 3-member cluster formed by `etcd-bootstrap run` in a namespace lab (ebbenchq, 10.200.249, SRV
# discovery, heal.interval 2 s), 100 keys. Then, alternated, --runs times each: every agent (and
# its etcd) is stopped, the data dirs of hosts 2 and 3 are deleted (new disks), the agents of
# hosts 1 (the only copy) and 2 are started and left 5 s, then host 3's agent is started. T0 is
# the instant host 3's agent answers on its endpoint (:2378): from then on every member is
# accounted for, and nothing is left to wait for.
#   a. by hand, with heal.auto_recover = false: at T0, `etcd-bootstrap recover --yes` on host 1
#      (an operator who reacts at once); the wiped members then join by themselves;
#   b. automatic (heal.auto_recover = true, the default): nothing is run.
# Each is timed from T0 to host 1 answering as a healthy one-member (or larger) cluster ("one"),
# and to 3 started voters, no learner, `endpoint health` passing on all 3 and every key there
# ("three"). Between the second and the third member etcd refuses a membership change until every
# voter has been connected for 5 s (its strict reconfiguration check): both ways pay it.
# Prints the medians. --summary FILE appends
# "VERSION MANUAL_ONE_MS MANUAL_THREE_MS AUTO_ONE_MS AUTO_THREE_MS". Needs root,
# scripts/install-deps.sh and `cargo build --release`.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
LAB="$HERE/lab.sh"
CACHE="${ETCD_BOOTSTRAP_LAB_CACHE:-/var/cache/etcd-bootstrap-lab}"
BIN="${BENCH_BIN:-$REPO/target/x86_64-unknown-linux-gnu/release/etcd-bootstrap}"
readonly NAME=ebbenchq SUBNET=10.200.249 DOMAIN=lab.test KEYS=100
readonly STEP_TIMEOUT_MS=${STEP_TIMEOUT_MS:-120000}
RUNS=3 VERSION=3.5 SUMMARY=""
# shellcheck source=lib/bench-common.sh
. "$HERE/lib/bench-common.sh"
# shellcheck source=lib/node-config.sh
. "$HERE/lib/node-config.sh"
die() { printf 'bench-quorum: ERROR: %s\n' "$*" >&2; exit 1; }
note() { printf 'bench-quorum: %s\n' "$*" >&2; }
while (($#)); do
    case "$1" in
    --runs) RUNS=${2:-}; shift ;;
    --version) VERSION=${2:-}; shift ;;
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
case $VERSION in
3.4) EDIR=$ETCD_34_DIR ;;
3.5) EDIR=$ETCD_35_DIR ;;
*) die "--version 3.4 or 3.5, not '$VERSION'" ;;
esac

WORK=$(mktemp -d /tmp/bench-quorum.XXXXXX)
AGENTS=()
stop_all() {
    local p
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

set_auto() { # true|false
    local h
    for h in 1 2 3; do
        DISCOVERY_TIMEOUT=120s node_config "$WORK/h$h" bench 3 "$EDIR/etcd" "$WORK/ca" "srv:$DOMAIN" 2s >"$WORK/h$h/config.toml"
        printf 'auto_recover = %s\n' "$1" >>"$WORK/h$h/config.toml"
    done
}
for h in 1 2 3; do mkdir -p "$WORK/h$h"; done
set_auto true

start_agent() { # HOST
    ip netns exec "$(ns "$1")" "$BIN" run --config "$WORK/h$1/config.toml" </dev/null >>"$WORK/h$1/agent.log" 2>&1 &
    AGENTS+=($!)
}
ctl() { # ENDPOINTS ARGS... with host 1's first client certificate (kept aside)
    local eps=$1
    shift
    ip netns exec "$(ns 1)" env ETCDCTL_API=3 "$EDIR/etcdctl" --endpoints "$eps" \
        --cacert "$WORK/client/ca.crt" --cert "$WORK/client/client.crt" --key "$WORK/client/client.key" \
        --dial-timeout 1s --command-timeout 3s "$@"
}
EPS="https://$(ip_of 1):2379,https://$(ip_of 2):2379,https://$(ip_of 3):2379"
three_voters_with_keys() {
    local list
    list=$(ctl "https://$(ip_of 1):2379" member list -w json 2>/dev/null) || return 1
    # 3 members, every one started (a name) and none a learner.
    [[ $(grep -o '"name":"etcd[123]"' <<<"$list" | wc -l) == 3 ]] || return 1
    grep -q '"isLearner":true' <<<"$list" && return 1
    ctl "$EPS" endpoint health >/dev/null 2>&1 || return 1
    [[ $(ctl "https://$(ip_of 3):2379" get /bench/ --prefix --keys-only 2>/dev/null | grep -c '^/bench/') == "$KEYS" ]]
}
agent_answers() { # HOST: its endpoint takes a connection
    ip netns exec "$(ns 1)" bash -c "exec 3<>/dev/tcp/$(ip_of "$1")/2378" 2>/dev/null
}

for h in 1 2 3; do start_agent "$h"; done
for _ in $(seq 1 600); do
    [[ -f $WORK/h1/pki/client.key ]] && break
    sleep 0.2
done
mkdir -p "$WORK/client"
cp "$WORK/h1/pki/ca.crt" "$WORK/h1/pki/client.crt" "$WORK/h1/pki/client.key" "$WORK/client/"
for _ in $(seq 1 600); do
    three_voters_with_keys 2>/dev/null && break
    ctl "$EPS" endpoint health >/dev/null 2>&1 && break
    sleep 0.2
done
ctl "$EPS" endpoint health >/dev/null 2>&1 || die "the cluster did not come up: $(tail -5 "$WORK/h1/agent.log")"
for i in $(seq 1 "$KEYS"); do ctl "https://$(ip_of 1):2379" put "/bench/$i" "v$i" >/dev/null; done

# One trial: quorum lost, hosts 2 and 3 wiped, every agent back; RES_ONE and RES_THREE in ms
# since host 3's agent answers. MODE: manual or auto.
trial() {
    local mode=$1 h t0 one=""
    stop_all
    for h in 2 3; do rm -rf "$WORK/h$h/data" "$WORK/h$h/data.identity.json" "$WORK/h$h/data.removed-"*; done
    rm -rf "$WORK/h1/data.removed-"* "$WORK/h1/data.auto-recovered"
    if [[ $mode == manual ]]; then set_auto false; else set_auto true; fi
    for h in 1 2 3; do echo "===== bench-quorum: $mode trial" >>"$WORK/h$h/agent.log"; done
    start_agent 1
    start_agent 2
    sleep 5
    start_agent 3
    for _ in $(seq 1 400); do agent_answers 3 && break; sleep 0.05; done
    agent_answers 3 || die "host 3's agent does not answer on :2378"
    stamp
    t0=$NOW
    echo "===== bench-quorum: T0 $(date -u +%H:%M:%S.%N)" >>"$WORK/h1/agent.log"
    if [[ $mode == manual ]]; then
        ip netns exec "$(ns 1)" "$BIN" recover --yes --config "$WORK/h1/config.toml" >>"$WORK/recover.log" 2>&1 ||
            { tail -5 "$WORK/recover.log" >&2; die "recover by hand failed"; }
    fi
    while ! three_voters_with_keys; do
        stamp
        if [[ -z $one ]] && ctl "https://$(ip_of 1):2379" endpoint health >/dev/null 2>&1; then one=$((NOW - t0)); fi
        ((NOW - t0 > STEP_TIMEOUT_MS)) && { tail -n 20 "$WORK"/h*/agent.log >&2; die "$mode: not 3 healthy voters with every key within $((STEP_TIMEOUT_MS / 1000)) s"; }
        sleep 0.1
    done
    stamp
    RES_THREE=$((NOW - t0))
    RES_ONE=${one:-$RES_THREE}
}

MO=() MT=() AO=() AT=()
for run in $(seq 1 "$RUNS"); do
    trial manual
    MO+=("$RES_ONE") MT+=("$RES_THREE")
    note "run $run: by hand (recover --yes at once, the joins by themselves): one member $RES_ONE ms, three voters $RES_THREE ms"
    trial auto
    AO+=("$RES_ONE") AT+=("$RES_THREE")
    note "run $run: automatic: one member $RES_ONE ms, three voters $RES_THREE ms"
done
stop_all
mo=$(median "${MO[@]}") mt=$(median "${MT[@]}") ao=$(median "${AO[@]}") at=$(median "${AT[@]}")
printf 'etcd %s, 3 members, quorum lost, hosts 2 and 3 wiped, medians of %s, from the last agent answering:\n' "$VERSION" "$RUNS"
printf '  by hand (recover --yes at once): one member %6s ms, three voters %6s ms\n' "$mo" "$mt"
printf '  automatic:                       one member %6s ms, three voters %6s ms (goal <= 10000 ms)\n' "$ao" "$at"
[[ -n $SUMMARY ]] && echo "$VERSION $mo $mt $ao $at" >>"$SUMMARY"
exit 0

#!/usr/bin/env bash
# static-baseline.sh - measure etcd's own static bootstrap in a namespace lab: the
# baseline an automated bootstrapper is compared with.
#
# Usage: scripts/static-baseline.sh [--versions "3.4 3.5"] [--runs N] [--hosts N]
#                                   [--name PREFIX] [--subnet A.B.C]
#
# For each version and run: N members (default 3) in N lab hosts, plain HTTP, the
# same static --initial-cluster and a fresh token, all started together in the
# background; the time is from the start until `etcdctl endpoint health --cluster`
# (asked from host 1, polled every 50 ms) reports every member healthy. The members
# are stopped and their data removed between runs. The lab is its own (default
# PREFIX ebsb, subnet 10.200.250) and is always torn down.
#
# Needs scripts/install-deps.sh to have run (it sources $CACHE/env).

set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE="${ETCD_BOOTSTRAP_LAB_CACHE:-/var/cache/etcd-bootstrap-lab}"
VERSIONS="3.4 3.5"
RUNS=3
HOSTS=3
NAME=ebsb
SUBNET=10.200.250
HEALTH_TIMEOUT_S=30

die() {
    printf 'static-baseline: ERROR: %s\n' "$*" >&2
    exit 1
}

while (($#)); do
    case "$1" in
    --versions) VERSIONS=${2:-}; shift ;;
    --runs) RUNS=${2:-}; shift ;;
    --hosts) HOSTS=${2:-}; shift ;;
    --name) NAME=${2:-}; shift ;;
    --subnet) SUBNET=${2:-}; shift ;;
    -h | --help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument '$1'" ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ && $HOSTS =~ ^[1-9]$ ]] || die "--runs N (>=1) and --hosts N (1..9)"
[[ -f $CACHE/env ]] || die "$CACHE/env missing: run scripts/install-deps.sh first"
# shellcheck source=/dev/null
. "$CACHE/env"

WORK=$(mktemp -d /tmp/static-baseline.XXXXXX)
cleanup() {
    "$HERE/lab.sh" down --name "$NAME" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$HERE/lab.sh" up --name "$NAME" --subnet "$SUBNET" --hosts "$HOSTS" --no-srv >/dev/null

ip_of() { printf '%s.%d\n' "$SUBNET" "$((10 + $1))"; }
CLUSTER="" ENDPOINTS=""
for ((i = 1; i <= HOSTS; i++)); do
    CLUSTER+="${CLUSTER:+,}etcd$i=http://$(ip_of "$i"):2380"
    ENDPOINTS+="${ENDPOINTS:+,}http://$(ip_of "$i"):2379"
done

now_ms() { date +%s%3N; }

# Prints the milliseconds until every member is healthy.
one_run() { # BINDIR RUN
    local bin=$1 run=$2 token pids=() i ip t0 deadline d out
    token="baseline-$run-$RANDOM$RANDOM"
    t0=$(now_ms)
    for ((i = 1; i <= HOSTS; i++)); do
        ip=$(ip_of "$i")
        d="$WORK/run$run/etcd$i"
        mkdir -p "$d"
        ip netns exec "$NAME-h$i" "$bin/etcd" --name "etcd$i" --data-dir "$d/data" --logger zap \
            --listen-peer-urls "http://$ip:2380" --initial-advertise-peer-urls "http://$ip:2380" \
            --listen-client-urls "http://$ip:2379" --advertise-client-urls "http://$ip:2379" \
            --initial-cluster "$CLUSTER" --initial-cluster-token "$token" \
            --initial-cluster-state new >"$d/log" 2>&1 &
        pids+=("$!")
    done
    deadline=$((t0 + HEALTH_TIMEOUT_S * 1000))
    while :; do
        if out=$(ip netns exec "$NAME-h1" "$bin/etcdctl" --endpoints "$ENDPOINTS" \
            --dial-timeout 1s --command-timeout 1s endpoint health --cluster 2>&1) &&
            (($(grep -c 'is healthy' <<<"$out") == HOSTS)); then
            break
        fi
        if (($(now_ms) > deadline)); then
            printf '%s\n' "$out" >&2
            die "no healthy cluster after ${HEALTH_TIMEOUT_S}s (logs in $WORK/run$run)"
        fi
        sleep 0.05
    done
    echo $(($(now_ms) - t0))
    # SIGKILL, not SIGTERM: a leader stopped with SIGTERM first tries to hand over
    # leadership and, with its followers stopping too, waits ~7 s for that to time out.
    # The data is thrown away anyway.
    kill -KILL "${pids[@]}" 2>/dev/null || true
    for i in "${pids[@]}"; do wait "$i" 2>/dev/null || true; done
    rm -rf "$WORK/run$run"
}

for v in $VERSIONS; do
    case "$v" in
    3.4) bin=$ETCD_34_DIR ;;
    3.5) bin=$ETCD_35_DIR ;;
    *) die "unknown version '$v' (3.4 or 3.5)" ;;
    esac
    times=()
    for ((r = 1; r <= RUNS; r++)); do times+=("$(one_run "$bin" "$r")"); done
    sorted=$(printf '%s\n' "${times[@]}" | sort -n)
    printf 'etcd %s (%s): %d members, static bootstrap until all healthy, ms: %s (min %s, median %s, max %s)\n' \
        "$v" "$("$bin/etcd" --version | awk '/^etcd Version:/ {print $3}')" "$HOSTS" "${times[*]}" \
        "$(head -n1 <<<"$sorted")" "$(sed -n "$(((RUNS + 1) / 2))p" <<<"$sorted")" "$(tail -n1 <<<"$sorted")"
done

#!/usr/bin/env bash
# bench-restore.sh - total loss of a 3-member cluster, recovered from a ~100 MiB snapshot in S3:
# etcd-bootstrap against the classic guides' manual procedure scripted with etcdutl, in one lab
# and run.
#
# Usage: scripts/bench-restore.sh [--runs 3] [--mib 100] [--summary FILE]
#
# A 3-member etcd 3.5 cluster formed by `etcd-bootstrap run` in a namespace lab (ebbenchr,
# 10.200.248, SRV discovery), a real S3 server (SeaweedFS over HTTPS) in the lab's bridge, --mib
# MiB of incompressible values, one age-encrypted snapshot taken with `etcd-bootstrap snapshot
# save`. Every agent and etcd is then stopped and, alternated, --runs times each:
#   a. by hand (the procedure scripted, on all 3 hosts at once): download the snapshot with an
#      independent S3 client (boto3), `age -d`, `etcdutl snapshot restore` with the same
#      --initial-cluster and a fresh token, start etcd on the restored data with the
#      certificates already in place;
#   b. etcd-bootstrap: every data dir, identity record, certificate and etcd environment is gone
#      (new VMs); the 3 agents are started and restore the newest snapshot by themselves.
# Each is timed from the start to `endpoint health` passing on all 3 members with every key of
# the snapshot there. Prints the medians and their ratio (goal: <= 1.5, and < 60 s).
# --summary FILE appends "DB_MIB MANUAL_MS BOOTSTRAP_MS RATIO". Needs root,
# scripts/install-deps.sh and `cargo build --release`.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
LAB="$HERE/lab.sh"
CACHE="${ETCD_BOOTSTRAP_LAB_CACHE:-/var/cache/etcd-bootstrap-lab}"
BIN="$REPO/target/x86_64-unknown-linux-gnu/release/etcd-bootstrap"
readonly NAME=ebbenchr SUBNET=10.200.248 DOMAIN=lab.test
readonly STEP_TIMEOUT_MS=${STEP_TIMEOUT_MS:-120000}
RUNS=3 MIB=100 SUMMARY=""
# shellcheck source=lib/bench-common.sh
. "$HERE/lib/bench-common.sh"
# shellcheck source=lib/node-config.sh
. "$HERE/lib/node-config.sh"
die() { printf 'bench-restore: ERROR: %s\n' "$*" >&2; exit 1; }
note() { printf 'bench-restore: %s\n' "$*" >&2; }
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

WORK=$(mktemp -d /tmp/bench-restore.XXXXXX)
WEED_PID="" AGENTS=() ETCDS=()
stop_all() {
    local p
    for p in "${AGENTS[@]}" "${ETCDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${AGENTS[@]}" "${ETCDS[@]}"; do wait "$p" 2>/dev/null || true; done
    AGENTS=() ETCDS=()
}
cleanup() {
    stop_all
    [[ -n $WEED_PID ]] && { kill -INT "$WEED_PID" 2>/dev/null; sleep 1; kill -KILL "$WEED_PID" 2>/dev/null; } || true
    "$LAB" down --name "$NAME" --grace 1 >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip_of() { printf '%s.%d\n' "$SUBNET" "$((10 + $1))"; }
ns() { printf '%s-h%d\n' "$NAME" "$1"; }
S3IP="$SUBNET.1" BR="$NAME-br"
"$LAB" down --name "$NAME" --grace 0 >/dev/null 2>&1 || true
"$LAB" up --name "$NAME" --subnet "$SUBNET" --hosts 3 --domain "$DOMAIN" >/dev/null 2>"$WORK/lab-up.err" ||
    die "lab.sh up: $(cat "$WORK/lab-up.err")"
"$BIN" ca init --out "$WORK/ca" >/dev/null
start_s3 "$WORK" "$BR" "$S3IP"
age-keygen -o "$WORK/age.txt" 2>/dev/null
chmod 600 "$WORK/age.txt"
RECIPIENT=$(age-keygen -y "$WORK/age.txt")

for h in 1 2 3; do
    d="$WORK/h$h"
    mkdir -p "$d"
    DISCOVERY_TIMEOUT=120s node_config "$d" bench 3 "$EDIR/etcd" "$WORK/ca" "srv:$DOMAIN" 2s >"$d/config.toml"
    cat >>"$d/config.toml" <<EOF
[etcd.flags]
quota-backend-bytes = 4294967296
[backup]
url = "s3://bench/etcd"
s3_endpoint = "https://$S3IP:8333"
s3_credentials_file = "$WORK/creds"
ca_file = "$WORK/ca/ca.crt"
interval = "24h"
age_recipients = ["$RECIPIENT"]
age_identity_file = "$WORK/age.txt"
EOF
done

start_agents() {
    local h
    for h in 1 2 3; do
        ip netns exec "$(ns "$h")" "$BIN" run --config "$WORK/h$h/config.toml" </dev/null >>"$WORK/h$h/agent.log" 2>&1 &
        AGENTS+=($!)
    done
}
ctl() { # ENDPOINTS ARGS... with host 1's first client certificate (kept aside)
    local eps=$1
    shift
    ip netns exec "$(ns 1)" env ETCDCTL_API=3 "$EDIR/etcdctl" --endpoints "$eps" \
        --cacert "$WORK/client/ca.crt" --cert "$WORK/client/client.crt" --key "$WORK/client/client.key" \
        --dial-timeout 2s --command-timeout 30s "$@"
}
EPS="https://$(ip_of 1):2379,https://$(ip_of 2):2379,https://$(ip_of 3):2379"
healthy_with_keys() { # all 3 healthy and every key of the snapshot there
    ctl "$EPS" endpoint health >/dev/null 2>&1 || return 1
    [[ $(ctl "https://$(ip_of 2):2379" get /bench/ --prefix --keys-only 2>/dev/null | grep -c '^/bench/') == "$MIB" ]]
}
wait_ready() { # T0 -> RES ms since T0, or dies
    local t0=$1
    while ! healthy_with_keys; do
        stamp
        ((NOW - t0 > STEP_TIMEOUT_MS)) && { tail -n 20 "$WORK"/h*/agent.log "$WORK"/manual/h*/etcd.log "$WORK"/manual-h*.err >&2 2>/dev/null; die "not 3 healthy members with every key within $((STEP_TIMEOUT_MS / 1000)) s"; }
        sleep 0.1
    done
    stamp
    RES=$((NOW - t0))
}

start_agents
for _ in $(seq 1 600); do
    [[ -f $WORK/h1/pki/client.key ]] && break
    sleep 0.2
done
mkdir -p "$WORK/client"
cp "$WORK/h1/pki/ca.crt" "$WORK/h1/pki/client.crt" "$WORK/h1/pki/client.key" "$WORK/client/"
for _ in $(seq 1 600); do
    ctl "$EPS" endpoint health >/dev/null 2>&1 && break
    sleep 0.2
done
ctl "$EPS" endpoint health >/dev/null 2>&1 || die "the cluster did not come up: $(tail -5 "$WORK/h1/agent.log")"

note "writing $MIB MiB of incompressible values"
head -c 750000 /dev/urandom | base64 -w0 >"$WORK/value"
for i in $(seq 1 "$MIB"); do
    { printf '%04d' "$i"; cat "$WORK/value"; } | ctl "https://$(ip_of 1):2379" put "/bench/$i" >/dev/null
done
ID=$(ip netns exec "$(ns 1)" "$BIN" snapshot save --config "$WORK/h1/config.toml") || die "snapshot save failed"
OBJECT="etcd/bench/$ID.db.age"
note "snapshot $ID ($(stat -c %s "$WORK/h1/data/member/snap/db") bytes of database)"
stop_all

manual() { # -> RES ms
    local h t0 ic="etcd1=https://$(ip_of 1):2380,etcd2=https://$(ip_of 2):2380,etcd3=https://$(ip_of 3):2380"
    local token="manual-$RANDOM$RANDOM"
    rm -rf "$WORK/manual"
    stamp
    t0=$NOW
    for h in 1 2 3; do
        (
            d="$WORK/manual/h$h" ip=$(ip_of "$h") p="$WORK/h$h/pki"
            mkdir -p "$d"
            ip netns exec "$(ns "$h")" "$PY_DIR/bin/python" -c '
import sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], verify=sys.argv[2], aws_access_key_id="benchkey",
                  aws_secret_access_key="benchsecret0123456789", region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
s3.download_file("bench", sys.argv[3], sys.argv[4])
' "https://$S3IP:8333" "$WORK/ca/ca.crt" "$OBJECT" "$d/snapshot.db.age"
            age -d -i "$WORK/age.txt" -o "$d/snapshot.db" "$d/snapshot.db.age"
            "$EDIR/etcdutl" snapshot restore "$d/snapshot.db" --name "etcd$h" --initial-cluster "$ic" \
                --initial-cluster-token "$token" --initial-advertise-peer-urls "https://$ip:2380" \
                --data-dir "$d/data" >/dev/null 2>&1
            exec ip netns exec "$(ns "$h")" "$EDIR/etcd" --name "etcd$h" --data-dir "$d/data" \
                --listen-peer-urls "https://$ip:2380" --initial-advertise-peer-urls "https://$ip:2380" \
                --listen-client-urls "https://$ip:2379" --advertise-client-urls "https://$ip:2379" \
                --client-cert-auth --trusted-ca-file "$p/ca.crt" --cert-file "$p/server.crt" --key-file "$p/server.key" \
                --peer-client-cert-auth --peer-trusted-ca-file "$p/ca.crt" --peer-cert-file "$p/peer.crt" \
                --peer-key-file "$p/peer.key" --quota-backend-bytes 4294967296 >"$d/etcd.log" 2>&1
        ) 2>"$WORK/manual-h$h.err" &
        ETCDS+=($!)
    done
    wait_ready "$t0"
    stop_all
    # etcd started by hand runs as a grandchild of the subshells: stop what is left of it.
    pkill -TERM -f "$WORK/manual/h" 2>/dev/null || true
    sleep 1
}

bootstrap() { # -> RES ms
    local h t0
    for h in 1 2 3; do
        rm -rf "$WORK/h$h/data" "$WORK/h$h/data.identity.json" "$WORK/h$h/data.removed-"* \
            "$WORK/h$h/pki" "$WORK/h$h/etcd.env"
    done
    stamp
    t0=$NOW
    start_agents
    wait_ready "$t0"
    stop_all
}

A=() B=()
for run in $(seq 1 "$RUNS"); do
    manual
    A+=("$RES")
    note "run $run: by hand (boto3, age -d, etcdutl snapshot restore, etcd) on 3 hosts: $RES ms"
    bootstrap
    B+=("$RES")
    note "run $run: etcd-bootstrap (3 new VMs restore by themselves): $RES ms"
done
ma=$(median "${A[@]}") mb=$(median "${B[@]}")
r=$(ratio "$ma" "$mb")
DB_MIB=$(($(stat -c %s "$WORK/manual/h1/snapshot.db" 2>/dev/null || echo 0) / 1048576))
printf 'etcd 3.5, 3 members, snapshot of %s MiB, medians of %s:\n' "$DB_MIB" "$RUNS"
printf '  by hand (download, age -d, etcdutl snapshot restore, start): %6s ms\n' "$ma"
printf '  etcd-bootstrap (total loss, restore_on_bootstrap):           %6s ms  (ratio %s, goal <= 1.5 and < 60000 ms)\n' "$mb" "$r"
[[ -n $SUMMARY ]] && echo "$DB_MIB $ma $mb $r" >>"$SUMMARY"
exit 0

#!/usr/bin/env bash
# bench-snapshot.sh - a snapshot of a ~200 MiB etcd database to S3, etcd-bootstrap against
# `etcdctl snapshot save` to local disk, in the same lab and run.
#
# Usage: scripts/bench-snapshot.sh [--runs 3] [--mib 200] [--version 3.5] [--summary FILE]
#                                  [--decompose]
#
# A one-member cluster formed by `etcd-bootstrap run` in a namespace lab (ebbenchs,
# 10.200.247), a real S3 server (SeaweedFS `weed mini`, HTTPS with a lab-CA certificate) in the
# lab's bridge namespace, and --mib MiB of incompressible values written with etcdctl. Then,
# alternated, --runs times each:
#   a. `etcdctl snapshot save FILE` (local disk, no encryption, no upload);
#   b. `etcd-bootstrap snapshot save` (etcd's stream -> age encryption -> multipart upload to S3,
#      etcd's checksum verified, manifest written).
# Prints the medians, their ratio (goal <= 1.5) and the peak RSS of etcd-bootstrap (ru_maxrss of
# the process; goal <= 30 MiB, flat in the database size). --summary FILE appends
# "VERSION DB_MIB ETCDCTL_MS BOOTSTRAP_MS RATIO RSS_KIB". --decompose also times
# `etcd-bootstrap snapshot save` to a local directory (file://) without and with age, and to S3
# without age, and an independent client's (boto3) multipart upload of etcdctl's snapshot file to
# the same S3 server (5 MiB parts, 2 in flight, as etcd-bootstrap uploads), to tell where the
# time goes. Needs root, scripts/install-deps.sh and
# `cargo build --release`.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
LAB="$HERE/lab.sh"
CACHE="${ETCD_BOOTSTRAP_LAB_CACHE:-/var/cache/etcd-bootstrap-lab}"
BIN="$REPO/target/x86_64-unknown-linux-gnu/release/etcd-bootstrap"
readonly NAME=ebbenchs SUBNET=10.200.247
RUNS=3 MIB=200 VERSION=3.5 SUMMARY="" DECOMPOSE=0

# shellcheck source=lib/bench-common.sh
. "$HERE/lib/bench-common.sh"
# shellcheck source=lib/node-config.sh
. "$HERE/lib/node-config.sh"

die() { printf 'bench-snapshot: ERROR: %s\n' "$*" >&2; exit 1; }
note() { printf 'bench-snapshot: %s\n' "$*" >&2; }

while (($#)); do
    case "$1" in
    --runs) RUNS=${2:-}; shift ;;
    --mib) MIB=${2:-}; shift ;;
    --version) VERSION=${2:-}; shift ;;
    --summary) SUMMARY=${2:-}; shift ;;
    --decompose) DECOMPOSE=1 ;;
    -h | --help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs N (>= 1)"
[[ $MIB =~ ^[1-9][0-9]*$ && $MIB -le 1500 ]] || die "--mib N (1-1500)"
[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces)"
[[ -x $BIN ]] || die "$BIN missing: run 'cargo build --release' first"
[[ -f $CACHE/env ]] || die "$CACHE/env missing: run scripts/install-deps.sh first"
# shellcheck source=/dev/null
. "$CACHE/env"
case $VERSION in
3.4) EDIR=$ETCD_34_DIR ;;
3.5) EDIR=$ETCD_35_DIR ;;
*) die "--version 3.4 or 3.5" ;;
esac

WORK=$(mktemp -d /tmp/bench-snapshot.XXXXXX)
WEED_PID=""
cleanup() {
    [[ -n $WEED_PID ]] && { kill -INT "$WEED_PID" 2>/dev/null; sleep 1; kill -KILL "$WEED_PID" 2>/dev/null; } || true
    [[ -n ${AGENT:-} ]] && kill -TERM "$AGENT" 2>/dev/null || true
    sleep 1
    "$LAB" down --name "$NAME" --grace 1 >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

IP="$SUBNET.11" S3IP="$SUBNET.1" NS="$NAME-h1" BR="$NAME-br"
"$LAB" down --name "$NAME" --grace 0 >/dev/null 2>&1 || true
"$LAB" up --name "$NAME" --subnet "$SUBNET" --hosts 1 --no-srv >/dev/null 2>"$WORK/lab-up.err" ||
    die "lab.sh up: $(cat "$WORK/lab-up.err")"

# The CA, the S3 server's certificate, the S3 server.
"$BIN" ca init --out "$WORK/ca" >/dev/null
start_s3 "$WORK" "$BR" "$S3IP"
age-keygen -o "$WORK/age.txt" 2>/dev/null
chmod 600 "$WORK/age.txt"
RECIPIENT=$(age-keygen -y "$WORK/age.txt")

DISCOVERY_TIMEOUT=60s node_config "$WORK" bench 1 "$EDIR/etcd" "$WORK/ca" "peers:\"node1=https://$IP:2380\"" >"$WORK/config.toml"
cat >>"$WORK/config.toml" <<EOF
[etcd.flags]
quota-backend-bytes = 4294967296
[backup]
url = "s3://bench/etcd"
s3_endpoint = "https://$S3IP:8333"
s3_credentials_file = "$WORK/creds"
ca_file = "$WORK/ca/ca.crt"
interval = "24h"
age_recipients = ["$RECIPIENT"]
EOF

ip netns exec "$NS" "$BIN" run --config "$WORK/config.toml" >"$WORK/agent.log" 2>&1 &
AGENT=$!
ctl() {
    ip netns exec "$NS" env ETCDCTL_API=3 "$EDIR/etcdctl" --endpoints "https://$IP:2379" \
        --cacert "$WORK/pki/ca.crt" --cert "$WORK/pki/client.crt" --key "$WORK/pki/client.key" \
        --dial-timeout 3s --command-timeout 60s "$@"
}
for _ in $(seq 1 300); do
    [[ -f $WORK/pki/client.key ]] && ctl endpoint health >/dev/null 2>&1 && break
    sleep 0.2
done
ctl endpoint health >/dev/null 2>&1 || die "the cluster did not come up: $(tail -5 "$WORK/agent.log")"

note "writing $MIB MiB of incompressible values"
# 750,000 random bytes are 1,000,000 base64 characters (no `head` closing a pipe under pipefail).
head -c 750000 /dev/urandom | base64 -w0 >"$WORK/value"
for i in $(seq 1 "$MIB"); do
    # A fresh value each time (shifted), so that nothing dedups.
    { printf '%04d' "$i"; cat "$WORK/value"; } | ctl put "/bench/$i" >/dev/null
done
DB_MIB=$(($(stat -c %s "$WORK/data/member/snap/db") / 1048576))
note "database: $DB_MIB MiB"

# Run "$@" and print "MS MAXRSS_KIB" (the child's peak resident memory).
timed() {
    python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
ms = int((time.monotonic() - t) * 1000)
if r.returncode != 0:
    sys.stderr.write(r.stderr.decode(errors="replace"))
    sys.exit(r.returncode)
print(ms, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PY
}

# Variants of the config for --decompose: [backup] to a local directory or without age.
variant() { # NAME URL AGE(0|1)
    sed -e "s|^url = .*|url = \"$2\"|" "$WORK/config.toml" >"$WORK/config-$1.toml"
    if [[ $3 == 0 ]]; then sed -i '/^age_recipients/d' "$WORK/config-$1.toml"; fi
    if [[ $2 == file://* ]]; then sed -i '/^s3_endpoint/d; /^s3_credentials_file/d; /^ca_file/d' "$WORK/config-$1.toml"; fi
}
if ((DECOMPOSE)); then
    mkdir -p "$WORK/store"
    variant file-plain "file://$WORK/store" 0
    variant file-age "file://$WORK/store" 1
    variant s3-plain "s3://bench/etcd" 0
fi
declare -A D=()

A=() B=() RSS=()
for run in $(seq 1 "$RUNS"); do
    rm -f "$WORK/local.db"
    read -r ms _ < <(timed ip netns exec "$NS" env ETCDCTL_API=3 "$EDIR/etcdctl" --endpoints "https://$IP:2379" \
        --cacert "$WORK/pki/ca.crt" --cert "$WORK/pki/client.crt" --key "$WORK/pki/client.key" \
        snapshot save "$WORK/local.db") || die "etcdctl snapshot save failed"
    A+=("$ms")
    note "run $run: etcdctl snapshot save to local disk: $ms ms"
    read -r ms rss < <(timed ip netns exec "$NS" "$BIN" snapshot save --config "$WORK/config.toml") ||
        die "etcd-bootstrap snapshot save failed"
    B+=("$ms")
    RSS+=("$rss")
    note "run $run: etcd-bootstrap snapshot save to S3 (age): $ms ms, peak RSS $rss KiB"
    if ((DECOMPOSE)); then
        for v in file-plain file-age s3-plain; do
            read -r ms _ < <(timed ip netns exec "$NS" "$BIN" snapshot save --config "$WORK/config-$v.toml") ||
                die "etcd-bootstrap snapshot save ($v) failed"
            D[$v]+="${D[$v]:+ }$ms"
            note "run $run: etcd-bootstrap snapshot save, $v: $ms ms"
        done
        rm -rf "$WORK/store"/*
        read -r ms _ < <(timed ip netns exec "$BR" "$PY_DIR/bin/python" -c '
import sys, boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], verify=sys.argv[2], aws_access_key_id="benchkey",
                  aws_secret_access_key="benchsecret0123456789", region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
s3.upload_file(sys.argv[3], "bench", "boto3/snapshot.db",
               Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20, max_concurrency=2))
' "https://$S3IP:8333" "$WORK/ca/ca.crt" "$WORK/local.db") || die "boto3 upload failed"
        D[boto3]+="${D[boto3]:+ }$ms"
        note "run $run: boto3 upload of etcdctl's file to the same S3 server: $ms ms"
    fi
done
ma=$(median "${A[@]}") mb=$(median "${B[@]}") mr=$(median "${RSS[@]}")
r=$(ratio "$ma" "$mb")
printf 'etcd %s, database %s MiB, medians of %s:\n' "$VERSION" "$DB_MIB" "$RUNS"
printf '  etcdctl snapshot save to local disk:              %6s ms\n' "$ma"
printf '  etcd-bootstrap snapshot save to S3, age-encrypted: %6s ms  (ratio %s, goal <= 1.5)\n' "$mb" "$r"
printf '  etcd-bootstrap peak RSS:                           %6s KiB (goal <= 30720)\n' "$mr"
if ((DECOMPOSE)); then
    for v in file-plain file-age s3-plain; do
        # shellcheck disable=SC2086
        printf '  etcd-bootstrap snapshot save, %-10s:           %6s ms\n' "$v" "$(median ${D[$v]})"
    done
    # shellcheck disable=SC2086
    printf '  boto3 upload of etcdctl'"'"'s file to the same S3:      %6s ms\n' "$(median ${D[boto3]})"
fi
[[ -n $SUMMARY ]] && echo "$VERSION $DB_MIB $ma $mb $r $mr" >>"$SUMMARY"
exit 0

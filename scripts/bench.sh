#!/usr/bin/env bash
# bench.sh - every figure of the benchmark in one table, on etcd 3.4.23 and 3.5.30.
#
# Usage: scripts/bench.sh [--runs 5] [--versions "3.4 3.5"] [--rss-seconds 180]
#                         [--keep-logs DIR] [--skip-start] [--skip-snapshot] [--skip-restore]
#                         [--skip-defrag] [--skip-quorum] [--skip-rollout]
#                         [--only "leader_removed leader_wiped"] (figures of part 2 to run)
#
# 1. start-to-healthy, 3 and 5 members started at the same instant: etcd-bootstrap (SRV
#    discovery, certificates made at boot) against etcd's own static bootstrap (cfssl
#    certificates made in advance), alternated, --runs trials each: scripts/bench-start.sh
#    (labs ebbench3 / ebbench5 on 10.200.243 / 10.200.245). --skip-start leaves it out.
# 1b. a snapshot of a ~200 MiB database: `etcd-bootstrap snapshot save` to S3 (SeaweedFS,
#    age-encrypted) against `etcdctl snapshot save` to local disk, and etcd-bootstrap's peak
#    RSS: scripts/bench-snapshot.sh (lab ebbenchs, 10.200.247). --skip-snapshot leaves it out.
# 1c. total loss of 3 members recovered from a ~100 MiB snapshot in S3 (etcd 3.5): etcd-bootstrap
#    against the manual procedure scripted with etcdutl: scripts/bench-restore.sh (lab ebbenchr,
#    10.200.248). --skip-restore leaves it out.
# 1d. the client-visible stall of a cluster-wide defrag of a ~200 MiB database (etcd 3.5):
#    `etcd-bootstrap defrag --all` against `etcdctl defrag --cluster`: scripts/bench-defrag.sh
#    (lab ebbenchd, 10.200.246). --skip-defrag leaves it out.
# 1e. quorum lost with every member accounted for (hosts 2 and 3 wiped, host 1 the only copy):
#    the agents' automatic recovery against `etcd-bootstrap recover` run by hand at once, from the
#    last agent answering to 3 healthy voters, per version: scripts/bench-quorum.sh (lab
#    ebbenchq, 10.200.249). --skip-quorum leaves it out.
# 1f. a rolling upgrade, etcd 3.4.23 -> 3.5.30 on 3 members, every agent reloaded at once,
#    against the same change by restarting every agent at once: the time to all on 3.5.30 and the
#    longest write stall: scripts/bench-rollout.sh (lab ebbenchu, 10.200.250), in the 3.5
#    column. --skip-rollout leaves it out.
# 2. per version, in one lab (ebbenchj, 10.200.244, 4 hosts) whose hosts 1-3 run a cluster
#    formed by `etcd-bootstrap run` (heal.interval 1 s, etcd.binary a wrapper that records
#    the instant etcd is exec'd, then execs the real etcd), --runs rounds of:
#    a. join host 4 by hand, the documented procedure scripted with etcdctl: `member add
#       --learner` (retried while etcd answers "unhealthy cluster"), start etcd with
#       --initial-cluster-state existing and the cluster etcdctl printed (certificates made
#       in advance), `member promote` retried until the learner is in sync; then host 4
#       is removed and wiped again;
#    b. join host 4 with etcd-bootstrap: its DNS records appear, `etcd-bootstrap run`;
#       then removed and wiped again;
#    c. wiped member: host 3's agent stopped, its data dir deleted, agent started;
#    d. `etcdctl member remove` of host 3's member: its agent notices and re-adds it;
#    e. restart path: host 2's agent stopped (etcd with it), started again: milliseconds
#       from the spawn of `etcd-bootstrap run` to the wrapper's exec of etcd;
#    f. `etcdctl member remove` of the raft leader's member (sent through the other two);
#    g. the raft leader's disk replaced: its agent and etcd killed (SIGKILL: no leadership
#       transfer, as when a VM dies), data deleted, agent started.
#    a-d, f and g are timed until member list shows exactly the expected started voters (no
#    learner) and `endpoint health` passes on all of them (polled every 100 ms).
# 3. peak resident memory (VmHWM) of host 1's `etcd-bootstrap run` after all rounds and
#    --rss-seconds more of its heal loop (interval 1 s), in the last version's lab.
# 4. the size of the release binary.
#
# Prints ONE table (medians; every trial in the log) with the targets. Details of each step
# go to stderr. Needs root, scripts/install-deps.sh and `cargo build --release`.
# Default run time: about 15-20 minutes.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
LAB="$HERE/lab.sh"
CACHE="${ETCD_BOOTSTRAP_LAB_CACHE:-/var/cache/etcd-bootstrap-lab}"
BIN="$REPO/target/x86_64-unknown-linux-gnu/release/etcd-bootstrap"
RUNS=5
VERSIONS="3.4 3.5"
RSS_S=180
KEEP=""
SKIP_START=0
SKIP_SNAPSHOT=0
SKIP_RESTORE=0 SKIP_DEFRAG=0 SKIP_QUORUM=0 SKIP_ROLLOUT=0
FIGURES="manual_join bootstrap_join wiped removed restart leader_removed leader_wiped"
ONLY=""
readonly NAME=ebbenchj SUBNET=10.200.244 DOMAIN=lab.test
readonly STEP_TIMEOUT_MS=120000

# shellcheck source=lib/bench-common.sh
. "$HERE/lib/bench-common.sh"
# shellcheck source=lib/node-config.sh
. "$HERE/lib/node-config.sh"

die() {
    printf 'bench: ERROR: %s\n' "$*" >&2
    exit 1
}
note() { printf 'bench: %s\n' "$*" >&2; }

while (($#)); do
    case "$1" in
    --runs) RUNS=${2:-}; shift ;;
    --versions) VERSIONS=${2:-}; shift ;;
    --rss-seconds) RSS_S=${2:-}; shift ;;
    --keep-logs) KEEP=${2:-}; shift ;;
    --skip-start) SKIP_START=1 ;;
    --skip-snapshot) SKIP_SNAPSHOT=1 ;;
    --skip-restore) SKIP_RESTORE=1 ;;
    --skip-defrag) SKIP_DEFRAG=1 ;;
    --skip-quorum) SKIP_QUORUM=1 ;;
    --skip-rollout) SKIP_ROLLOUT=1 ;;
    --only) ONLY=${2:-}; shift ;;
    -h | --help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs N (>= 1)"
[[ $RSS_S =~ ^[0-9]+$ ]] || die "--rss-seconds N"
[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces)"
[[ -f $CACHE/env ]] || die "$CACHE/env missing: run scripts/install-deps.sh first"
# shellcheck source=/dev/null
. "$CACHE/env"
[[ -x $BIN ]] || die "$BIN missing: run 'cargo build --release' first"
for v in $VERSIONS; do [[ $v == 3.4 || $v == 3.5 ]] || die "unknown version '$v' (3.4 or 3.5)"; done
for f in $ONLY; do [[ " $FIGURES " == *" $f "* ]] || die "unknown figure '$f' (one of: $FIGURES)"; done
RUN_FIGURES=${ONLY:-$FIGURES}

WORK=$(mktemp -d /tmp/bench.XXXXXX)
cleanup() {
    "$LAB" down --name "$NAME" --grace 0 >/dev/null 2>&1 || true
    if [[ -n $KEEP ]]; then { mkdir -p "$KEEP" && cp -r "$WORK"/. "$KEEP"/; } 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip_of() { printf '%s.%d\n' "$SUBNET" "$((10 + $1))"; }
ns() { printf '%s-h%d\n' "$NAME" "$1"; }
declare -A R=() # R[version,figure] = space-separated trial values

record() { R[$1,$2]+="${R[$1,$2]:+ }$3"; note "etcd $1, $2: $3"; }

# ---------------------------------------------------------------------------
# 1. start-to-healthy (scripts/bench-start.sh)
# ---------------------------------------------------------------------------
declare -A START=()
if ((!SKIP_START)); then
    for n in 3 5; do
        note "start-to-healthy, $n members (scripts/bench-start.sh --runs $RUNS)"
        "$HERE/bench-start.sh" --runs "$RUNS" --versions "$VERSIONS" --members "$n" \
            --name "ebbench$n" --subnet "10.200.24$n" --summary "$WORK/start$n" \
            ${KEEP:+--keep-logs "$KEEP/start-$n"} >"$WORK/bench-start-$n.out"
        cat "$WORK/bench-start-$n.out" >&2
        while read -r v a b r; do START[$v,$n]="$a $b $r"; done <"$WORK/start$n"
    done
fi

# ---------------------------------------------------------------------------
# 1b. a snapshot of a ~200 MiB database to S3 (scripts/bench-snapshot.sh)
# ---------------------------------------------------------------------------
declare -A SNAP=()
if ((!SKIP_SNAPSHOT)); then
    for v in $VERSIONS; do
        note "snapshot to S3, etcd $v (scripts/bench-snapshot.sh --runs $RUNS)"
        "$HERE/bench-snapshot.sh" --runs "$RUNS" --version "$v" --summary "$WORK/snapshot" >&2
    done
    while read -r v db a b r rss; do SNAP[$v]="$db $a $b $r $rss"; done <"$WORK/snapshot"
fi

# ---------------------------------------------------------------------------
# 1c. total loss, restored from a snapshot (scripts/bench-restore.sh, etcd 3.5)
# ---------------------------------------------------------------------------
RESTORE=""
if ((!SKIP_RESTORE)); then
    note "total loss restored from S3 (scripts/bench-restore.sh --runs $RUNS)"
    "$HERE/bench-restore.sh" --runs "$RUNS" --summary "$WORK/restore" >&2
    RESTORE=$(cat "$WORK/restore")
fi

# ---------------------------------------------------------------------------
# 1d. stall of a cluster-wide defrag (scripts/bench-defrag.sh, etcd 3.5)
# ---------------------------------------------------------------------------
DEFRAG=""
if ((!SKIP_DEFRAG)); then
    note "cluster-wide defrag stall (scripts/bench-defrag.sh --runs $RUNS)"
    "$HERE/bench-defrag.sh" --runs "$RUNS" --summary "$WORK/defrag" >&2
    DEFRAG=$(cat "$WORK/defrag")
fi

# ---------------------------------------------------------------------------
# 1e. quorum lost, every agent answering (scripts/bench-quorum.sh)
# ---------------------------------------------------------------------------
declare -A QUORUM=()
if ((!SKIP_QUORUM)); then
    for v in $VERSIONS; do
        note "quorum lost, every agent answering, etcd $v (scripts/bench-quorum.sh --runs $RUNS)"
        "$HERE/bench-quorum.sh" --runs "$RUNS" --version "$v" --summary "$WORK/quorum" >&2
    done
    while read -r v mo mt ao at; do QUORUM[$v]="$mo $mt $ao $at"; done <"$WORK/quorum"
fi

# ---------------------------------------------------------------------------
# 1f. a rolling upgrade 3.4.23 -> 3.5.30 (scripts/bench-rollout.sh)
# ---------------------------------------------------------------------------
ROLLOUT=""
if ((!SKIP_ROLLOUT)); then
    note "rolling upgrade 3.4.23 -> 3.5.30 (scripts/bench-rollout.sh --runs $RUNS)"
    "$HERE/bench-rollout.sh" --runs "$RUNS" --summary "$WORK/rollout" >&2
    ROLLOUT=$(cat "$WORK/rollout")
fi

# ---------------------------------------------------------------------------
# 2. join, heal, restart, memory: one lab per version
# ---------------------------------------------------------------------------
EDIR="" AGENT=() ETCD4=""

ctl() { # HOST ENDPOINTS ARGS... : etcdctl inside HOST with host 1's client certificate
    local h=$1 eps=$2
    shift 2
    local p="$WORK/lab/h1/pki"
    ip netns exec "$(ns "$h")" env ETCDCTL_API=3 "$EDIR/etcdctl" --endpoints "$eps" \
        --cacert "$p/ca.crt" --cert "$p/client.crt" --key "$p/client.key" \
        --dial-timeout 1s --command-timeout 3s "$@"
}
eps_of() { local h s=""; for h in "$@"; do s+="${s:+,}https://$(ip_of "$h"):2379"; done; echo "$s"; }

# Exactly HOSTS as started voters (no learner, nothing else) and all of them healthy?
voters_are() { # HOSTS...
    local want got
    want=$(for h in "$@"; do echo "https://$(ip_of "$h"):2380"; done | sort | tr '\n' ' ')
    got=$(ctl 1 "$(eps_of 1)" member list -w json 2>/dev/null |
        jq -r '.members[] | if (.isLearner // false) or ((.name // "") == "") then "x" else .peerURLs[0] end' |
        sort | tr '\n' ' ') || return 1
    [[ $got == "$want" ]] && ctl 1 "$(eps_of "$@")" endpoint health >/dev/null 2>&1
}

wait_voters() { # T0 HOSTS... -> WV = ms since T0, or dies
    local t0=$1
    shift
    while ! voters_are "$@"; do
        stamp
        ((NOW - t0 > STEP_TIMEOUT_MS)) && { tail -n 30 "$WORK"/lab/h*/log >&2; die "not exactly voters $* within $((STEP_TIMEOUT_MS / 1000)) s"; }
        sleep 0.1
    done
    stamp
    WV=$((NOW - t0))
}

member_id() { # HOST -> hex ID of its member
    # (the simple format: JSON would give the 64-bit ID as a float)
    ctl 1 "$(eps_of 1 2 3)" member list | awk -F', ' -v u="https://$(ip_of "$1"):2380" '$4 == u { print $1 }'
}

# etcdctl member ARGS, retried while etcd says the cluster is not ready ("unhealthy cluster" right after a change).
# Through the hosts in OP_HOSTS (default 1 and 2): never through the member being removed, whose
# answer may be "server stopped" once the removal has gone through.
OP_HOSTS="1 2"
member_op() {
    local out i
    for ((i = 0; i < 100; i++)); do
        # shellcheck disable=SC2086
        if out=$(ctl 1 "$(eps_of $OP_HOSTS)" member "$@" 2>&1); then
            printf '%s\n' "$out"
            return 0
        fi
        [[ $out == *"unhealthy cluster"* || $out == *"not enough started"* || $out == *"in sync with leader"* || $out == *"deadline exceeded"* ]] || { echo "$out" >&2; return 1; }
        sleep 0.2
    done
    echo "$out" >&2
    return 1
}

write_config() { # HOST
    local d="$WORK/lab/h$1"
    mkdir -p "$d"
    node_config "$d" bench 3 "$d/etcd-wrapper" "$WORK/ca" "srv:$DOMAIN" 1s >"$d/config.toml"
    # Records the instant etcd is exec'd (restart-path figure), then becomes etcd.
    printf '#!/bin/sh\nprintf "%%s\\n" "$(date +%%s%%N)" >>%s/etcd-exec\nexec %s/etcd "$@"\n' "$d" "$EDIR" >"$d/etcd-wrapper"
    chmod 0755 "$d/etcd-wrapper"
}

start_agent() { # HOST
    ip netns exec "$(ns "$1")" "$BIN" run --config "$WORK/lab/h$1/config.toml" </dev/null >>"$WORK/lab/h$1/log" 2>&1 &
    AGENT[$1]=$!
}

stop_agent() { # HOST: SIGTERM (it stops its etcd), wait
    local p=${AGENT[$1]:-}
    [[ -n $p ]] || return 0
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    AGENT[$1]=""
}

# Host 4's certificate for the manual join, made in advance with cfssl from the lab's CA.
make_manual_certs() {
    local d="$WORK/manual"
    mkdir -p "$d"
    cat >"$d/config.json" <<'EOF'
{"signing": {"default": {"expiry": "8760h",
  "usages": ["signing", "digital signature", "key encipherment", "server auth", "client auth"]}}}
EOF
    printf '{"CN": "etcd4", "hosts": ["%s", "etcd4.%s", "127.0.0.1", "localhost"], "key": {"algo": "ecdsa", "size": 256}}\n' \
        "$(ip_of 4)" "$DOMAIN" >"$d/csr.json"
    (cd "$d" && "$CFSSL_DIR/cfssl" gencert -ca "$WORK/ca/ca.crt" -ca-key "$WORK/ca/ca.key" -config config.json \
        csr.json 2>/dev/null | "$CFSSL_DIR/cfssljson" -bare etcd4)
    [[ -s $d/etcd4.pem && -s $d/etcd4-key.pem ]] || die "cfssl did not make host 4's certificate"
}

manual_join() { # -> RES ms
    local t0 out cluster id ip c="$WORK/manual" i
    ip=$(ip_of 4)
    rm -rf "$c/data"
    stamp
    t0=$NOW
    out=$(member_op add etcd4 --learner --peer-urls "https://$ip:2380") || die "member add: $out"
    cluster=$(sed -n 's/^ETCD_INITIAL_CLUSTER="\(.*\)"$/\1/p' <<<"$out")
    id=$(sed -n 's/^Member  *\([0-9a-f]*\) added.*/\1/p' <<<"$out")
    [[ -n $cluster && -n $id ]] || die "cannot read member add's answer: $out"
    ip netns exec "$(ns 4)" "$EDIR/etcd" --name etcd4 --data-dir "$c/data" \
        --listen-peer-urls "https://$ip:2380" --initial-advertise-peer-urls "https://$ip:2380" \
        --listen-client-urls "https://$ip:2379,https://127.0.0.1:2379" --advertise-client-urls "https://$ip:2379" \
        --client-cert-auth --trusted-ca-file "$WORK/ca/ca.crt" --cert-file "$c/etcd4.pem" --key-file "$c/etcd4-key.pem" \
        --peer-client-cert-auth --peer-trusted-ca-file "$WORK/ca/ca.crt" --peer-cert-file "$c/etcd4.pem" \
        --peer-key-file "$c/etcd4-key.pem" --initial-cluster "$cluster" --initial-cluster-state existing \
        </dev/null >>"$c/log" 2>&1 &
    ETCD4=$!
    for ((i = 0; i < 600; i++)); do
        ctl 1 "$(eps_of 1 2 3)" member promote "$id" >/dev/null 2>&1 && break
        sleep 0.1
    done
    wait_voters "$t0" 1 2 3 4
    RES=$WV
    # Undo: stop it, remove it, wipe it.
    kill -KILL "$ETCD4" 2>/dev/null || true
    wait "$ETCD4" 2>/dev/null || true
    member_op remove "$id" >/dev/null || die "member remove $id failed"
    rm -rf "$c/data"
}

bootstrap_join() { # -> RES ms
    local t0 id
    "$LAB" dns --name "$NAME" --add-host 4 >/dev/null
    stamp
    t0=$NOW
    start_agent 4
    wait_voters "$t0" 1 2 3 4
    RES=$WV
    # Undo: stop it, remove it, wipe it.
    id=$(member_id 4)
    stop_agent 4
    "$LAB" dns --name "$NAME" --remove-host 4 >/dev/null
    member_op remove "$id" >/dev/null || die "member remove $id failed"
    rm -rf "$WORK/lab/h4/data" "$WORK/lab/h4/pki" "$WORK/lab/h4/etcd.env"
}

wiped() { # -> RES ms
    local t0
    stop_agent 3
    rm -rf "$WORK/lab/h3/data"
    stamp
    t0=$NOW
    start_agent 3
    wait_voters "$t0" 1 2 3
    RES=$WV
}

removed() { # -> RES ms
    local t0 id
    id=$(member_id 3)
    stamp
    t0=$NOW
    member_op remove "$id" >/dev/null || die "member remove $id failed"
    wait_voters "$t0" 1 2 3
    RES=$WV
}

leader_host() { # -> the host (1-3) whose member is the raft leader, into LH
    local ip
    ip=$(ctl 1 "$(eps_of 1 2 3)" endpoint status -w json 2>/dev/null |
        jq -r '.[] | select(.Status.leader == .Status.header.member_id) | .Endpoint' | head -n 1)
    ip=${ip#https://}
    ip=${ip%:2379}
    LH=$((${ip##*.} - 10))
    ((LH >= 1 && LH <= 3)) || die "cannot tell the leader (endpoint status said '$ip')"
}

leader_removed() { # -> RES ms
    local t0 id
    leader_host
    id=$(member_id "$LH")
    note "removing the leader, host $LH ($id)"
    OP_HOSTS=$(for h in 1 2 3; do if ((h != LH)); then printf '%d ' "$h"; fi; done)
    stamp
    t0=$NOW
    member_op remove "$id" >/dev/null || die "member remove $id failed"
    OP_HOSTS="1 2"
    wait_voters "$t0" 1 2 3
    RES=$WV
}

kill_host() { # HOST: SIGKILL its agent and its etcd, as a VM that dies
    local p=${AGENT[$1]:-} e
    [[ -n $p ]] && { kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; }
    AGENT[$1]=""
    for e in $(pgrep -x etcd || true); do
        if tr '\0' '\n' <"/proc/$e/environ" 2>/dev/null | grep -qx "ETCD_DATA_DIR=$WORK/lab/h$1/data"; then
            kill -KILL "$e" 2>/dev/null || true
        fi
    done
}

leader_wiped() { # -> RES ms
    local t0
    leader_host
    note "the leader's disk replaced, host $LH"
    kill_host "$LH"
    rm -rf "$WORK/lab/h$LH/data"
    stamp
    t0=$NOW
    start_agent "$LH"
    wait_voters "$t0" 1 2 3
    RES=$WV
}

restart_path() { # -> RES ms from spawn to etcd exec'd
    local t0 n f="$WORK/lab/h2/etcd-exec" i
    stop_agent 2
    n=$(wc -l <"$f")
    stamp
    t0=$NOW
    start_agent 2
    for ((i = 0; i < 1000; i++)); do
        (($(wc -l <"$f") > n)) && break
        sleep 0.01
    done
    local ns_ts
    ns_ts=$(tail -n 1 "$f")
    stamp
    RES=$(((ns_ts / 1000000) - t0))
    wait_voters "$NOW" 1 2 3
}

settle() { sleep "${1:-6}"; } # etcd 3.4: a member must be connected to every voter for 5 s before the next change

RSS_KB="" RSS_VERSION=""
last=${VERSIONS##* }
for v in $VERSIONS; do
    case "$v" in
    3.4) EDIR=$ETCD_34_DIR vv=$ETCD_34_VERSION ;;
    3.5) EDIR=$ETCD_35_DIR vv=$ETCD_35_VERSION ;;
    esac
    note "etcd $vv: join, heal and restart, $RUNS rounds"
    "$LAB" down --name "$NAME" --grace 0 >/dev/null 2>&1 || true
    rm -rf "$WORK/lab" "$WORK/ca" "$WORK/manual"
    "$LAB" up --name "$NAME" --subnet "$SUBNET" --hosts 4 --domain "$DOMAIN" --dns-hosts 1,2,3 >/dev/null 2>"$WORK/lab-up.err" ||
        { cat "$WORK/lab-up.err" >&2; die "lab.sh up failed"; }
    "$BIN" ca init --out "$WORK/ca" >/dev/null
    make_manual_certs
    for h in 1 2 3 4; do write_config "$h"; done
    AGENT=()
    stamp
    t_form=$NOW
    for h in 1 2 3; do start_agent "$h"; done
    wait_voters "$t_form" 1 2 3
    note "cluster formed in $WV ms"
    settle
    for ((r = 1; r <= RUNS; r++)); do
        for f in $RUN_FIGURES; do
            case "$f" in
            restart) restart_path ;;
            *) "$f" ;;
            esac
            record "$v" "$f" "$RES"
            if [[ $f == restart ]]; then settle 2; else settle; fi
        done
    done
    if [[ $v == "$last" ]]; then
        note "memory: $RSS_S s more of host 1's heal loop (interval 1 s)"
        sleep "$RSS_S"
        RSS_KB=$(awk '/^VmHWM:/ { print $2 }' "/proc/${AGENT[1]}/status")
        RSS_VERSION=$vv
    fi
    for h in 1 2 3 4; do stop_agent "$h" & done
    wait
    "$LAB" down --name "$NAME" --grace 0 >/dev/null 2>&1 || true
done

# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------
vname() { case "$1" in 3.4) echo "$ETCD_34_VERSION" ;; 3.5) echo "$ETCD_35_VERSION" ;; esac; }
row() { # LABEL TARGET VALUES-PER-VERSION...
    local label=$1 target=$2
    shift 2
    local line
    line=$(printf '| %s |' "$label")
    for x in "$@"; do line+=" $x |"; done
    line+=" $target |"
    echo "$line"
}
sec() { [[ $1 =~ ^[0-9]+$ ]] && awk -v m="$1" 'BEGIN { printf "%.2f s", m / 1000 }' || echo "$1"; }
ms() { [[ $1 =~ ^[0-9]+$ ]] && echo "$1 ms" || echo "$1"; }
verdict() { # VALUE LIMIT -> "ok"/"MISSED" (numbers; smaller is better)
    [[ $1 =~ ^[0-9.]+$ ]] || { echo "?"; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b ? "ok" : "MISSED") }'
}

size=$(stat -c %s "$BIN")
echo
printf 'etcd-bootstrap benchmark, %s, %s, %d cores; medians of %d trials (all trials on stderr)\n\n' \
    "$(date -u +%F)" "$(uname -m)" "$(nproc)" "$RUNS"
hdr="| figure |" sep="|---|"
for v in $VERSIONS; do hdr+=" etcd $(vname "$v") |"; sep+="---|"; done
echo "$hdr target |"
echo "$sep---|"
if ((!SKIP_START)); then
    for n in 3 5; do
        a=() b=() q=()
        for v in $VERSIONS; do
            read -r ma mb rr <<<"${START[$v,$n]:-- - n/a}"
            a+=("$(ms "$ma")") b+=("$(ms "$mb")") q+=("$rr ($(verdict "$rr" 1.25))")
        done
        row "start to healthy, $n members at once: etcd-bootstrap (SRV, certificates made at boot)" "" "${b[@]}"
        row "start to healthy, $n members at once: etcd static bootstrap (cfssl certificates in advance)" "" "${a[@]}"
        row "ratio etcd-bootstrap / static, $n members" "<= 1.25" "${q[@]}"
    done
fi
declare -A LBL=(
    [bootstrap_join]="join one member, learner to voter: etcd-bootstrap run"
    [manual_join]="join one member, learner to voter: by hand (etcdctl member add --learner, start existing, promote)"
    [wiped]="wiped data dir -> healthy voter"
    [removed]="etcdctl member remove -> re-added, healthy voter (heal.interval 1 s)"
    [restart]="restart path (data present): spawn of run -> etcd exec'd"
    [leader_removed]="etcdctl member remove of the raft leader -> healthy voter again (worst of the rounds)"
    [leader_wiped]="the raft leader killed, its data dir wiped, agent started -> healthy voter again (worst of the rounds)"
)
for f in bootstrap_join manual_join wiped removed restart leader_removed leader_wiped; do
    [[ " $RUN_FIGURES " == *" $f "* ]] || continue
    vals=()
    for v in $VERSIONS; do
        # shellcheck disable=SC2086
        m=$(median ${R[$v,$f]:-})
        # shellcheck disable=SC2086
        [[ $f == leader_* ]] && m=$(worst ${R[$v,$f]:-})
        case "$f" in
        restart) vals+=("$(ms "$m") ($(verdict "$m" 50))") ;;
        wiped) if [[ $v == 3.5 ]]; then vals+=("$(sec "$m") ($(verdict "$m" 10000))"); else vals+=("$(sec "$m")"); fi ;;
        leader_removed) vals+=("$(sec "$m") ($(verdict "$m" 4000))") ;;
        leader_wiped) vals+=("$(sec "$m") ($(verdict "$m" 8000))") ;;
        *) vals+=("$(sec "$m")") ;;
        esac
    done
    case "$f" in
    restart) t="< 50 ms" ;;
    leader_removed) t="<= 4 s" ;;
    leader_wiped) t="<= 8 s" ;;
    wiped) t="< 10 s on 3.5" ;;
    *) t="" ;;
    esac
    row "${LBL[$f]}" "$t" "${vals[@]}"
done
if ((!SKIP_SNAPSHOT)); then
    ratio_cells=() a_cells=() b_cells=() rss_cells=()
    for v in $VERSIONS; do
        read -r db ma mb rr rss <<<"${SNAP[$v]:-- - - n/a -}"
        a_cells+=("$(ms "$ma")") b_cells+=("$(ms "$mb")")
        ratio_cells+=("$rr ($(verdict "$rr" 1.5))")
        if [[ $rss =~ ^[0-9]+$ ]]; then
            rm=$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')
            rss_cells+=("$rm MiB ($(verdict "$rm" 30))")
        else
            rss_cells+=("-")
        fi
    done
    row "snapshot of a ${db:-?} MiB database: etcdctl snapshot save to local disk" "" "${a_cells[@]}"
    row "snapshot of that database: etcd-bootstrap snapshot save to S3, age-encrypted" "" "${b_cells[@]}"
    row "ratio etcd-bootstrap / etcdctl, snapshot" "<= 1.5" "${ratio_cells[@]}"
    row "peak RSS of etcd-bootstrap snapshot save" "<= 30 MiB" "${rss_cells[@]}"
fi
if [[ -n $RESTORE ]]; then
    read -r db ma mb rr <<<"$RESTORE"
    cells_a=() cells_b=() cells_r=()
    for v in $VERSIONS; do
        if [[ $v == 3.5 ]]; then
            cells_a+=("$(sec "$ma")") cells_b+=("$(sec "$mb") ($(verdict "$mb" 60000))") cells_r+=("$rr ($(verdict "$rr" 1.5))")
        else
            cells_a+=("-") cells_b+=("-") cells_r+=("-")
        fi
    done
    row "total loss of 3 members, restored from a $db MiB snapshot in S3: by hand (etcdutl)" "" "${cells_a[@]}"
    row "the same: etcd-bootstrap (new VMs restore by themselves)" "< 60 s" "${cells_b[@]}"
    row "ratio etcd-bootstrap / by hand, restore" "<= 1.5" "${cells_r[@]}"
fi
if [[ -n $DEFRAG ]]; then
    read -r db da dbt dr <<<"$DEFRAG"
    cells_a=() cells_b=() cells_r=()
    for v in $VERSIONS; do
        if [[ $v == 3.5 ]]; then
            cells_a+=("$da ms") cells_b+=("$dbt ms") cells_r+=("$dr ($(verdict "$dr" 0.5))")
        else
            cells_a+=("-") cells_b+=("-") cells_r+=("-")
        fi
    done
    row "longest client operation during a defrag of every member ($db MiB): etcdctl defrag --cluster" "" "${cells_a[@]}"
    row "the same: etcd-bootstrap defrag --all (leader last, after moving leadership)" "" "${cells_b[@]}"
    row "ratio etcd-bootstrap / etcdctl, defrag stall" "<= 0.5" "${cells_r[@]}"
fi
if ((${#QUORUM[@]})); then
    cells_m=() cells_a=() cells_o=()
    for v in $VERSIONS; do
        read -r mo mt ao at <<<"${QUORUM[$v]:-- - - -}"
        cells_m+=("$(sec "$mt")") cells_a+=("$(sec "$at") ($(verdict "$at" 10000))") cells_o+=("$(sec "$ao") (by hand $(sec "$mo"))")
    done
    row "quorum lost, 2 of 3 wiped, every agent answering: recover by hand at once + joins, to 3 voters" "" "${cells_m[@]}"
    row "the same: automatic recovery, last agent answering to 3 healthy voters" "<= 10 s" "${cells_a[@]}"
    row "the same: automatic, last agent answering to the recovered member healthy" "" "${cells_o[@]}"
fi
if [[ -n $ROLLOUT ]]; then
    read -r rt rs ro at as <<<"$ROLLOUT"
    goal=$((3 * ro + 10000))
    cells_t=() cells_s=() cells_at=() cells_as=()
    for v in $VERSIONS; do
        if [[ $v == 3.5 ]]; then
            cells_t+=("$(sec "$rt") ($(verdict "$rt" "$goal"): one member $(sec "$ro"))") cells_s+=("$rs ms ($(verdict "$rs" 1000))")
            cells_at+=("$(sec "$at")") cells_as+=("$as ms")
        else
            cells_t+=("-") cells_s+=("-") cells_at+=("-") cells_as+=("-")
        fi
    done
    row "rolling upgrade 3.4.23 -> 3.5.30 of 3 members, reload to all on 3.5.30" "<= 3 x one member + 10 s" "${cells_t[@]}"
    row "the same: longest write stall, a client with all endpoints" "<= 1 s" "${cells_s[@]}"
    row "the same change by restarting every agent at once: to all on 3.5.30" "" "${cells_at[@]}"
    row "the same change by restarting every agent at once: longest write stall" "" "${cells_as[@]}"
fi
mib=$(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }')
cells=()
for v in $VERSIONS; do cells+=("$mib MiB ($(verdict "$mib" 8))"); done
row "release binary size ($size bytes)" "<= 8 MiB" "${cells[@]}"
if [[ -n $RSS_KB ]]; then
    rmib=$(awk -v k="$RSS_KB" 'BEGIN { printf "%.1f", k / 1024 }')
    cells=()
    for v in $VERSIONS; do
        if [[ $(vname "$v") == "$RSS_VERSION" ]]; then cells+=("$rmib MiB ($(verdict "$rmib" 20))"); else cells+=("-"); fi
    done
    row "peak RSS (VmHWM) of run: all rounds + ${RSS_S} s of heal loop, interval 1 s" "<= 20 MiB" "${cells[@]}"
fi
echo
echo "trials (ms):"
for v in $VERSIONS; do
    for f in $RUN_FIGURES; do
        printf '  %s %-15s %s\n' "$(vname "$v")" "$f" "${R[$v,$f]:-}"
    done
done

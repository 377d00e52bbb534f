#!/usr/bin/env bash
# bench-start.sh - start-to-healthy time of a new TLS etcd cluster: etcd's own static
# bootstrap with certificates made in advance, against etcd-bootstrap (certificates
# made at boot, SRV discovery), on the same machine, alternated trial by trial.
#
# Usage: scripts/bench-start.sh [--runs 5] [--versions "3.4 3.5"] [--members 3]
#                               [--name PREFIX] [--subnet A.B.C] [--keep-logs DIR]
#                               [--summary FILE]
#
# Before any clock starts, once per script run: cfssl ($CFSSL_DIR) makes a CA, one
# certificate per member (server auth + client auth; hosts = its IP, etcdI.lab.test,
# 127.0.0.1, localhost) and a client certificate; `etcd-bootstrap ca init` makes the
# CA that etcd-bootstrap signs with (an operator makes that once, too).
#
# For each version, --runs trials of each method, alternated a, b, a, b, ...; every
# trial in a fresh lab (default PREFIX ebbench, subnet 10.200.249; SRV records for
# lab.test), created before its clock starts and SIGKILLed afterwards (lab.sh down
# --grace 0):
#   a  etcd static: raw etcd in every host, https peer and client URLs,
#      --client-cert-auth, --peer-client-cert-auth, the cfssl certificates, a static
#      --initial-cluster and a fresh token;
#   b  etcd-bootstrap: `etcd-bootstrap run` in every host (service_manager "process",
#      SRV discovery, fresh data and pki directories: its certificates are made at boot).
# The clock starts just before the N processes are spawned (one after the other, with
# nothing in between) and stops when `etcdctl endpoint health` over the N client URLs
# (from host 1, with that method's client certificate, dial 1 s, command 2 s) reports
# all N healthy. Polled every 50 ms; an etcdctl run is only started once every member
# listens on its client port (read from /proc/PID/net/tcp, no process spawned) and, for
# b, host 1's client certificate exists: both are preconditions of a healthy answer,
# the gate only keeps etcdctl's 1 s dial timeout from blurring the measurement.
# A trial not healthy within 60 s is reported as FAIL, with the tail of its logs (and
# its directory is kept in /tmp). --keep-logs DIR keeps every trial's directory (logs,
# generated env files) as DIR/VERSION-METHOD-TRIAL.
#
# Prints: a table (version, method, each trial in ms, median) with the ratio
# median(b)/median(a) per version, and the size of the release binary. Under it, per
# trial, how long etcd itself stalled before starting its raft member (the longest of
# the N members, from etcd's own log): etcd started with --initial-cluster-state new
# first asks every other member's peer URL whether the cluster already exists, with a
# 1 s timeout each; a peer whose listener is already open but not yet serving (its etcd
# started within a few ms of this one) costs the full second. So a trial takes 0, 1 or
# 2 s (3 members) longer depending on how closely the etcd processes started.
# --summary FILE appends one line per version, "VERSION MEDIAN_A MEDIAN_B RATIO" (for
# scripts/bench.sh, which puts every figure into one table).
# Needs root, scripts/install-deps.sh and `cargo build --release` to have run.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
LAB="$HERE/lab.sh"
CACHE="${ETCD_BOOTSTRAP_LAB_CACHE:-/var/cache/etcd-bootstrap-lab}"
BIN="$REPO/target/x86_64-unknown-linux-gnu/release/etcd-bootstrap"
RUNS=5
VERSIONS="3.4 3.5"
MEMBERS=3
NAME=ebbench
SUBNET=10.200.249
KEEP=""
SUMMARY=""
readonly DOMAIN=lab.test
readonly TRIAL_TIMEOUT_S=60
readonly POLL_S=0.05

die() {
    printf 'bench-start: ERROR: %s\n' "$*" >&2
    exit 1
}
note() { printf 'bench-start: %s\n' "$*" >&2; }

while (($#)); do
    case "$1" in
    --runs) RUNS=${2:-}; shift ;;
    --versions) VERSIONS=${2:-}; shift ;;
    --members) MEMBERS=${2:-}; shift ;;
    --name) NAME=${2:-}; shift ;;
    --subnet) SUBNET=${2:-}; shift ;;
    --keep-logs) KEEP=${2:-}; shift ;;
    --summary) SUMMARY=${2:-}; shift ;;
    -h | --help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs N (>= 1)"
[[ $MEMBERS =~ ^[1-9]$ ]] || die "--members N (1..9)"
[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces)"
[[ -f $CACHE/env ]] || die "$CACHE/env missing: run scripts/install-deps.sh first"
# shellcheck source=/dev/null
. "$CACHE/env"
[[ -x $BIN ]] || die "$BIN missing: run 'cargo build --release' first"
[[ -x ${CFSSL_DIR:-}/cfssl && -x $CFSSL_DIR/cfssljson ]] || die "cfssl missing in '${CFSSL_DIR:-}' (scripts/install-deps.sh)"
for v in $VERSIONS; do [[ $v == 3.4 || $v == 3.5 ]] || die "unknown version '$v' (3.4 or 3.5)"; done
if [[ -n $KEEP ]]; then
    mkdir -p "$KEEP" || die "--keep-logs: cannot create '$KEEP'"
    KEEP=$(cd "$KEEP" && pwd)
fi

WORK=$(mktemp -d /tmp/bench-start.XXXXXX)
PIDS=()
cleanup() {
    "$LAB" down --name "$NAME" --grace 0 >/dev/null 2>&1 || true
    local p
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=lib/bench-common.sh
. "$HERE/lib/bench-common.sh"
# shellcheck source=lib/node-config.sh
. "$HERE/lib/node-config.sh"
ip_of() { printf '%s.%d\n' "$SUBNET" "$((10 + $1))"; }

ENDPOINTS="" CLUSTER=""
for ((i = 1; i <= MEMBERS; i++)); do
    ENDPOINTS+="${ENDPOINTS:+,}https://$(ip_of "$i"):2379"
    CLUSTER+="${CLUSTER:+,}etcd$i=https://$(ip_of "$i"):2380"
done

# ---------------------------------------------------------------------------
# Certificates made in advance
# ---------------------------------------------------------------------------

make_cfssl_certs() {
    local d="$WORK/cfssl" i
    mkdir -p "$d"
    cat >"$d/ca-config.json" <<'EOF'
{"signing": {"default": {"expiry": "8760h"},
 "profiles": {"etcd": {"expiry": "8760h",
   "usages": ["signing", "digital signature", "key encipherment", "server auth", "client auth"]}}}}
EOF
    printf '{"CN": "bench etcd CA", "key": {"algo": "ecdsa", "size": 256}}\n' >"$d/ca-csr.json"
    (cd "$d" && "$CFSSL_DIR/cfssl" gencert -initca ca-csr.json 2>/dev/null | "$CFSSL_DIR/cfssljson" -bare ca)
    for ((i = 1; i <= MEMBERS; i++)); do
        printf '{"CN": "etcd%d", "hosts": ["%s", "etcd%d.%s", "127.0.0.1", "localhost"], "key": {"algo": "ecdsa", "size": 256}}\n' \
            "$i" "$(ip_of "$i")" "$i" "$DOMAIN" >"$d/etcd$i-csr.json"
        (cd "$d" && "$CFSSL_DIR/cfssl" gencert -ca ca.pem -ca-key ca-key.pem -config ca-config.json \
            -profile etcd "etcd$i-csr.json" 2>/dev/null | "$CFSSL_DIR/cfssljson" -bare "etcd$i")
    done
    printf '{"CN": "bench-client", "hosts": [], "key": {"algo": "ecdsa", "size": 256}}\n' >"$d/client-csr.json"
    (cd "$d" && "$CFSSL_DIR/cfssl" gencert -ca ca.pem -ca-key ca-key.pem -config ca-config.json \
        -profile etcd client-csr.json 2>/dev/null | "$CFSSL_DIR/cfssljson" -bare client)
    for f in ca.pem client.pem client-key.pem; do [[ -s $d/$f ]] || die "cfssl did not make $d/$f"; done
    for ((i = 1; i <= MEMBERS; i++)); do [[ -s $d/etcd$i.pem && -s $d/etcd$i-key.pem ]] || die "cfssl did not make etcd$i.pem"; done
}

# ---------------------------------------------------------------------------
# One trial
# ---------------------------------------------------------------------------

write_bootstrap_config() { # DIR HOST ETCD_DIR
    node_config "$1" bench "$MEMBERS" "$3/etcd" "$WORK/ebca" "srv:$DOMAIN" 5s >"$1/config.toml"
}

# Prints the milliseconds until all MEMBERS are healthy, or FAIL (and the log tails on
# stderr). METHOD a|b.
trial() { # METHOD ETCD_DIR TRIAL
    local method=$1 edir=$2 n=$3 t="$WORK/trial" i ip d pids=() t0 deadline out ok p
    local token="bench-$n-$RANDOM$RANDOM" cacert cert key
    "$LAB" down --name "$NAME" --grace 0 >/dev/null 2>&1 || true
    rm -rf "$t"
    "$LAB" up --name "$NAME" --subnet "$SUBNET" --hosts "$MEMBERS" --domain "$DOMAIN" >/dev/null 2>"$WORK/lab-up.err" ||
        { cat "$WORK/lab-up.err" >&2; die "lab.sh up failed"; }
    for ((i = 1; i <= MEMBERS; i++)); do
        mkdir -p "$t/h$i"
        if [[ $method == b ]]; then write_bootstrap_config "$t/h$i" "$i" "$edir"; fi
    done
    if [[ $method == a ]]; then
        cacert="$WORK/cfssl/ca.pem" cert="$WORK/cfssl/client.pem" key="$WORK/cfssl/client-key.pem"
    else
        cacert="$t/h1/pki/ca.crt" cert="$t/h1/pki/client.crt" key="$t/h1/pki/client.key"
    fi

    stamp
    t0=$NOW
    for ((i = 1; i <= MEMBERS; i++)); do
        ip=$(ip_of "$i") d="$t/h$i"
        if [[ $method == a ]]; then
            local c="$WORK/cfssl"
            ip netns exec "$NAME-h$i" "$edir/etcd" --name "etcd$i" --data-dir "$d/data" \
                --listen-peer-urls "https://$ip:2380" --initial-advertise-peer-urls "https://$ip:2380" \
                --listen-client-urls "https://$ip:2379,https://127.0.0.1:2379" \
                --advertise-client-urls "https://$ip:2379" \
                --listen-metrics-urls "http://127.0.0.1:2381" \
                --client-cert-auth --trusted-ca-file "$c/ca.pem" \
                --cert-file "$c/etcd$i.pem" --key-file "$c/etcd$i-key.pem" \
                --peer-client-cert-auth --peer-trusted-ca-file "$c/ca.pem" \
                --peer-cert-file "$c/etcd$i.pem" --peer-key-file "$c/etcd$i-key.pem" \
                --initial-cluster "$CLUSTER" --initial-cluster-token "$token" \
                --initial-cluster-state new </dev/null >"$d/log" 2>&1 &
        else
            ip netns exec "$NAME-h$i" "$BIN" run --config "$d/config.toml" </dev/null >"$d/log" 2>&1 &
        fi
        pids+=("$!")
        PIDS+=("$!")
    done

    deadline=$((t0 + TRIAL_TIMEOUT_S * 1000))
    ok=0 out=""
    while :; do
        local ready=1
        [[ -f $key ]] || ready=0
        for p in "${pids[@]}"; do
            ((ready)) || break
            listening_2379 "$p" || ready=0
        done
        if ((ready)); then
            if out=$(ip netns exec "$NAME-h1" env ETCDCTL_API=3 "$edir/etcdctl" --endpoints "$ENDPOINTS" \
                --cacert "$cacert" --cert "$cert" --key "$key" \
                --dial-timeout 1s --command-timeout 2s endpoint health 2>&1) &&
                (($(grep -c 'is healthy' <<<"$out") == MEMBERS)); then
                ok=1
                break
            fi
        fi
        stamp
        ((NOW > deadline)) && break
        sleep "$POLL_S"
    done
    stamp
    if ((ok)); then
        echo "$((NOW - t0)) $(max_stall "$t")"
    else
        echo "FAIL -"
        {
            printf '\n==== FAIL: method %s, %s, trial %d: not healthy within %ds ====\n' \
                "$method" "$(basename "$edir")" "$n" "$TRIAL_TIMEOUT_S"
            if [[ -n $out ]]; then printf -- '-- last etcdctl output:\n%s\n' "$out"; fi
            for ((i = 1; i <= MEMBERS; i++)); do
                printf -- '-- host %d: last 25 lines of its log --\n' "$i"
                tail -n 25 "$t/h$i/log" 2>/dev/null || true
            done
        } >&2
        # Keep the logs of a failed trial.
        cp -r "$t" "$WORK/../bench-start-fail-$method-$(basename "$edir")-$n-$$" 2>/dev/null &&
            note "logs of the failed trial kept in /tmp/bench-start-fail-$method-$(basename "$edir")-$n-$$"
    fi
    "$LAB" down --name "$NAME" --grace 0 >/dev/null 2>&1 || true
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ -n $KEEP ]]; then
        rm -rf "$KEEP/$(basename "$edir")-$method-$n"
        mv "$t" "$KEEP/$(basename "$edir")-$method-$n"
    fi
    rm -rf "$t"
}

# The longest stall (seconds, one decimal) of the members of trial directory DIR between
# etcd opening its backend and starting its raft member (see the header), or "?".
max_stall() { # DIR
    local f max="" s
    for f in "$1"/h*/log; do
        s=$(awk '
            function t(line,  m, a) {
                if (match(line, /"ts":"[0-9-]+T[0-9:.]+/)) { m = substr(line, RSTART, RLENGTH); sub(/.*T/, "", m) }
                else m = $2
                split(m, a, ":"); return a[1] * 3600 + a[2] * 60 + a[3]
            }
            # 3.4 (capnslog) and 3.5 (zap JSON) markers
            /embed: advertise client URLs|"msg":"opened backend db"/ { p = t($0) }
            (/etcdserver: starting member|"msg":"starting local member"/) && p != "" {
                d = t($0) - p; if (d < 0) d += 86400; printf "%.1f\n", d; exit
            }' "$f" 2>/dev/null)
        [[ -n $s ]] || { echo "?"; return; }
        if [[ -z $max ]] || awk -v a="$s" -v b="$max" 'BEGIN { exit !(a > b) }'; then max=$s; fi
    done
    echo "${max:-?}"
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

note "making certificates in advance (cfssl $CFSSL_VERSION; etcd-bootstrap ca init)"
make_cfssl_certs
"$BIN" ca init --out "$WORK/ebca" >/dev/null

declare -A RES=() STALL=()
for v in $VERSIONS; do
    case "$v" in
    3.4) edir=$ETCD_34_DIR ;;
    3.5) edir=$ETCD_35_DIR ;;
    esac
    for ((r = 1; r <= RUNS; r++)); do
        for m in a b; do
            out=$(trial "$m" "$edir" "$r")
            read -r res stall <<<"$out"
            RES[$v,$m]+="${RES[$v,$m]:+ }$res"
            STALL[$v,$m]+="${STALL[$v,$m]:+ }$stall"
            if [[ $res == FAIL ]]; then note "etcd $v, method $m, trial $r: FAIL"; else note "etcd $v, method $m, trial $r: $res ms (etcd peer-probe stall ${stall}s)"; fi
        done
    done
done

echo
printf 'start-to-healthy, %d members, TLS everywhere; ms per trial (a and b alternated), %d trials each\n' "$MEMBERS" "$RUNS"
printf '  a = etcd static bootstrap, cfssl certificates made in advance\n'
printf '  b = etcd-bootstrap run, SRV discovery, certificates made at boot\n\n'
hdr=$(printf '%-8s %-7s' version method)
for ((r = 1; r <= RUNS; r++)); do hdr+=$(printf ' %7s' "#$r"); done
hdr+=$(printf ' %8s' median)
echo "$hdr"
for v in $VERSIONS; do
    case "$v" in
    3.4) vv=$ETCD_34_VERSION ;;
    3.5) vv=$ETCD_35_VERSION ;;
    esac
    declare -A MED=()
    for m in a b; do
        read -r -a vals <<<"${RES[$v,$m]}"
        line=$(printf '%-8s %-7s' "$vv" "$m")
        for x in "${vals[@]}"; do line+=$(printf ' %7s' "$x"); done
        MED[$m]=$(median "${vals[@]}")
        line+=$(printf ' %8s' "${MED[$m]}")
        echo "$line"
    done
    for m in a b; do
        read -r -a vals <<<"${STALL[$v,$m]}"
        line=$(printf '%-8s %-7s' "" "$m stall")
        for x in "${vals[@]}"; do
            [[ $x =~ ^[0-9.]+$ ]] && x+=s
            line+=$(printf ' %7s' "$x")
        done
        echo "$line"
    done
    printf '%-8s ratio median(b)/median(a) = %s\n' "$vv" "$(ratio "${MED[a]}" "${MED[b]}")"
    if [[ -n $SUMMARY ]]; then
        printf '%s %s %s %s\n' "$v" "${MED[a]}" "${MED[b]}" "$(ratio "${MED[a]}" "${MED[b]}")" >>"$SUMMARY"
    fi
    unset MED
done
size=$(stat -c %s "$BIN")
echo
printf 'etcd-bootstrap release binary: %d bytes (%s MiB), %s\n' "$size" \
    "$(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }')" "$BIN"

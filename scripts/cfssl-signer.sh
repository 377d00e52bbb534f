#!/usr/bin/env bash
# cfssl-signer.sh - a real `cfssl serve` (cfssl 1.6.5) over HTTPS with HMAC auth keys,
# inside a lab made by lab.sh: the remote signer of the integration tests, and a worked
# example of how to set up a signer for a fleet.
#
# Usage:
#   cfssl-signer.sh up   --name PREFIX --dir DIR [--host br|I] [--port 8888]
#   cfssl-signer.sh down --dir DIR
#
# `up` (the lab PREFIX must exist: lab.sh up --name PREFIX ...):
#   1. DIR (created, 0700; must not exist or be empty): a CA made with
#      `cfssl gencert -initca`, ECDSA P-256, CN "etcd fleet CA"
#        DIR/ca.pem, DIR/ca-key.pem, DIR/ca.csr
#   2. DIR/auth.key   16 random bytes as 32 lowercase hex digits, nothing else (0600)
#      DIR/signer.json (0600) the signer's configuration: auth key "fleet" (type
#                     "standard", the hex above), a default profile and a profile
#                     "etcd", both usages signing, key encipherment, server auth,
#                     client auth, expiry 8760h and auth_key "fleet": the signer only
#                     signs authenticated requests (/api/v1/cfssl/authsign; a plain
#                     /api/v1/cfssl/sign is refused).
#   3. DIR/signer.pem, DIR/signer-key.pem (and signer.csr): the signer's own TLS
#      certificate, signed by the same CA, hosts = the signer's lab IP and 127.0.0.1.
#   4. `cfssl serve -address IP -port PORT -ca ... -ca-key ... -config signer.json
#      -tls-cert signer.pem -tls-key signer-key.pem -disable ...` in the lab namespace
#      (--host br: PREFIX-br, IP A.B.C.1 on br0; --host I: PREFIX-hI, IP A.B.C.(10+I)),
#      in the background, in its own session; output to DIR/cfssl.log, pid in
#      DIR/cfssl.pid. -disable leaves only authsign, info and health: cfssl 1.6.5's
#      newcert endpoint would sign for anyone, auth keys or not.
#      Waits (at most 10 s) until POST /api/v1/cfssl/info, asked with curl from the
#      same namespace and verified against DIR/ca.pem, answers with the CA.
#   5. Prints three lines:  url=https://IP:PORT  ca=DIR/ca.pem  auth_key=DIR/auth.key
#   On failure the started signer is killed, DIR is kept for its log, exit 1.
#
# `down` kills the signer of DIR/cfssl.pid (only if that pid is a cfssl started with
# this DIR's config; SIGTERM, SIGKILL after 5 s, bounded), deletes the files `up`
# made and then DIR if it is empty. Always exits 0. (`lab.sh down` also kills the
# signer, with everything else in the lab's namespaces, but leaves DIR.)
#
# Clients must talk to the signer from inside the lab (the lab has no route out), e.g.
#   lab.sh exec --name P --host 1 -- curl --cacert DIR/ca.pem -s -X POST \
#       -d '{"label":"","profile":"etcd"}' https://A.B.C.1:8888/api/v1/cfssl/info
#
# Needs root (ip netns), curl, and cfssl/cfssljson from scripts/install-deps.sh
# ($CFSSL_DIR in ${ETCD_BOOTSTRAP_LAB_CACHE:-/var/cache/etcd-bootstrap-lab}/env).

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly LAB="$HERE/lab.sh"
readonly CACHE="${ETCD_BOOTSTRAP_LAB_CACHE:-/var/cache/etcd-bootstrap-lab}"
readonly START_WAIT_S=10 # until /info answers with the CA
readonly STOP_GRACE_S=5  # SIGTERM -> SIGKILL in down
readonly AUTH_KEY_NAME=fleet
readonly PROFILE_USAGES='["signing", "key encipherment", "server auth", "client auth"]'
readonly PROFILE_EXPIRY=8760h
# Every endpoint but authsign, info and health. Without this, /api/v1/cfssl/newcert
# signs with the CA for anyone who can connect, auth keys or not (seen with 1.6.5);
# bundle, scan and certinfo make the signer connect to hosts named in the request.
# (sign is disabled by cfssl itself when every profile has an auth key.)
readonly DISABLED_ENDPOINTS="sign,newcert,init_ca,newkey,bundle,scan,scaninfo,certinfo,certadd,gencrl,crl,revoke,ocspsign,/"
# Everything `up` writes into DIR (what `down` removes).
readonly MADE_FILES=(ca.pem ca-key.pem ca.csr ca-csr.json auth.key signer.json
    signer.pem signer-key.pem signer.csr signer-csr.json cfssl.log cfssl.pid)

log() { printf 'cfssl-signer: %s\n' "$*" >&2; }
die() {
    printf 'cfssl-signer: ERROR: %s\n' "$*" >&2
    exit 1
}
usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }

now_ms() { date +%s%3N; }

pid_alive() { # not a zombie
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    rest=${stat##*) }
    [[ -n $rest && ${rest%% *} != Z ]]
}

# True if PID is a live cfssl whose command line names CONFIG (so a recycled pid, or
# another signer, is never killed).
is_our_cfssl() { # PID CONFIG
    local pid=$1 config=$2 cmdline
    [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == cfssl ]] || return 1
    cmdline=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    grep -qxF -- "$config" <<<"$cmdline"
}

# SIGTERM, up to STOP_GRACE_S, SIGKILL, up to 2 s more. Never fails.
stop_pid() { # PID
    local pid=$1 deadline
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(($(now_ms) + STOP_GRACE_S * 1000))
    while pid_alive "$pid" && (($(now_ms) < deadline)); do sleep 0.1; done
    pid_alive "$pid" || return 0
    log "SIGKILL for cfssl pid $pid (still running after ${STOP_GRACE_S}s)"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$(($(now_ms) + 2000))
    while pid_alive "$pid" && (($(now_ms) < deadline)); do sleep 0.1; done
    pid_alive "$pid" && log "WARNING: cfssl pid $pid still alive after SIGKILL"
    return 0
}

load_cfssl() {
    [[ -r $CACHE/env ]] || die "$CACHE/env missing: run scripts/install-deps.sh"
    # shellcheck source=/dev/null # written by install-deps.sh
    . "$CACHE/env"
    [[ -n ${CFSSL_DIR:-} && -x $CFSSL_DIR/cfssl && -x $CFSSL_DIR/cfssljson ]] ||
        die "cfssl not installed (CFSSL_DIR='${CFSSL_DIR:-}' in $CACHE/env); run scripts/install-deps.sh"
    CFSSL="$CFSSL_DIR/cfssl"
    CFSSLJSON="$CFSSL_DIR/cfssljson"
}

abs_path() { # DIR that may not exist yet -> absolute path
    case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "$1" ;;
    esac
}

# ---------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------

# The IPv4 address of the lab host's interface (br0 in PREFIX-br, eth0 in PREFIX-hI).
lab_ip() { # NAME HOST
    local dev=eth0 out
    [[ $2 == br ]] && dev=br0
    out=$("$LAB" exec --name "$1" --host "$2" -- ip -4 -o addr show dev "$dev") ||
        die "cannot read the address of $dev in lab '$1' host '$2' (does the lab exist? lab.sh list)"
    out=$(awk '{ for (i = 1; i < NF; i++) if ($i == "inet") { sub(/\/.*/, "", $(i + 1)); print $(i + 1); exit } }' <<<"$out")
    [[ $out =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "no IPv4 address on $dev in lab '$1' host '$2'"
    printf '%s\n' "$out"
}

# cfssl gencert ... | cfssljson -bare BASE, in DIR; checks that BASE.pem and
# BASE-key.pem were made.
gencert() { # BASE CFSSL-ARGS...
    local base=$1 out
    shift
    out=$(cd "$DIR" && "$CFSSL" gencert -loglevel 2 "$@" 2>"$DIR/.gencert.err") || {
        cat "$DIR/.gencert.err" >&2
        rm -f "$DIR/.gencert.err"
        die "cfssl gencert for $base failed"
    }
    rm -f "$DIR/.gencert.err"
    (cd "$DIR" && "$CFSSLJSON" -bare "$base" <<<"$out") || die "cfssljson for $base failed"
    [[ -s $DIR/$base.pem && -s $DIR/$base-key.pem ]] || die "cfssl did not make $DIR/$base.pem"
    chmod 600 "$DIR/$base-key.pem"
}

write_signer_config() { # HEXKEY
    local profile
    profile=$(printf '{"usages": %s, "expiry": "%s", "auth_key": "%s"}' \
        "$PROFILE_USAGES" "$PROFILE_EXPIRY" "$AUTH_KEY_NAME")
    cat >"$DIR/signer.json" <<EOF
{
  "signing": {
    "default": $profile,
    "profiles": {
      "etcd": $profile
    }
  },
  "auth_keys": {
    "$AUTH_KEY_NAME": {"type": "standard", "key": "$1"}
  }
}
EOF
    chmod 600 "$DIR/signer.json"
}

# True once POST /api/v1/cfssl/info, from inside the lab, answers success with the CA
# of DIR/ca.pem (compared on the certificate's base64 lines; JSON escapes the newlines).
info_has_ca() {
    local resp line
    resp=$("$LAB" exec --name "$NAME" --host "$HOST" -- curl --cacert "$DIR/ca.pem" -s \
        --max-time 2 -X POST -d '{}' "$URL/api/v1/cfssl/info" 2>/dev/null) || return 1
    [[ $resp == *'"success":true'* ]] || return 1
    while read -r line; do
        [[ $line == -----* || -z $line ]] && continue
        [[ $resp == *"$line"* ]] || return 1
    done <"$DIR/ca.pem"
}

STARTED_PID=""
rollback_up() {
    if [[ -n $STARTED_PID ]]; then
        log "up failed: stopping the signer (pid $STARTED_PID); $DIR kept (see cfssl.log)"
        stop_pid "$STARTED_PID"
        rm -f "$DIR/cfssl.pid"
    fi
}

cmd_up() {
    NAME="" DIR="" HOST=br
    local port=8888
    while (($#)); do
        case "$1" in
        --name) NAME=${2:-}; shift ;;
        --dir) DIR=${2:-}; shift ;;
        --host) HOST=${2:-}; shift ;;
        --port) port=${2:-}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "up: unknown argument '$1' (see --help)" ;;
        esac
        shift
    done
    [[ -n $NAME ]] || die "up: --name PREFIX required (a lab made by lab.sh up)"
    [[ -n $DIR ]] || die "up: --dir DIR required"
    [[ $HOST == br || $HOST =~ ^[1-9][0-9]{0,2}$ ]] || die "up: --host must be 'br' or a host number, got '$HOST'"
    if [[ ! $port =~ ^[1-9][0-9]{0,4}$ ]] || ((port > 65535)); then die "up: bad --port '$port'"; fi
    command -v curl >/dev/null || die "curl not found (apt-get install curl)"
    load_cfssl
    DIR=$(abs_path "$DIR")
    if [[ -e $DIR ]]; then
        [[ -d $DIR ]] || die "$DIR exists and is not a directory"
        [[ -z $(ls -A "$DIR") ]] || die "$DIR is not empty (a signer there already? cfssl-signer.sh down --dir $DIR)"
    fi
    local ip
    ip=$(lab_ip "$NAME" "$HOST")
    URL="https://$ip:$port"

    umask 077
    mkdir -p "$DIR"
    chmod 700 "$DIR"

    # 1. CA
    printf '{"CN": "etcd fleet CA", "key": {"algo": "ecdsa", "size": 256}}\n' >"$DIR/ca-csr.json"
    gencert ca -initca ca-csr.json

    # 2. auth key and signer configuration
    local key
    key=$(head -c16 /dev/urandom | od -An -v -tx1 | tr -d ' \n')
    [[ $key =~ ^[0-9a-f]{32}$ ]] || die "could not make a random key"
    printf '%s\n' "$key" >"$DIR/auth.key"
    chmod 600 "$DIR/auth.key"
    write_signer_config "$key"

    # 3. the signer's TLS certificate (signed locally: gencert does not use auth keys)
    printf '{"CN": "etcd fleet signer", "hosts": ["%s", "127.0.0.1"], "key": {"algo": "ecdsa", "size": 256}}\n' \
        "$ip" >"$DIR/signer-csr.json"
    gencert signer -ca ca.pem -ca-key ca-key.pem -config signer.json -profile etcd signer-csr.json

    # 4. cfssl serve in the lab. lab.sh exec and ip netns exec both exec, and setsid does
    # not fork here (a script's background job is not a process-group leader), so $! is
    # the pid that becomes cfssl.
    trap rollback_up EXIT
    setsid "$LAB" exec --name "$NAME" --host "$HOST" -- "$CFSSL" serve \
        -address "$ip" -port "$port" \
        -ca "$DIR/ca.pem" -ca-key "$DIR/ca-key.pem" -config "$DIR/signer.json" \
        -tls-cert "$DIR/signer.pem" -tls-key "$DIR/signer-key.pem" \
        -disable "$DISABLED_ENDPOINTS" \
        </dev/null >>"$DIR/cfssl.log" 2>&1 &
    STARTED_PID=$!
    printf '%s\n' "$STARTED_PID" >"$DIR/cfssl.pid"
    local deadline=$(($(now_ms) + START_WAIT_S * 1000))
    until info_has_ca; do
        if ! pid_alive "$STARTED_PID"; then
            tail -n 15 "$DIR/cfssl.log" >&2 || true
            die "cfssl serve exited (see $DIR/cfssl.log)"
        fi
        if (($(now_ms) > deadline)); then
            tail -n 15 "$DIR/cfssl.log" >&2 || true
            die "$URL/api/v1/cfssl/info did not answer with the CA within ${START_WAIT_S}s (see $DIR/cfssl.log)"
        fi
        sleep 0.1
    done
    is_our_cfssl "$STARTED_PID" "$DIR/signer.json" ||
        log "WARNING: pid $STARTED_PID is not the cfssl process (down may not find it; lab.sh down will)"
    STARTED_PID=""
    trap - EXIT

    # 5.
    log "signer of lab $NAME (host $HOST) is up, pid $(cat "$DIR/cfssl.pid")"
    printf 'url=%s\nca=%s\nauth_key=%s\n' "$URL" "$DIR/ca.pem" "$DIR/auth.key"
}

# ---------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------

cmd_down() {
    local dir="" pid f
    while (($#)); do
        case "$1" in
        --dir) dir=${2:-}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) log "down: unknown argument '$1' (ignored)" ;;
        esac
        shift
    done
    if [[ -z $dir ]]; then
        log "down: --dir DIR required; nothing done"
        return 0
    fi
    dir=$(abs_path "$dir")
    [[ -d $dir ]] || { log "no $dir: nothing to do"; return 0; }
    pid=$(cat "$dir/cfssl.pid" 2>/dev/null || true)
    if [[ -n $pid ]] && is_our_cfssl "$pid" "$dir/signer.json"; then
        stop_pid "$pid"
        log "signer (pid $pid) stopped"
    elif [[ -n $pid ]]; then
        log "pid $pid in $dir/cfssl.pid is not running this signer (already stopped)"
    fi
    for f in "${MADE_FILES[@]}"; do rm -f -- "${dir:?}/$f"; done
    rm -f -- "$dir/.gencert.err"
    if rmdir -- "$dir" 2>/dev/null; then
        log "$dir removed"
    else
        log "$dir kept: it holds files cfssl-signer.sh did not make"
    fi
    return 0
}

case "${1:-}" in
up) shift; cmd_up "$@" ;;
down) shift; cmd_down "$@" || true; exit 0 ;;
-h | --help | help) usage ;;
*) usage >&2; exit 2 ;;
esac

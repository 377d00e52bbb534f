#!/usr/bin/env bash
# demo.sh - a real etcd cluster formed by etcd-bootstrap, in a network-namespace lab on
# this machine: N "hosts", a DNS server with etcd's SRV records, a local CA, and one
# `etcd-bootstrap run` per host, all started at the same instant.
#
# Usage:
#   scripts/demo.sh [up] [--etcd 3.4|3.5] [--hosts N]
#   scripts/demo.sh down
#
#   up      (the default) runs scripts/install-deps.sh and `cargo build --release`,
#           creates the lab "demo" (subnet 10.77.0.0/24, hosts etcd1..etcdN.lab.test =
#           10.77.0.11..), a CA and one config per host under $DEMO_STATE, starts the N
#           bootstrappers detached (they outlive this script), waits at most 120 s until
#           `etcd-bootstrap status` in host 1 shows N healthy members, and prints the
#           member table, the binary, the time it took and how to use the cluster.
#           --etcd 3.5 (default: etcd 3.5.30) or 3.4 (etcd 3.4.23); --hosts N, 1..9
#           (default 3).
#           If a demo already exists, `up` changes nothing: it says so and exits 1 (run
#           `scripts/demo.sh down` first).
#           On failure it prints the last lines of every bootstrap log and tears down.
#   down    stops the bootstrappers (SIGTERM, which stops their etcd; SIGKILL after
#           30 s), removes the lab and $DEMO_STATE. Always exits 0.
#
# $DEMO_STATE defaults to /var/lib/etcd-bootstrap-demo; per host I: hI/config.toml,
# hI/bootstrap.log, hI/bootstrap.pid, hI/data, hI/pki (generated certificates).
# Needs root (network namespaces). Works from any directory.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
LAB="$HERE/lab.sh"
# shellcheck source=lib/node-config.sh
. "$HERE/lib/node-config.sh"
CACHE="${ETCD_BOOTSTRAP_LAB_CACHE:-/var/cache/etcd-bootstrap-lab}"
LAB_STATE_ROOT="${ETCD_BOOTSTRAP_LAB_STATE:-/run/etcd-bootstrap-lab}"
STATE="${DEMO_STATE:-/var/lib/etcd-bootstrap-demo}"
BIN="$REPO/target/x86_64-unknown-linux-gnu/release/etcd-bootstrap"

readonly NAME=demo
readonly SUBNET=10.77.0
readonly DOMAIN=lab.test
readonly HEALTHY_TIMEOUT_S=120 # until N healthy members
readonly STOP_GRACE_S=30       # SIGTERM -> SIGKILL for the bootstrappers in `down`
readonly STATUS_TIMEOUT_S=10   # one `etcd-bootstrap status` call

log() { printf 'demo: %s\n' "$*" >&2; }
die() {
    printf 'demo: ERROR: %s\n' "$*" >&2
    exit 1
}
usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
now_ms() { date +%s%3N; }

ip_of() { printf '%s.%d\n' "$SUBNET" "$((10 + $1))"; }

# True if PID is alive (not a zombie) and is an etcd-bootstrap process.
is_bootstrapper() {
    local stat rest
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    rest=${stat##*) }
    [[ ${rest%% *} != Z ]] || return 1
    [[ $(cat "/proc/$1/comm" 2>/dev/null) == etcd-bootstrap ]]
}

demo_exists() {
    [[ -e $STATE || -e $LAB_STATE_ROOT/$NAME ]] && return 0
    ip netns list 2>/dev/null | awk '{print $1}' | grep -Eq "^$NAME-(br|h[0-9]+)$"
}

# ---------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------

stop_bootstrappers() {
    local f p pids=() deadline
    for f in "$STATE"/h*/bootstrap.pid; do
        [[ -f $f ]] || continue
        p=$(cat "$f" 2>/dev/null || true)
        if is_bootstrapper "$p"; then pids+=("$p"); fi
    done
    ((${#pids[@]})) || return 0
    log "stopping ${#pids[@]} bootstrapper(s) (SIGTERM; their etcd stops with them)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    deadline=$(($(now_ms) + STOP_GRACE_S * 1000))
    while (($(now_ms) < deadline)); do
        local alive=()
        for p in "${pids[@]}"; do
            if is_bootstrapper "$p"; then alive+=("$p"); fi
        done
        ((${#alive[@]})) || return 0
        sleep 0.2
    done
    log "SIGKILL for bootstrapper(s) still running after ${STOP_GRACE_S}s"
    for p in "${pids[@]}"; do
        if is_bootstrapper "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
    done
}

do_down() {
    stop_bootstrappers || true
    # Whatever is still running in the lab (an orphaned etcd, dnsmasq) goes with it.
    "$LAB" down --name "$NAME" --grace 5 || true
    rm -rf -- "$STATE" || true
}

cmd_down() {
    (($# == 0)) || die "down takes no arguments"
    do_down
    log "demo is down"
    exit 0
}

# ---------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------

write_config() { # HOST SIZE ETCD_DIR
    local d="$STATE/h$1"
    mkdir -p "$d"
    node_config "$d" demo "$2" "$3/etcd" "$STATE/ca" "srv:$DOMAIN" 5s >"$d/config.toml"
}

print_log_tails() {
    local i
    for ((i = 1; i <= HOSTS; i++)); do
        [[ -f $STATE/h$i/bootstrap.log ]] || continue
        printf '\n---- host %d: last 30 lines of %s ----\n' "$i" "$STATE/h$i/bootstrap.log" >&2
        tail -n 30 "$STATE/h$i/bootstrap.log" >&2 || true
    done
}

UP_OK=0
on_up_exit() {
    local rc=$?
    ((UP_OK)) && return 0
    log "up failed (exit $rc)"
    print_log_tails
    log "tearing the demo down"
    do_down >/dev/null 2>&1 || true
    exit 1
}

cmd_up() {
    local version=3.5 etcd_dir i
    HOSTS=3
    while (($#)); do
        case "$1" in
        --etcd) version=${2:-}; shift ;;
        --hosts) HOSTS=${2:-}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "up: unknown argument '$1' (see --help)" ;;
        esac
        shift
    done
    [[ $HOSTS =~ ^[1-9]$ ]] || die "--hosts N: 1..9"
    [[ $version == 3.4 || $version == 3.5 ]] || die "--etcd 3.4 or 3.5"

    if demo_exists; then
        log "a demo already exists (state $STATE and/or lab '$NAME');"
        log "run 'scripts/demo.sh down' first"
        exit 1
    fi
    local t_script
    t_script=$(now_ms)

    log "installing/checking dependencies (scripts/install-deps.sh)"
    "$HERE/install-deps.sh"
    # shellcheck source=/dev/null
    . "$CACHE/env"
    case "$version" in
    3.4) etcd_dir=$ETCD_34_DIR ;;
    3.5) etcd_dir=$ETCD_35_DIR ;;
    esac

    if ! command -v cargo >/dev/null && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
        PATH="${HOME:-/root}/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null || die "cargo not found (install a Rust toolchain)"
    log "building the release binary (cargo build --release)"
    (cd "$REPO" && cargo build --release)
    [[ -x $BIN ]] || die "$BIN missing after the build"

    UP_OK=0
    trap on_up_exit EXIT
    trap 'exit 130' INT TERM

    "$LAB" up --name "$NAME" --subnet "$SUBNET" --hosts "$HOSTS" --domain "$DOMAIN" >/dev/null
    mkdir -p "$STATE"
    "$BIN" ca init --out "$STATE/ca" >/dev/null
    for ((i = 1; i <= HOSTS; i++)); do write_config "$i" "$HOSTS" "$etcd_dir"; done

    # All at once: nothing between the spawns but fork+exec. setsid (a new session, no
    # terminal, not in this script's process group) and nohup make them outlive this
    # script; a script has no job control, so setsid does not fork and $! is the pid
    # that ends up being etcd-bootstrap (setsid, nohup, lab.sh and ip netns exec all exec).
    local t0
    t0=$(now_ms)
    for ((i = 1; i <= HOSTS; i++)); do
        setsid nohup "$LAB" exec --name "$NAME" --host "$i" -- \
            "$BIN" run --config "$STATE/h$i/config.toml" \
            </dev/null >>"$STATE/h$i/bootstrap.log" 2>&1 &
        echo "$!" >"$STATE/h$i/bootstrap.pid"
    done
    log "started $HOSTS bootstrappers (etcd $version); waiting up to ${HEALTHY_TIMEOUT_S}s for $HOSTS healthy members"

    local deadline json healthy members took p
    deadline=$((t0 + HEALTHY_TIMEOUT_S * 1000))
    while :; do
        json=$(timeout "$STATUS_TIMEOUT_S" "$LAB" exec --name "$NAME" --host 1 -- \
            "$BIN" status --config "$STATE/h1/config.toml" --output json 2>/dev/null) || json=""
        healthy=$(grep -c '"healthy": true' <<<"$json" || true)
        members=$(grep -c '"healthy": ' <<<"$json" || true)
        if ((healthy == HOSTS && members == HOSTS)); then break; fi
        for ((i = 1; i <= HOSTS; i++)); do
            p=$(cat "$STATE/h$i/bootstrap.pid")
            is_bootstrapper "$p" || die "the bootstrapper of host $i (pid $p) exited"
        done
        (($(now_ms) > deadline)) && die "no $HOSTS healthy members within ${HEALTHY_TIMEOUT_S}s (last status: $healthy healthy of $members)"
        sleep 0.2
    done
    took=$(($(now_ms) - t0))

    local size eps
    echo
    echo "== etcd-bootstrap status (host 1) =="
    "$LAB" exec --name "$NAME" --host 1 -- "$BIN" status --config "$STATE/h1/config.toml"
    echo
    echo "== the binary =="
    file "$BIN"
    size=$(stat -c %s "$BIN")
    printf 'size: %d bytes (%s MiB)\n' "$size" "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')"
    echo
    printf '%d members of etcd %s healthy %d.%03d s after the bootstrappers started (whole "up": %d s)\n' \
        "$HOSTS" "$("$etcd_dir/etcd" --version | awk '/^etcd Version:/ {print $3}')" \
        "$((took / 1000))" "$((took % 1000))" "$((($(now_ms) - t_script) / 1000))"

    eps=""
    for ((i = 1; i <= HOSTS; i++)); do eps+="${eps:+,}https://$(ip_of "$i"):2379"; done
    cat <<EOF

== use it ==
  # etcdctl in host 1, with the client certificate etcd-bootstrap generated there:
  $LAB exec --name $NAME --host 1 -- \\
    $etcd_dir/etcdctl --endpoints=$eps \\
    --cacert=$STATE/h1/pki/ca.crt --cert=$STATE/h1/pki/client.crt --key=$STATE/h1/pki/client.key \\
    member list -w table
  # (or: endpoint status -w table, put /demo/key hello, get /demo/key)

  # members and certificate expiry as etcd-bootstrap sees them:
  $LAB exec --name $NAME --host 1 -- $BIN status --config $STATE/h1/config.toml

  logs:    $STATE/hI/bootstrap.log (I = 1..$HOSTS; etcd's own output is in there too)
  configs: $STATE/hI/config.toml, generated etcd env: $STATE/hI/etcd.env
  a shell in host I: $LAB exec --name $NAME --host I -- bash

== tear down ==
  $HERE/demo.sh down
EOF
    UP_OK=1
}

main() {
    local cmd=up
    if (($#)) && [[ $1 != -* ]]; then
        cmd=$1
        shift
    fi
    case "$cmd" in
    -h | --help | help) usage; exit 0 ;;
    up | down) ;;
    *) usage >&2; exit 2 ;;
    esac
    if [[ ${1:-} == -h || ${1:-} == --help ]]; then usage; exit 0; fi
    [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces)"
    "cmd_$cmd" "$@"
}

main "$@"

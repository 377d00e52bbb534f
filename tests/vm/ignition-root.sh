#!/usr/bin/env bash
# ignition-root.sh - provision a VM root with the real Ignition, the way a first boot would
# (files stage), before the disk image is made. Called by tests/vm/run.sh.
#
# Usage: ignition-root.sh WORK IMAGE_ROOT BINARY I SUBNET GW DOMAIN CLUSTER MAC
#   Copies IMAGE_ROOT to WORK/root-ign, renders the project's Ignition config
#   (ignition/srv-local-ca.ign, a Terraform template) with the test's CA, SRV domain and
#   nameserver and a binary URL served by a local HTTP server on 127.0.0.1, then runs
#   Debian's Ignition binary: `-platform file -stage fetch`, then `-stage files -root
#   WORK/root-ign`. Ignition writes the config, the agent's unit, the binary (fetched
#   from the local server, SHA-256 checked by Ignition) and a systemd preset
#   (`enable etcd-bootstrap.service`); the image's "uninitialized" machine-id makes the
#   VM's first boot apply that preset.
#   What Ignition does not do here (on Fedora CoreOS/Flatcar the platform does it): the
#   VM's network. The test writes a systemd-networkd file (static address by MAC,
#   nameserver GW), the hostname etcdI, and disables cloud-init on this VM.
set -euo pipefail

WORK=$1 IMAGE_ROOT=$2 BIN=$3 I=$4 SUBNET=$5 GW=$6 DOMAIN=$7 CLUSTER=$8 MAC=$9
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
IGNITION=/usr/lib/dracut/modules.d/30ignition/ignition
TEMPLATE=$REPO/ignition/srv-local-ca.ign
ROOT=$WORK/root-ign
D=$WORK/ign
log() { printf 'ignition-root: %s\n' "$*" >&2; }
die() {
    printf 'ignition-root: ERROR: %s\n' "$*" >&2
    exit 1
}
[[ -x $IGNITION ]] || die "$IGNITION missing (Debian package ignition)"
[[ -f $TEMPLATE ]] || die "$TEMPLATE missing"

HTTP_PID=""
cleanup() { if [[ -n $HTTP_PID ]]; then kill "$HTTP_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

rm -rf "$ROOT" "$D"
mkdir -p "$D/www"
cp -a "$IMAGE_ROOT" "$ROOT"
mkdir -p "$ROOT/etc/selinux"
printf 'SELINUX=disabled\nSELINUXTYPE=targeted\n' >"$ROOT/etc/selinux/config"

# The binary, served on loopback only, for the config's remote source.
cp "$BIN" "$D/www/etcd-bootstrap"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$D/www" "$PORT" >"$D/http.log" 2>&1 &
HTTP_PID=$!
deadline=$(($(date +%s) + 10))
until python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/', timeout=1)" 2>/dev/null; do
    (($(date +%s) < deadline)) || die "local HTTP server did not start"
    sleep 0.2
done

python3 "$HERE/render.py" "$TEMPLATE" \
    cluster_name="$CLUSTER" cluster_size=3 srv_domain="$DOMAIN" nameservers="'$GW'" \
    ca_cert_b64="$(base64 -w0 "$WORK/ca/ca.crt")" ca_key_b64="$(base64 -w0 "$WORK/ca/ca.key")" \
    binary_url="http://127.0.0.1:$PORT/etcd-bootstrap" \
    binary_sha256="$(sha256sum "$BIN" | cut -d' ' -f1)" etcd_binary=/usr/bin/etcd >"$D/config.ign" ||
    die "rendering $TEMPLATE failed"
log "rendered $TEMPLATE -> $D/config.ign"

# Debian's Ignition relabels the files it wrote for SELinux at the end of the files stage
# (`setfiles`), even with SELINUX=disabled. The image has no SELinux (no policy, no
# policycoreutils): a stub `setfiles` first on PATH records what would have been relabeled.
mkdir -p "$D/bin"
printf '#!/bin/sh\nprintf "%%s\\n" "$*" >"%s/setfiles.args"\ncat >"%s/setfiles.paths"\n' "$D" "$D" >"$D/bin/setfiles"
chmod 755 "$D/bin/setfiles"
export PATH=$D/bin:$PATH

log "ignition fetch stage"
IGNITION_CONFIG_FILE=$D/config.ign "$IGNITION" -platform file -stage fetch \
    -config-cache "$D/cache.json" -state-file "$D/state" -log-to-stdout || die "ignition fetch stage failed"
log "ignition files stage into $ROOT"
IGNITION_CONFIG_FILE=$D/config.ign "$IGNITION" -platform file -stage files -root "$ROOT" \
    -config-cache "$D/cache.json" -state-file "$D/state" -log-to-stdout || die "ignition files stage failed"

# The platform's part: network, hostname; no cloud-init on this VM.
mkdir -p "$ROOT/etc/systemd/network"
cat >"$ROOT/etc/systemd/network/10-ebvm.network" <<EOF
[Match]
MACAddress=$MAC

[Network]
Address=$SUBNET.$((10 + I))/24
DNS=$GW
Domains=$DOMAIN
EOF
echo "etcd$I" >"$ROOT/etc/hostname"
touch "$ROOT/etc/cloud/cloud-init.disabled"
rm -f "$ROOT/etc/selinux/config"
rmdir "$ROOT/etc/selinux" 2>/dev/null || true

# Ignition enables units only through its preset; nothing here may enable it otherwise.
[[ ! -e $ROOT/etc/systemd/system/multi-user.target.wants/etcd-bootstrap.service ]] ||
    die "etcd-bootstrap.service is already enabled in the root (the test must see the preset work)"
log "what Ignition wrote:"
find "$ROOT/etc/etcd-bootstrap" "$ROOT/etc/systemd/system-preset" "$ROOT/usr/local/bin" \
    "$ROOT/etc/systemd/system" -newer "$D/config.ign" -type f -printf '%m %p\n' 2>/dev/null | sed "s|$ROOT||" >&2 || true
cat "$ROOT"/etc/systemd/system-preset/*ignition* >&2 2>/dev/null || true
log "relabel request (setfiles stub): $(cat "$D/setfiles.args" 2>/dev/null) for $(tr -cd '\0' <"$D/setfiles.paths" 2>/dev/null | wc -c) paths"
[[ -x $ROOT/usr/local/bin/etcd-bootstrap ]] || die "Ignition did not write /usr/local/bin/etcd-bootstrap"

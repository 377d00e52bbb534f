#!/usr/bin/env bash
# tests/vm/run.sh - the real-VM end-to-end test of etcd-bootstrap (see tests/vm/README.md).
#
# Usage: tests/vm/run.sh [--keep-logs|--prepare]      (as root; Debian bookworm)
#
# --prepare: only install the packages, build the release binary and the image (both cached),
# then exit: scripts/test.sh runs that in the background, at the lowest priority, while the lab
# tests run, so that the test proper starts at once.
#
# 1. image: a Debian bookworm root (tests/vm/build-image.sh: systemd, cloud-init,
#    etcd-server 3.4.23), cached in $CACHE/vm/image-<sha256 of build-image.sh>;
#    the release binary goes to /usr/local/bin/etcd-bootstrap; mkfs.ext4 -d makes
#    the disk, each VM boots a qcow2 overlay of it.
# 2. network: namespace ebvm-br with bridge br0 (10.99.1.1/24), one tap per VM,
#    dnsmasq on 10.99.1.1 with A + SRV records (_etcd-server-ssl / _etcd-client-ssl
#    ._tcp.vm.test) for etcd1..3; etcd4 (the Ignition VM) is published before it boots.
# 3. cluster: 3 VMs (qemu, TCG unless KVM really runs, 1 vCPU, 768 MiB) booted at
#    once, each with a NoCloud seed (the project's cloudinit/ SRV + local-CA
#    user-data, rendered; meta-data; network-config v2 static address by MAC).
#    Pass: every console reports etcd=active, etcdctl over mTLS (a client cert
#    signed by the test's CA) sees 3 started voters and a healthy cluster.
# 4. replaced disk: keys written, VM 2 stopped, its disk replaced by a fresh overlay
#    (same seed, name, address), booted. Pass: etcd2 a started voter again (new
#    member ID), cluster healthy, the keys readable through etcd2.
# 4b. removed member in a pod: etcd3 removed with etcdctl heals (README).
# 4c. fleet restore: a snapshot (encrypted, to the test's S3 server on the bridge), a
#    key after it, `etcd-bootstrap restore` of it from etcd1. Pass: 3 healthy voters
#    with exactly the keys from before it. Every "where etcd runs" check also wants
#    etcd as a user other than root.
# 5. Ignition: the project's ignition/ config (rendered) applied by the real Ignition
#    (-platform file, stages fetch + files) to a copy of the root before mkfs; the
#    VM boots without a cloud-init seed. Pass: etcd4 a started voter, keys readable.
# Everything runs inside namespace ebvm-br; the trap tears everything down. Logs
# (consoles, dnsmasq, Ignition) stay in the printed directory on failure.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${ETCD_BOOTSTRAP_LAB_CACHE:-/var/cache/etcd-bootstrap-lab}
NS=ebvm-br
SUBNET=10.99.1
GW=$SUBNET.1
DOMAIN=vm.test
CLUSTER=vmtest
MEM_MB=${EBVM_MEM_MB:-768}
BOOT_WAIT_S=${EBVM_BOOT_WAIT_S:-900}  # 3 VMs, start to healthy cluster
HEAL_WAIT_S=${EBVM_HEAL_WAIT_S:-600}  # replaced disk, boot to healthy voter
JOIN_WAIT_S=${EBVM_JOIN_WAIT_S:-600}  # Ignition VM, boot to healthy voter
RESTORE_WAIT_S=${EBVM_RESTORE_WAIT_S:-900} # fleet restore, request to done
SETTLE_S=30                           # healthy this long in a row counts as healthy
KEEP_LOGS=0
PREPARE=0
case ${1:-} in
--keep-logs) KEEP_LOGS=1 ;;
--prepare) PREPARE=1 ;;
"") ;;
*)
    echo "usage: tests/vm/run.sh [--keep-logs|--prepare]" >&2
    exit 2
    ;;
esac

T0=$(date +%s)
log() { printf 'vm [%4ds]: %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() {
    printf 'vm: ERROR: %s\n' "$*" >&2
    exit 1
}
[[ $(id -u) -eq 0 ]] || die "must run as root"

# ---------------------------------------------------------------------------
# Dependencies (Debian packages from the machine's own sources)
# ---------------------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
# The installed version of a package, or nothing (never fails: used in assignments under set -e).
pkg_version() { { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null || true; } | awk '$3 == "installed" { print $4 }'; }
install_deps() {
    local want=(debootstrap qemu-system-x86 qemu-utils genisoimage e2fsprogs dnsmasq-base
        ignition python3 openssl iproute2 procps) missing=() p
    for p in "${want[@]}"; do [[ -n $(pkg_version "$p") ]] || missing+=("$p"); done
    ((${#missing[@]} == 0)) && return 0
    log "installing: ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=120 update -q >/dev/null
    # A newer qemu-utils (backports) conflicts with bookworm's qemu-system-x86: take the
    # pair from the same release.
    local qs qu
    qs=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')
    qu=$(pkg_version qemu-utils)
    if [[ -n $qu && $qu != "$qs" && -z $(pkg_version qemu-system-x86) ]]; then
        log "removing qemu-utils $qu (does not match qemu-system-x86 $qs)"
        apt-get -o DPkg::Lock::Timeout=120 remove -y -q qemu-utils >/dev/null
        missing+=(qemu-utils)
    fi
    apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------------------
# Teardown
# ---------------------------------------------------------------------------
WORK=""
LOGS=""
PIDS=()
cleanup() {
    local rc=$? p
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    if ip netns list 2>/dev/null | grep -qw "^$NS"; then
        # Anything left in the namespace (nothing should be).
        for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        ip netns del "$NS" 2>/dev/null
    fi
    rm -rf "/etc/netns/$NS"
    if [[ -n $WORK ]]; then
        rm -rf "$WORK/root" "$WORK/root-ign" "$WORK"/*.img "$WORK"/*.qcow2 "$WORK"/*.iso
        if ((rc != 0 || KEEP_LOGS)); then
            printf 'vm: logs kept in %s\n' "$LOGS" >&2
            # Keep only the logs.
            find "$WORK" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One run at a time on a machine (the namespace and subnet are fixed).
exec 8>/run/ebvm.lock
flock -n 8 || die "another tests/vm/run.sh is running (lock /run/ebvm.lock)"
if ip netns list | grep -qw "^$NS"; then
    log "removing a leftover namespace $NS"
    for p in $(ip netns pids "$NS"); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$NS"
fi

install_deps
"$REPO/scripts/install-deps.sh" >/dev/null
# shellcheck disable=SC1091
source "$CACHE/env"
ETCDCTL=$ETCD_34_DIR/etcdctl

WORK=$(mktemp -d /var/tmp/ebvm.XXXXXX)
LOGS=$WORK/logs
mkdir -p "$LOGS"
log "work dir $WORK"

declare -A TIMING=()
RESULTS=()
PASSED=0
FAILED=0
pass() {
    RESULTS+=("PASS  $1")
    PASSED=$((PASSED + 1))
    log "PASS: $1"
}
fail() {
    RESULTS+=("FAIL  $1")
    FAILED=$((FAILED + 1))
    log "FAIL: $1"
}

# ---------------------------------------------------------------------------
# 1. binary and image
# ---------------------------------------------------------------------------
BIN=${EBVM_BINARY:-}
if [[ -z $BIN ]]; then
    # A target directory of its own: the release build then never waits for the lock of the
    # debug build that the lab tests use (scripts/test.sh runs both at once).
    log "cargo build --release (target/vm)"
    (cd "$REPO" && CARGO_TARGET_DIR="$REPO/target/vm" cargo build --release -q) || die "cargo build --release failed"
    # .cargo/config.toml sets build.target, so the binary is under <target dir>/<triple>/release.
    for BIN in "$REPO"/target/vm/x86_64-unknown-linux-gnu/release/etcd-bootstrap "$REPO"/target/vm/release/etcd-bootstrap; do
        [[ -x $BIN ]] && break
    done
fi
[[ -x $BIN ]] || die "no etcd-bootstrap binary (set EBVM_BINARY)"
# The release as users get it (scripts/release.sh: the binary named by version and target,
# SHA256SUMS, the templates), from this binary without a second build; tests/deliverables.rs
# checks its shape when it finds it. Not fatal here: the VM test does not use it.
"$REPO/scripts/release.sh" --binary "$BIN" --out "$REPO/target/vm/dist" >/dev/null ||
    log "WARNING: scripts/release.sh refused $BIN (see above)"

HASH=$(sha256sum "$HERE/build-image.sh" | cut -c1-16)
IMAGE=$CACHE/vm/image-$HASH
t=$(date +%s)
if [[ -f $IMAGE/DONE ]]; then
    log "image cached: $IMAGE"
    TIMING[image]="$(($(date +%s) - t)) s (cached; built in $(cat "$IMAGE/BUILD-SECONDS" 2>/dev/null || echo '?') s)"
else
    log "building the image (debootstrap; a few minutes) into $IMAGE"
    mkdir -p "$CACHE/vm"
    rm -rf "$IMAGE.tmp"
    "$HERE/build-image.sh" "$IMAGE.tmp" || die "image build failed"
    echo "$(($(date +%s) - t))" >"$IMAGE.tmp/BUILD-SECONDS"
    rm -rf "$IMAGE"
    mv "$IMAGE.tmp" "$IMAGE"
    # Older images are dropped (each is ~1 GB).
    find "$CACHE/vm" -mindepth 1 -maxdepth 1 -name 'image-*' ! -name "image-$HASH" -exec rm -rf {} +
    TIMING[image]="$(($(date +%s) - t)) s (built)"
fi

if ((PREPARE)); then
    log "prepared: the release binary ($BIN) and the image ($IMAGE); image ${TIMING[image]}"
    exit 0
fi

t=$(date +%s)
cp -a "$IMAGE/root" "$WORK/root"
install -m 0755 "$BIN" "$WORK/root/usr/local/bin/etcd-bootstrap"
# [backup] for the cloud-init VMs, as a drop-in beside the config cloud-init writes: the test's
# S3 server on the bridge (SeaweedFS, HTTPS with a certificate from the cluster's CA), snapshots
# encrypted for an age key made here, no scheduled snapshot after the first one and no deltas
# (the restore phase takes its own snapshot). The Ignition VM's root is another copy, without it.
S3_PORT=8333
S3_KEY_ID=ebvmaccesskey
S3_SECRET=ebvmsecretkey0123456789
age-keygen -o "$WORK/age-identity.txt" 2>/dev/null || die "age-keygen failed"
AGE_PUBLIC=$(age-keygen -y "$WORK/age-identity.txt")
EB_ETC=$WORK/root/etc/etcd-bootstrap
mkdir -p "$EB_ETC/config.d"
install -m 0600 "$WORK/age-identity.txt" "$EB_ETC/age-identity.txt"
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$S3_KEY_ID" "$S3_SECRET" >"$WORK/s3-credentials"
install -m 0600 "$WORK/s3-credentials" "$EB_ETC/s3-credentials"
cat >"$EB_ETC/config.d/50-ebvm-backup.toml" <<EOF
[backup]
url = "s3://etcd-backups/vmtest"
s3_endpoint = "https://$GW:$S3_PORT"
s3_credentials_file = "/etc/etcd-bootstrap/s3-credentials"
ca_file = "/etc/etcd-bootstrap/ca.crt"
age_recipients = ["$AGE_PUBLIC"]
age_identity_file = "/etc/etcd-bootstrap/age-identity.txt"
interval = "8760h"
delta_interval = ""
EOF
# Test aid: the restore phase's trigger. On etcd1 only, once the key /vmtest/restore-now says
# "go": a snapshot (`etcd-bootstrap snapshot save`), a key written after it, then
# `etcd-bootstrap restore --from <it> --yes`, as an operator would run them; the outcome goes to
# the serial console ("EBVM-RESTORE etcd1 rc=N").
cat >"$WORK/root/usr/local/sbin/ebvm-restore" <<'EOF'
#!/bin/sh
[ "$(hostname)" = etcd1 ] || exit 0
pki=/etc/etcd/pki
ctl() {
    ETCDCTL_API=3 etcdctl --endpoints https://127.0.0.1:2379 --cacert $pki/ca.crt \
        --cert $pki/client.crt --key $pki/client.key --dial-timeout 3s --command-timeout 10s "$@"
}
# Every 20 s: each look starts etcdctl, which costs the emulated CPU the other phases need.
until [ "$(ctl get --print-value-only /vmtest/restore-now 2>/dev/null)" = go ]; do sleep 20; done
id=$(etcd-bootstrap snapshot save 2>/tmp/ebvm-snapshot.log)
rc=$?
if [ $rc -ne 0 ] || [ -z "$id" ]; then
    sed 's/^/EBVM-RESTORE-LOG /' /tmp/ebvm-snapshot.log | tail -n 20 >/dev/ttyS0
    echo "EBVM-RESTORE etcd1 rc=snapshot-$rc" >/dev/ttyS0
    exit 1
fi
ctl put /vmtest/after-snapshot gone >/dev/null
etcd-bootstrap restore --from "$id" --yes --timeout 15m >/tmp/ebvm-restore.log 2>&1
rc=$?
sed 's/^/EBVM-RESTORE-LOG /' /tmp/ebvm-restore.log | tail -n 20 >/dev/ttyS0
echo "EBVM-RESTORE etcd1 rc=$rc snapshot=$id" >/dev/ttyS0
EOF
chmod 0755 "$WORK/root/usr/local/sbin/ebvm-restore"
cat >"$WORK/root/etc/systemd/system/ebvm-restore.service" <<'EOF'
[Unit]
Description=tests/vm: snapshot and fleet restore when the test asks for it (etcd1 only)
After=etcd-bootstrap.service

[Service]
ExecStart=/usr/local/sbin/ebvm-restore

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/ebvm-restore.service "$WORK/root/etc/systemd/system/multi-user.target.wants/ebvm-restore.service"
mkfs.ext4 -q -F -L root -d "$WORK/root" "$WORK/base.img" 3G >/dev/null || die "mkfs.ext4 -d failed"
TIMING[disk]="$(($(date +%s) - t)) s"
log "disk image ready (${TIMING[disk]})"

# ---------------------------------------------------------------------------
# 2. CA, client certificate, network, DNS
# ---------------------------------------------------------------------------
"$BIN" ca init --out "$WORK/ca" >/dev/null || die "etcd-bootstrap ca init failed"
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/client.key" 2>/dev/null
openssl req -new -key "$WORK/client.key" -subj "/CN=vm-test-client" -out "$WORK/client.csr" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n' >"$WORK/client.ext"
openssl x509 -req -in "$WORK/client.csr" -CA "$WORK/ca/ca.crt" -CAkey "$WORK/ca/ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/client.ext" -out "$WORK/client.crt" 2>/dev/null ||
    die "signing the test's client certificate failed"

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add br0 type bridge
ip -n "$NS" addr add "$GW/24" dev br0
ip -n "$NS" link set br0 up
for i in 1 2 3 4; do
    ip -n "$NS" tuntap add "tap$i" mode tap
    ip -n "$NS" link set "tap$i" master br0
    ip -n "$NS" link set "tap$i" up
done

DNS_PID=""
start_dns() { # HOST_NUMBERS...
    local args=() i
    if [[ -n $DNS_PID ]]; then
        kill "$DNS_PID" 2>/dev/null || true
        wait "$DNS_PID" 2>/dev/null || true
    fi
    for i in "$@"; do
        args+=("--host-record=etcd$i.$DOMAIN,$SUBNET.$((10 + i))"
            "--srv-host=_etcd-server-ssl._tcp.$DOMAIN,etcd$i.$DOMAIN,2380,0,10"
            "--srv-host=_etcd-client-ssl._tcp.$DOMAIN,etcd$i.$DOMAIN,2379,0,10")
    done
    ip netns exec "$NS" dnsmasq --no-daemon --no-resolv --no-hosts --log-queries \
        --listen-address="$GW" --bind-interfaces --local-ttl=0 \
        --local="/$DOMAIN/" "${args[@]}" >>"$LOGS/dnsmasq.log" 2>&1 &
    DNS_PID=$!
    PIDS+=("$DNS_PID")
    local deadline=$(($(date +%s) + 10))
    until ip netns exec "$NS" dig +short +time=1 +tries=1 "@$GW" SRV "_etcd-server-ssl._tcp.$DOMAIN" 2>/dev/null | grep -q "etcd$1\."; do
        (($(date +%s) < deadline)) || die "dnsmasq does not answer within 10 s (log: $LOGS/dnsmasq.log)"
        sleep 0.2
    done
}
start_dns 1 2 3

# The S3 server the cloud-init VMs back up to (weed mini from scripts/install-deps.sh), on the
# bridge only, with its own local sockets (the default paths are shared by every weed on the
# machine).
mkdir -p "$WORK/s3/data"
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/s3/s3.key" 2>/dev/null
openssl req -new -key "$WORK/s3/s3.key" -subj "/CN=ebvm-s3" -addext "subjectAltName=IP:$GW" \
    -out "$WORK/s3/s3.csr" 2>/dev/null
openssl x509 -req -in "$WORK/s3/s3.csr" -CA "$WORK/ca/ca.crt" -CAkey "$WORK/ca/ca.key" \
    -CAcreateserial -days 2 -copy_extensions copy -out "$WORK/s3/s3.crt" 2>/dev/null ||
    die "signing the S3 server's certificate failed"
# nice: the VMs' emulated CPUs come first on this 2-core machine.
ip netns exec "$NS" env AWS_ACCESS_KEY_ID="$S3_KEY_ID" AWS_SECRET_ACCESS_KEY="$S3_SECRET" \
    nice -n 10 "$PY_DIR/bin/weed" mini -dir="$WORK/s3/data" -ip="$GW" -ip.bind="$GW" -s3.port="$S3_PORT" \
    -s3.cert.file="$WORK/s3/s3.crt" -s3.key.file="$WORK/s3/s3.key" -bucket=etcd-backups \
    -filer.localSocket="$WORK/s3/filer.sock" -s3.localSocket="$WORK/s3/s3.sock" \
    >>"$LOGS/weed.log" 2>&1 &
PIDS+=("$!")
deadline=$(($(date +%s) + 90))
until ip netns exec "$NS" curl -s -o /dev/null --max-time 3 --cacert "$WORK/ca/ca.crt" "https://$GW:$S3_PORT/"; do
    (($(date +%s) < deadline)) || die "the S3 server does not answer within 90 s (log: $LOGS/weed.log)"
    sleep 1
done
log "S3 server up on https://$GW:$S3_PORT"

# ---------------------------------------------------------------------------
# Seeds and VMs
# ---------------------------------------------------------------------------
mac() { printf '52:54:00:99:01:%02x\n' "$((10 + $1))"; }

USERDATA_TEMPLATE=$REPO/cloudinit/srv-local-ca.yaml
# Where etcd runs on each VM: etcd1 natively (systemd), etcd2 in a podman container under
# etcd.service, etcd3 as a static pod (the image's ebvm-kubelet stands in for kubelet with
# `podman kube play` of the manifest; there is no kubelet in the image). Both run the image's
# own etcd 3.4.23 as the local image localhost/etcd:3.4.23 (no registry pull). The Ignition
# VM runs natively.
declare -A SERVICE_MANAGER=([1]="" [2]=container [3]=static-pod)
declare -A ETCD_IMAGE=([1]="" [2]=localhost/etcd:3.4.23 [3]=localhost/etcd:3.4.23)
declare -A VIA=([1]=native [2]=container [3]=pod [4]=native)
render_userdata() { # I -> stdout
    local ca_cert ca_key
    ca_cert=$(sed 's/^/      /' "$WORK/ca/ca.crt")
    ca_key=$(sed 's/^/      /' "$WORK/ca/ca.key")
    if [[ -f $USERDATA_TEMPLATE ]]; then
        python3 "$HERE/render.py" "$USERDATA_TEMPLATE" \
            cluster_name="$CLUSTER" cluster_size=3 srv_domain="$DOMAIN" nameservers="'$GW'" \
            ca_cert_b64="$(base64 -w0 "$WORK/ca/ca.crt")" ca_key_b64="$(base64 -w0 "$WORK/ca/ca.key")" \
            binary_url="" binary_sha256="" etcd_download_url="" etcd_sha256="" \
            service_manager="${SERVICE_MANAGER[$1]}" etcd_image="${ETCD_IMAGE[$1]}"
    else
        cat <<EOF
#cloud-config
write_files:
  - path: /etc/etcd-bootstrap/ca.crt
    permissions: "0644"
    content: |
$ca_cert
  - path: /etc/etcd-bootstrap/ca.key
    permissions: "0600"
    content: |
$ca_key
  - path: /etc/etcd-bootstrap/config.toml
    content: |
      [cluster]
      name = "$CLUSTER"
      size = 3
      [discovery]
      srv_domain = "$DOMAIN"
      nameservers = ["$GW"]
      [tls]
      mode = "local-ca"
      ca_cert = "/etc/etcd-bootstrap/ca.crt"
      ca_key = "/etc/etcd-bootstrap/ca.key"
  - path: /etc/systemd/system/etcd-bootstrap.service
    content: |
      [Unit]
      Description=etcd-bootstrap
      Wants=network-online.target
      After=network-online.target
      [Service]
      Type=notify
      ExecStart=/usr/local/bin/etcd-bootstrap run
      ExecReload=/bin/kill -HUP $MAINPID
      Restart=on-failure
      RestartSec=5s
      [Install]
      WantedBy=multi-user.target
runcmd:
  - [systemctl, daemon-reload]
  - [systemctl, enable, --now, --no-block, etcd-bootstrap.service]
EOF
    fi
}

make_seed() { # I
    local i=$1 d=$WORK/seed$1
    mkdir -p "$d"
    render_userdata "$i" >"$d/user-data" || die "rendering the user-data failed"
    printf 'instance-id: ebvm-etcd%d\nlocal-hostname: etcd%d\n' "$i" "$i" >"$d/meta-data"
    cat >"$d/network-config" <<EOF
version: 2
ethernets:
  eth0:
    match:
      macaddress: "$(mac "$i")"
    set-name: eth0
    addresses: [$SUBNET.$((10 + i))/24]
    nameservers:
      addresses: [$GW]
      search: [$DOMAIN]
EOF
    cp "$d/user-data" "$LOGS/user-data.etcd$i"
    genisoimage -quiet -output "$WORK/seed$i.iso" -volid cidata -joliet -rock \
        "$d/user-data" "$d/meta-data" "$d/network-config" || die "genisoimage failed"
}

ACCEL=tcg
if [[ -w /dev/kvm && ${EBVM_ACCEL:-auto} != tcg ]]; then
    # KVM opens on some machines but guests make no progress: use it
    # only when a guest kernel really runs to its root mount (a panic without a root, here).
    timeout 20 qemu-system-x86_64 -accel kvm -m 256 -nographic -no-reboot \
        -kernel "$IMAGE/vmlinuz" -append "console=ttyS0 panic=-1" </dev/null >"$LOGS/kvm-probe.log" 2>&1 || true
    if grep -qE 'VFS: |Kernel panic' "$LOGS/kvm-probe.log"; then
        ACCEL=kvm
    fi
fi
[[ ${EBVM_ACCEL:-auto} == tcg ]] && ACCEL=tcg
log "accelerator: $ACCEL"

declare -A VMPID=()
boot_vm() { # I DISK [SEED_ISO]
    local i=$1 disk=$2 seed=${3:-} extra=()
    [[ -n $seed ]] && extra=(-drive "file=$seed,media=cdrom,readonly=on")
    ip netns exec "$NS" qemu-system-x86_64 -accel "$ACCEL" -m "$MEM_MB" -smp 1 \
        -name "ebvm-etcd$i" -display none -monitor none -serial "file:$LOGS/etcd$i.console.$(date +%s)" \
        -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0 net.ifnames=0" \
        -drive "file=$disk,if=virtio,format=qcow2,cache=unsafe" "${extra[@]}" \
        -netdev "tap,id=n0,ifname=tap$i,script=no,downscript=no" \
        -device "virtio-net-pci,netdev=n0,mac=$(mac "$i")" \
        </dev/null >>"$LOGS/etcd$i.qemu.log" 2>&1 &
    VMPID[$i]=$!
    PIDS+=("$!")
}
stop_vm() { # I
    local p=${VMPID[$1]}
    kill "$p" 2>/dev/null || true
    local deadline=$(($(date +%s) + 10))
    while kill -0 "$p" 2>/dev/null; do
        (($(date +%s) < deadline)) || kill -9 "$p" 2>/dev/null || true
        sleep 0.2
    done
    wait "$p" 2>/dev/null || true
}
new_disk() { # I
    rm -f "$WORK/etcd$1.qcow2"
    qemu-img create -q -f qcow2 -F raw -b "$WORK/base.img" "$WORK/etcd$1.qcow2"
}

# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------
ctl() { # I ARGS... : etcdctl through etcdI's client URL, mTLS with the test's client cert
    local i=$1
    shift
    ip netns exec "$NS" timeout 15 "$ETCDCTL" --endpoints "https://$SUBNET.$((10 + i)):2379" \
        --cacert "$WORK/ca/ca.crt" --cert "$WORK/client.crt" --key "$WORK/client.key" \
        --dial-timeout 3s --command-timeout 8s "$@"
}
# The console log of VM I's latest boot (names end with the start time in seconds).
latest_console() { # I
    local fs=()
    shopt -s nullglob
    fs=("$LOGS/etcd$1.console."*)
    shopt -u nullglob
    ((${#fs[@]})) && printf '%s\n' "${fs[-1]}"
    return 0
}
console_state() { # I -> last "etcd=... agent=..." the VM printed on its console
    local f
    f=$(latest_console "$1")
    [[ -n $f ]] || return 0
    tr -d '\r' <"$f" | grep -a 'EBVM-STATUS' | tail -n1 | sed 's/.*EBVM-STATUS [^ ]* //'
}
# The end of what the agent (its log is on the console too) and the kubelet stand-in said on
# VM I's console: printed when a phase fails, since CI keeps only this script's output.
console_tail() { # I [N]
    local f
    f=$(latest_console "$1")
    [[ -n $f ]] || return 0
    printf 'vm: the last agent and kubelet lines on etcd%s'"'"'s console (%s):\n' "$1" "$f"
    # The agent's lines come as "[  510.85] etcd-bootstrap[810]: <time> INFO ...".
    tr -d '\r' <"$f" | grep -aE 'etcd-bootstrap\[[0-9]+\]: |EBVM-KUBELET' | sed 's/^\[ *[0-9.]*\] //' |
        tail -n "${2:-40}" | cut -c1-400 | sed 's/^/    /' || true
}
# Members as "name started|unstarted voter|learner id" lines, via etcdI.
members() { # I
    ctl "$1" member list -w json 2>/dev/null | python3 -c '
import json, sys
for m in json.load(sys.stdin).get("members", []):
    print(m.get("name") or "-", "started" if m.get("clientURLs") else "unstarted",
          "learner" if m.get("isLearner") else "voter", format(m["ID"], "x"))'
}
# True when VMs $@ all report etcd=active on their consoles, the member list (via the
# first) has exactly those names as started voters, and every endpoint is healthy.
healthy() { # I...
    local i want have
    for i in "$@"; do [[ $(console_state "$i") == etcd=active* ]] || return 1; done
    want=$(printf 'etcd%s started voter\n' "$@" | sort)
    have=$(members "$1" | awk '{ print $1, $2, $3 }' | sort) || return 1
    [[ $want == "$have" ]] || return 1
    ctl "$1" endpoint health --cluster >/dev/null 2>&1
}
# True when each VM's console says etcd runs where its configuration puts it (VIA), and as an
# unprivileged user (etcd.user; Debian's etcd-server package made "etcd"), not root.
runs_as() { # I...
    local i
    for i in "$@"; do [[ $(console_state "$i") == *" via=${VIA[$i]} uid="[1-9]* ]] || return 1; done
}
# Healthy means healthy for SETTLE_S s in a row: a member that has just joined is restarted
# once more when the agent takes the bootstrap flags out of its configuration (in a static pod
# that is a new manifest, which kubelet runs as a new pod), so one healthy look can come just
# before that restart.
wait_healthy() { # BOUND_S WHAT I...
    local bound=$1 what=$2 deadline last=0 now since=0
    shift 2
    deadline=$(($(date +%s) + bound))
    while :; do
        now=$(date +%s)
        if healthy "$@"; then
            ((since)) || since=$now
            ((now - since >= SETTLE_S)) && return 0
        else
            since=0
        fi
        if ((now >= deadline)); then
            log "$what: not healthy for $SETTLE_S s in a row within $bound s; consoles: $(for i in "$@"; do printf 'etcd%s[%s] ' "$i" "$(console_state "$i")"; done)"
            log "member list via etcd$1: $(members "$1" | tr '\n' ';')"
            return 1
        fi
        if ((now - last >= 30)); then
            log "$what: waiting; consoles: $(for i in "$@"; do printf 'etcd%s[%s] ' "$i" "$(console_state "$i")"; done)"
            last=$now
        fi
        sleep 3
    done
}

# ---------------------------------------------------------------------------
# 3. three VMs from cloud-init
# ---------------------------------------------------------------------------
if [[ -f $USERDATA_TEMPLATE ]]; then
    log "user-data: $USERDATA_TEMPLATE (rendered)"
else
    log "WARNING: $USERDATA_TEMPLATE missing; using the test's minimal user-data"
fi
for i in 1 2 3; do
    make_seed "$i"
    new_disk "$i"
done
t=$(date +%s)
for i in 1 2 3; do boot_vm "$i" "$WORK/etcd$i.qcow2" "$WORK/seed$i.iso"; done
log "3 VMs started; waiting up to $BOOT_WAIT_S s for a healthy cluster"
CLUSTER_OK=0
if wait_healthy "$BOOT_WAIT_S" "cluster" 1 2 3; then
    TIMING[cluster]="$(($(date +%s) - t)) s"
    pass "3 VMs from cloud-init: etcd active on each, 3 started voters, healthy over mTLS (${TIMING[cluster]})"
    CLUSTER_OK=1
    if runs_as 1 2 3; then
        pass "where etcd runs: etcd1 natively, etcd2 in a podman container (service_manager = container), etcd3 in a pod from the static-pod manifest (podman kube play standing in for kubelet); each a healthy voter, each etcd as an unprivileged user ($(for i in 1 2 3; do console_state "$i" | grep -o 'uid=[0-9-]*' | tr '\n' ' '; done))"
    else
        fail "where etcd runs: consoles say $(for i in 1 2 3; do printf 'etcd%s[%s] ' "$i" "$(console_state "$i")"; done), want etcd1 via=native, etcd2 via=container, etcd3 via=pod, each with a uid other than 0"
    fi
else
    TIMING[cluster]="failed after $(($(date +%s) - t)) s"
    fail "3 VMs from cloud-init did not form a healthy cluster within $BOOT_WAIT_S s"
    console_tail 1
    console_tail 2
    console_tail 3
fi

# ---------------------------------------------------------------------------
# 4. writes, then the replaced disk
# ---------------------------------------------------------------------------
KEYS_OK=0
if ((CLUSTER_OK)); then
    ok=1
    for k in 1 2 3; do ctl 1 put "/vmtest/key$k" "value$k" >/dev/null || ok=0; done
    [[ $(ctl 3 get --print-value-only /vmtest/key2 2>/dev/null) == value2 ]] || ok=0
    # mTLS: no client certificate, or one from another CA, is refused.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=stranger" -addext extendedKeyUsage=clientAuth \
        -keyout "$WORK/stranger.key" -out "$WORK/stranger.crt" 2>/dev/null
    if ip netns exec "$NS" timeout 15 "$ETCDCTL" --endpoints "https://$SUBNET.11:2379" \
        --cacert "$WORK/ca/ca.crt" --dial-timeout 3s --command-timeout 5s get /vmtest/key1 >/dev/null 2>&1; then
        ok=0
        log "a client without a certificate was served"
    fi
    if ip netns exec "$NS" timeout 15 "$ETCDCTL" --endpoints "https://$SUBNET.11:2379" \
        --cacert "$WORK/ca/ca.crt" --cert "$WORK/stranger.crt" --key "$WORK/stranger.key" \
        --dial-timeout 3s --command-timeout 5s get /vmtest/key1 >/dev/null 2>&1; then
        ok=0
        log "a client with a certificate from another CA was served"
    fi
    if ((ok)); then
        pass "keys written through etcd1 read back through etcd3; clients without a certificate or with another CA's are refused"
        KEYS_OK=1
    else
        fail "keys written through etcd1 not readable through etcd3, or mTLS not enforced (see above)"
    fi
else
    fail "keys (skipped: no cluster)"
fi

HEAL_OK=0
if ((KEYS_OK)); then
    old_id=$(members 1 | awk '$1 == "etcd2" { print $4 }')
    log "stopping etcd2 (member $old_id), replacing its disk with a fresh one"
    stop_vm 2
    new_disk 2
    t=$(date +%s)
    boot_vm 2 "$WORK/etcd2.qcow2" "$WORK/seed2.iso"
    if wait_healthy "$HEAL_WAIT_S" "replaced disk" 1 2 3; then
        new_id=$(members 1 | awk '$1 == "etcd2" { print $4 }')
        got=$(ctl 2 get --print-value-only /vmtest/key1 2>/dev/null; ctl 2 get --print-value-only /vmtest/key3 2>/dev/null)
        if [[ $new_id != "$old_id" && $got == $'value1\nvalue3' ]] && runs_as 2; then
            TIMING[heal]="$(($(date +%s) - t)) s"
            pass "replaced disk: etcd2 (in a container) a started voter again (member $old_id -> $new_id), healthy, old keys read through etcd2 (${TIMING[heal]})"
            HEAL_OK=1
        else
            fail "replaced disk: member id $old_id -> ${new_id:-none}, keys via etcd2: '${got//$'\n'/,}', console: $(console_state 2)"
            console_tail 2
        fi
    else
        TIMING[heal]="failed after $(($(date +%s) - t)) s"
        fail "replaced disk: etcd2 not a healthy voter again within $HEAL_WAIT_S s"
        console_tail 2
    fi
else
    fail "replaced disk (skipped: no cluster with keys)"
fi

# ---------------------------------------------------------------------------
# 4b. the static pod's member removed: the agent stops etcd by taking the manifest away,
#     moves the data aside only once etcd is gone, and joins again through a new manifest
# ---------------------------------------------------------------------------
POD_HEAL_OK=0
if ((HEAL_OK)); then
    old_id=$(members 1 | awk '$1 == "etcd3" { print $4 }')
    downs=$(grep -ac 'EBVM-KUBELET etcd3 pod down' "$(latest_console 3)" || true)
    log "removing etcd3 (member $old_id, a static pod) from the cluster through etcd1"
    t=$(date +%s)
    # etcd refuses a removal while the members left would not all have been connected for a
    # few seconds (etcd2 has just been promoted): retry, bounded.
    removed=0
    for _ in $(seq 1 20); do
        if [[ -n $old_id ]] && out=$(ctl 1 member remove "$old_id" 2>&1); then
            removed=1
            break
        fi
        sleep 3
    done
    ((removed)) || log "etcdctl member remove $old_id: ${out:-no member etcd3}"
    if ((removed)) && wait_healthy "$HEAL_WAIT_S" "removed static-pod member" 1 2 3; then
        new_id=$(members 1 | awk '$1 == "etcd3" { print $4 }')
        got=$(ctl 3 get --print-value-only /vmtest/key1 2>/dev/null)
        downs_now=$(grep -ac 'EBVM-KUBELET etcd3 pod down' "$(latest_console 3)" || true)
        if [[ $new_id != "$old_id" && $got == value1 ]] && runs_as 3 && ((downs_now > downs)); then
            TIMING[pod-heal]="$(($(date +%s) - t)) s"
            pass "removed member in a pod: etcd3 healed (pod taken down, data moved aside, joined again: member $old_id -> $new_id), healthy, old keys read through etcd3 (${TIMING[pod-heal]})"
            POD_HEAL_OK=1
        else
            fail "removed member in a pod: member id $old_id -> ${new_id:-none}, key via etcd3: '$got', console: $(console_state 3)"
            console_tail 3
        fi
    else
        TIMING[pod-heal]="failed after $(($(date +%s) - t)) s"
        fail "removed member in a pod: etcd3 not a healthy voter again within $HEAL_WAIT_S s"
        console_tail 3
    fi
else
    fail "removed member in a pod (skipped: earlier phase failed)"
fi

# ---------------------------------------------------------------------------
# 4c. a fleet restore, each etcd as its own user
# ---------------------------------------------------------------------------
# The test asks etcd1's trigger (ebvm-restore) for a snapshot, a key after it and
# `etcd-bootstrap restore` of that snapshot. Pass: the three members (native, container, pod)
# are healthy started voters again with the keys written before the snapshot and without the
# one written after it, each etcd as a user other than root (its restored data handed over).
if ((POD_HEAL_OK)); then
    t=$(date +%s)
    log "fleet restore: asking etcd1 for a snapshot and a restore of it"
    if ctl 1 put /vmtest/restore-now go >/dev/null; then
        deadline=$(($(date +%s) + RESTORE_WAIT_S))
        rline=""
        while [[ -z $rline ]] && (($(date +%s) < deadline)); do
            sleep 5
            rline=$(tr -d '\r' <"$(latest_console 1)" | grep -a 'EBVM-RESTORE etcd1 rc=' | tail -n1 || true)
        done
        if [[ $rline == *"rc=0 "* ]] && wait_healthy "$HEAL_WAIT_S" "restored cluster" 1 2 3; then
            got=$(for k in key1 key2 key3; do ctl 3 get --print-value-only "/vmtest/$k" 2>/dev/null; done)
            after=$(ctl 2 get /vmtest/after-snapshot -w json 2>/dev/null |
                python3 -c 'import json, sys; print(json.load(sys.stdin).get("count", 0))' 2>/dev/null || echo "?")
            if [[ $got == $'value1\nvalue2\nvalue3' && $after == 0 ]] && runs_as 1 2 3; then
                TIMING[restore]="$(($(date +%s) - t)) s"
                pass "fleet restore: \`etcd-bootstrap restore\` of an encrypted S3 snapshot; etcd1..3 (native, container, pod) healthy started voters again with the keys from before it and not the one after, each etcd as an unprivileged user (${TIMING[restore]})"
            else
                fail "fleet restore: keys via etcd3: '${got//$'\n'/,}', /vmtest/after-snapshot count '$after', consoles: $(for i in 1 2 3; do printf 'etcd%s[%s] ' "$i" "$(console_state "$i")"; done)"
            fi
        else
            TIMING[restore]="failed after $(($(date +%s) - t)) s"
            fail "fleet restore: ${rline:-no outcome on the console of etcd1 within $RESTORE_WAIT_S s}"
            tr -d '\r' <"$(latest_console 1)" | grep -a 'EBVM-RESTORE-LOG' | tail -n 20 >&2 || true
            console_tail 1
            console_tail 2
            console_tail 3
        fi
    else
        fail "fleet restore: writing /vmtest/restore-now through etcd1 failed"
    fi
else
    fail "fleet restore (skipped: earlier phase failed)"
fi

# ---------------------------------------------------------------------------
# 5. the Ignition VM
# ---------------------------------------------------------------------------
if ((POD_HEAL_OK)); then
    t=$(date +%s)
    if "$HERE/ignition-root.sh" "$WORK" "$IMAGE/root" "$BIN" 4 "$SUBNET" "$GW" "$DOMAIN" "$CLUSTER" "$(mac 4)" \
        >"$LOGS/ignition.log" 2>&1; then
        mkfs.ext4 -q -F -L root -d "$WORK/root-ign" "$WORK/ign.img" 3G >/dev/null || die "mkfs.ext4 -d (Ignition root) failed"
        rm -rf "$WORK/root-ign"
        qemu-img create -q -f qcow2 -F raw -b "$WORK/ign.img" "$WORK/etcd4.qcow2"
        TIMING[ignition-apply]="$(($(date +%s) - t)) s"
        start_dns 1 2 3 4
        t=$(date +%s)
        boot_vm 4 "$WORK/etcd4.qcow2"
        if wait_healthy "$JOIN_WAIT_S" "Ignition VM" 1 2 3 4 &&
            [[ $(ctl 4 get --print-value-only /vmtest/key2 2>/dev/null) == value2 ]]; then
            TIMING[join]="$(($(date +%s) - t)) s"
            # The unit was enabled by nothing but Ignition's preset, applied by systemd at the
            # first boot (the image's machine-id is "uninitialized").
            c4=$(latest_console 4)
            if [[ $(console_state 4) == *agent-enabled=enabled* ]] && runs_as 4 &&
                grep -aq 'Populated /etc with preset unit settings' "$c4"; then
                pass "Ignition VM: etcd-bootstrap.service enabled by Ignition's preset at first boot; etcd4 joined as a started voter, 4 healthy, old keys read through etcd4 (${TIMING[join]})"
            else
                fail "Ignition VM: etcd4 joined, but the console does not show the preset applied at first boot, the unit enabled and etcd as a user other than root ($(console_state 4))"
            fi
        else
            TIMING[join]="failed after $(($(date +%s) - t)) s"
            fail "Ignition VM: etcd4 not a healthy voter with the keys within $JOIN_WAIT_S s"
            console_tail 4
        fi
    else
        tail -n 20 "$LOGS/ignition.log" >&2
        fail "Ignition VM: applying the Ignition config failed (log: $LOGS/ignition.log)"
    fi
else
    fail "Ignition VM (skipped: earlier phase failed)"
fi

# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------
for i in "${!VMPID[@]}"; do stop_vm "$i"; done
echo
printf '%s\n' "${RESULTS[@]}"
echo
printf '%-40s %s\n' "phase" "time" "image build" "${TIMING[image]:--}" \
    "disk (copy root + binary, mkfs)" "${TIMING[disk]:--}" \
    "boot 3 VMs to healthy cluster" "${TIMING[cluster]:--}" \
    "replaced-disk heal (boot to voter)" "${TIMING[heal]:--}" \
    "removed member in a pod (to voter)" "${TIMING[pod-heal]:--}" \
    "fleet restore (request to healthy)" "${TIMING[restore]:--}" \
    "Ignition apply (fetch+files, mkfs)" "${TIMING[ignition-apply]:--}" \
    "Ignition VM boot to voter" "${TIMING[join]:--}" \
    "total" "$(($(date +%s) - T0)) s (accelerator $ACCEL)"
echo "vm: $PASSED passed, $FAILED failed"
((FAILED == 0))

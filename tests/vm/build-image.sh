#!/usr/bin/env bash
# build-image.sh - the Debian bookworm root the VM test boots (the image's "recipe").
#
# Usage: tests/vm/build-image.sh OUTDIR
#   Builds OUTDIR/root (a directory: the root file system, without etcd-bootstrap),
#   OUTDIR/vmlinuz and OUTDIR/initrd.img (copied from root/boot), then touches
#   OUTDIR/DONE. run.sh caches OUTDIR under /var/cache/etcd-bootstrap-lab/ keyed by
#   the SHA-256 of this file, so any change here rebuilds the image.
#
# Contents: debootstrap --variant=minbase, then systemd, systemd-sysv, systemd-resolved,
# udev, cloud-init (NoCloud only), etcd-server + etcd-client (bookworm's 3.4.23; the
# package's own etcd.service is disabled and a preset keeps it so), linux-image-amd64,
# ca-certificates, openssl. /etc/machine-id says "uninitialized": every VM is a "first boot"
# (own machine-id; systemd applies the preset policy, which Ignition relies on).
# podman (crun, conmon, catatonit), curl and dbus for the container and static-pod modes.
# Test aids: ebvm-report.service prints "EBVM-STATUS <host> etcd=<state> agent=<state>
# agent-enabled=<state> via=native|container|pod|none uid=<uid etcd runs as>|-" on the serial
# console whenever `systemctl is-active` of etcd.service or etcd-bootstrap.service (or
# is-enabled of the latter, where etcd runs or as whom) changes, so the test can see them from
# outside;
# ebvm-etcd-image.service imports the local image localhost/etcd:3.4.23 (the image's own etcd
# binary, sh and curl); ebvm-kubelet.service stands in for kubelet with `podman kube play`.
#
# The mirror is the machine's own (the bookworm `URIs:` of its apt sources); no host
# name is written here.
set -euo pipefail

OUT=${1:?usage: build-image.sh OUTDIR}
ROOT=$OUT/root
SUITE=bookworm
log() { printf 'build-image: %s\n' "$*" >&2; }
die() {
    printf 'build-image: ERROR: %s\n' "$*" >&2
    exit 1
}

mirror() {
    local f=/etc/apt/sources.list.d/debian.sources u=""
    if [[ -r $f ]]; then
        u=$(awk 'BEGIN { RS = ""; FS = "\n" }
            { uris = ""; suites = ""
              for (i = 1; i <= NF; i++) {
                if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
                if ($i ~ /^Suites:/) { suites = " " $i " " }
              }
              if (suites ~ / bookworm /) { split(uris, u, /[ \t]+/); print u[1]; exit } }' "$f")
    fi
    if [[ -z $u && -r /etc/apt/sources.list ]]; then
        u=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
    fi
    [[ -n $u ]] || die "no bookworm mirror in the machine's apt configuration"
    printf '%s\n' "$u"
}

MOUNTS=()
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT

in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }

MIRROR=$(mirror)
# A build killed before its trap ran may have left proc/sys/dev bound into the root.
for m in proc sys dev; do umount -l "$ROOT/$m" 2>/dev/null || true; done
rm -rf --one-file-system "$ROOT"
mkdir -p "$OUT"
log "debootstrap $SUITE from $MIRROR"
# python3-cffi-backend first: cloud-init's dependency chain has a virtual package
# debootstrap cannot resolve when it comes later.
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,udev,python3-cffi-backend,ca-certificates,openssl \
    "$SUITE" "$ROOT" "$MIRROR" >"$OUT/debootstrap.log" 2>&1 ||
    {
        tail -n 30 "$OUT/debootstrap.log" >&2
        die "debootstrap failed (log: $OUT/debootstrap.log)"
    }

for m in proc sys dev; do
    mount --bind "/$m" "$ROOT/$m"
    MOUNTS+=("$ROOT/$m")
done
# resolv.conf in the chroot: a plain file while installing (later a symlink to
# systemd-resolved's stub, dangling in a chroot).
rm -f "$ROOT/etc/resolv.conf"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
log "apt-get install (cloud-init, etcd, kernel)"
{
    in_root apt-get update -q
    in_root apt-get install -y -q --no-install-recommends \
        cloud-init etcd-server etcd-client linux-image-amd64 initramfs-tools \
        systemd-resolved iproute2 procps \
        podman crun conmon catatonit containernetworking-plugins dbus curl
} >"$OUT/apt.log" 2>&1 || {
    tail -n 30 "$OUT/apt.log" >&2
    die "apt-get install in the image failed (log: $OUT/apt.log)"
}

log "configuring"
# The package's etcd (127.0.0.1, its own data dir) must never run: etcd-bootstrap writes
# its own /etc/systemd/system/etcd.service. Disabled now and by preset (first boot
# applies presets, enable-only, and would otherwise enable it again).
in_root systemctl disable etcd.service >/dev/null 2>&1 || true
mkdir -p "$ROOT/etc/systemd/system-preset"
# podman's own units (API socket, restart, auto-update, cleanup) would be enabled by the same
# first-boot presets: the test needs none of them, and they slow an emulated boot.
printf '%s\n' 'disable etcd.service' 'disable podman*' >"$ROOT/etc/systemd/system-preset/10-ebvm.preset"
# Less work on a slow emulated CPU.
in_root systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    fstrim.timer systemd-timesyncd.service >/dev/null 2>&1 || true
in_root systemctl enable systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
mkdir -p "$ROOT/etc/cloud/cloud.cfg.d"
cat >"$ROOT/etc/cloud/cloud.cfg.d/90-ebvm.cfg" <<'EOF'
datasource_list: [NoCloud, None]
EOF
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' >"$ROOT/etc/fstab"
echo 'root:ebvm' | in_root chpasswd

cat >"$ROOT/usr/local/sbin/ebvm-report" <<'EOF'
#!/bin/sh
# Test aid (tests/vm): print the state of etcd and the agent on the serial console
# whenever it changes, and every 60 s.
last="" n=0
while :; do
    # Where etcd runs: in a pod (the manifest is there and etcd is in a libpod cgroup), in a
    # container (libpod cgroup, no manifest), natively, or not at all.
    pid=$(pgrep -xo etcd || true)
    # The shell's own read: no process started for it (the VMs' CPUs are emulated).
    uid=""
    if [ -n "$pid" ]; then
        while read -r k v _; do
            if [ "$k" = Uid: ]; then uid=$v; break; fi
        done 2>/dev/null <"/proc/$pid/status" || true
    fi
    if [ -z "$pid" ]; then via=none
    elif grep -q libpod "/proc/$pid/cgroup" 2>/dev/null; then
        if [ -f /etc/kubernetes/manifests/etcd.yaml ]; then via=pod; else via=container; fi
    else via=native
    fi
    if [ -f /etc/kubernetes/manifests/etcd.yaml ]; then
        # No etcd.service in this mode: active when the pod's etcd runs.
        if [ "$via" = pod ]; then e=active; else e=inactive; fi
    else
        e=$(systemctl is-active etcd.service)
    fi
    s="etcd=$e agent=$(systemctl is-active etcd-bootstrap.service) agent-enabled=$(systemctl is-enabled etcd-bootstrap.service 2>/dev/null) via=$via uid=${uid:--}"
    if [ "$s" != "$last" ] || [ "$n" -ge 30 ]; then
        echo "EBVM-STATUS $(hostname) $s" >/dev/ttyS0
        last=$s n=0
    fi
    n=$((n + 1))
    sleep 2
done
EOF
chmod 755 "$ROOT/usr/local/sbin/ebvm-report"
cat >"$ROOT/etc/systemd/system/ebvm-report.service" <<'EOF'
[Unit]
Description=tests/vm: report etcd state on the serial console

[Service]
ExecStart=/usr/local/sbin/ebvm-report

[Install]
WantedBy=multi-user.target
EOF
in_root systemctl enable ebvm-report.service >/dev/null 2>&1

# The local etcd image for service_manager = "container" and "static-pod" (no registry pull):
# the image's own etcd 3.4.23, plus sh and curl, which podman's health checks for the
# manifest's httpGet probes run inside the container, with the libraries they load. It is
# imported into podman's storage at each VM's boot (ebvm-etcd-image.service).
mkdir -p "$ROOT/usr/local/share/ebvm"
in_root sh -ec '
    d=$(mktemp -d)
    for f in /usr/bin/etcd /bin/sh /usr/bin/curl /etc/ld.so.cache; do
        cp --parents -L "$f" "$d"
        { ldd "$f" 2>/dev/null || true; } |
            awk "\$2 == \"=>\" && \$3 ~ /^\\// { print \$3 } \$1 ~ /^\\// { print \$1 }" |
            while read -r l; do cp --parents -L -n "$l" "$d"; done
    done
    tar -C "$d" -cf /usr/local/share/ebvm/etcd-image.tar .
    rm -rf "$d"
'
cat >"$ROOT/usr/local/sbin/ebvm-etcd-image" <<'IMG'
#!/bin/sh
# Test aid (tests/vm): import the local etcd image once, on the VMs whose config runs an
# image (the import takes a minute or more of an emulated CPU).
set -e
c=/etc/etcd-bootstrap/config.toml
n=0
# cloud-init or Ignition writes the config early in the boot; bounded wait.
while [ ! -f "$c" ] && [ "$n" -lt 300 ]; do sleep 2; n=$((n + 1)); done
grep -Eq '^service_manager = "(container|static-pod)"' "$c" 2>/dev/null || exit 0
podman image exists localhost/etcd:3.4.23 && exit 0
podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/usr/bin/etcd"]' \
    /usr/local/share/ebvm/etcd-image.tar localhost/etcd:3.4.23 >/dev/null
echo "EBVM-IMAGE $(hostname) localhost/etcd:3.4.23 imported" >/dev/ttyS0
IMG
chmod 755 "$ROOT/usr/local/sbin/ebvm-etcd-image"
cat >"$ROOT/etc/systemd/system/ebvm-etcd-image.service" <<'UNIT'
[Unit]
Description=tests/vm: the local etcd image localhost/etcd:3.4.23

# Not a oneshot: multi-user.target (and cloud-init's final stage after it) would wait for
# the import, which takes minutes on an emulated CPU. Whatever needs the image retries.
[Service]
Type=simple
ExecStart=/usr/local/sbin/ebvm-etcd-image

[Install]
WantedBy=multi-user.target
UNIT
in_root systemctl enable ebvm-etcd-image.service >/dev/null 2>&1

# Stands in for kubelet's static-pod source (there is no kubelet in the image): whenever
# /etc/kubernetes/manifests/etcd.yaml appears, changes or goes, `podman kube down` the pod
# played before, then `podman kube play` the new manifest.
cat >"$ROOT/usr/local/sbin/ebvm-kubelet" <<'KUBELET'
#!/bin/sh
# Test aid (tests/vm): a stand-in for kubelet's static pods, with podman kube play.
m=/etc/kubernetes/manifests/etcd.yaml
s=/run/ebvm-kubelet
mkdir -p "$s"
last=absent
while :; do
    if [ -f "$m" ]; then cur=$(sha256sum <"$m" | cut -d' ' -f1); else cur=absent; fi
    if [ "$cur" != "$last" ]; then
        if [ -f "$s/played.yaml" ]; then
            # As kubelet does, keep trying until the pod is gone.
            if ! podman kube down "$s/played.yaml" >"$s/down.log" 2>&1; then
                echo "EBVM-KUBELET $(hostname) pod down failed (trying again): $(tail -n 3 "$s/down.log" | tr '\n' ' ')" >/dev/ttyS0
                sleep 2
                continue
            fi
            echo "EBVM-KUBELET $(hostname) pod down" >/dev/ttyS0
            rm -f "$s/played.yaml"
        fi
        if [ "$cur" = absent ]; then
            last=absent
        elif cp "$m" "$s/played.yaml" && podman kube play --replace "$s/played.yaml" >"$s/play.log" 2>&1; then
            last=$cur
            echo "EBVM-KUBELET $(hostname) played $cur" >/dev/ttyS0
        else
            echo "EBVM-KUBELET $(hostname) play failed: $(tail -n 3 "$s/play.log" | tr '\n' ' ')" >/dev/ttyS0
            rm -f "$s/played.yaml"
        fi
    fi
    sleep 2
done
KUBELET
chmod 755 "$ROOT/usr/local/sbin/ebvm-kubelet"
cat >"$ROOT/etc/systemd/system/ebvm-kubelet.service" <<'UNIT'
[Unit]
Description=tests/vm: kubelet stand-in (podman kube play of /etc/kubernetes/manifests/etcd.yaml)
After=ebvm-etcd-image.service

[Service]
ExecStart=/usr/local/sbin/ebvm-kubelet

[Install]
WantedBy=multi-user.target
UNIT
in_root systemctl enable ebvm-kubelet.service >/dev/null 2>&1

# The agent's log on the serial console too (the test keeps the consoles and prints the end of
# a failing VM's), prefixed so that it can be told from the rest.
mkdir -p "$ROOT/etc/systemd/system/etcd-bootstrap.service.d"
cat >"$ROOT/etc/systemd/system/etcd-bootstrap.service.d/50-ebvm-console.conf" <<'UNIT'
[Service]
StandardOutput=journal+console
StandardError=journal+console
UNIT

rm -f "$ROOT/usr/sbin/policy-rc.d"
in_root apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/*
rm -f "$ROOT/etc/resolv.conf"
ln -s ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
# Every VM generates its own machine-id at first boot (and applies presets then).
echo uninitialized >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
rm -f "$ROOT/etc/hostname"

cleanup
MOUNTS=()
k=$(compgen -G "$ROOT/boot/vmlinuz-*" | head -n1) || true
i=$(compgen -G "$ROOT/boot/initrd.img-*" | head -n1) || true
[[ -n $k && -n $i ]] || die "no kernel/initrd in $ROOT/boot"
cp "$k" "$OUT/vmlinuz"
cp "$i" "$OUT/initrd.img"
touch "$OUT/DONE"
log "done: $(du -sh "$ROOT" | cut -f1) root, kernel $(basename "$k")"

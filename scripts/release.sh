#!/usr/bin/env bash
# release.sh - make a release in target/dist/: the static binary named by version and target,
# the templates that boot VMs with it (ready to render with Terraform's templatefile()), the
# agent's unit and the Prometheus rules, and SHA256SUMS over all of them.
#
# Usage: scripts/release.sh [--binary PATH] [--out DIR] [-h|--help]
#   --binary PATH  package PATH instead of building (e.g. the release binary the real-VM test
#                  built in target/vm); it is checked like a fresh build.
#   --out DIR      write the release there instead of target/dist (replaced whole).
#
# Without --binary: cargo build --release --locked (.cargo/config.toml makes it a static
# glibc static-pie for x86_64-unknown-linux-gnu). The binary must be static, stripped (a
# release build), without fail points, and answer `--version` with this crate's version.
#
# target/dist/ then holds:
#   etcd-bootstrap-<version>-<target>     the binary; put it where binary_url points
#   SHA256SUMS                            `sha256sum -c SHA256SUMS`; binary_sha256 is its first line
#   templates/cloudinit/*.yaml            cloud-config user-data (Terraform templates)
#   templates/ignition/*.bu, *.ign        Butane sources and Ignition JSON (Terraform templates)
#   etcd-bootstrap.service                the agent's unit (the templates embed the same bytes)
#   prometheus/etcd-bootstrap-alerts.yml  alerting rules, with their promtool test file
# The directory is written beside the old one and moved into place, so it is never half done.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
die() {
    printf 'release.sh: %s\n' "$*" >&2
    exit 1
}

BIN=""
OUT="$REPO/target/dist"
while (($#)); do
    case "$1" in
    --binary)
        BIN=${2:?--binary needs a path}
        shift
        ;;
    --out)
        OUT=${2:?--out needs a directory}
        shift
        ;;
    -h | --help)
        sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/Cargo.toml" | head -n1)
[[ -n $VERSION ]] || die "no version in Cargo.toml"
TARGET=$(sed -n 's/^target = "\(.*\)"$/\1/p' "$REPO/.cargo/config.toml" | head -n1)
[[ -n $TARGET ]] || die "no build.target in .cargo/config.toml"

if [[ -z $BIN ]]; then
    (cd "$REPO" && cargo build --release --locked -q) || die "cargo build --release failed"
    BIN="${CARGO_TARGET_DIR:-$REPO/target}/$TARGET/release/etcd-bootstrap"
fi
[[ -x $BIN ]] || die "$BIN is not an executable file"

# What goes out must be what the templates expect: static (no libc or NSS of the image), a
# release build, no fail points, this version.
kind=$(file -b "$BIN")
[[ $kind == *"static"* ]] || die "$BIN is not statically linked ($kind)"
[[ $kind == *", stripped"* ]] || die "$BIN is not stripped: not a release build ($kind)"
got=$("$BIN" --version) || die "$BIN --version failed"
[[ $got == "etcd-bootstrap $VERSION" ]] ||
    die "$BIN --version says '$got', expected 'etcd-bootstrap $VERSION' (a fail-point build, or another version)"

NAME="etcd-bootstrap-$VERSION-$TARGET"
mkdir -p "$(dirname "$OUT")"
TMP=$(mktemp -d "$OUT.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
install -m 0755 "$BIN" "$TMP/$NAME"
mkdir -p "$TMP/templates/cloudinit" "$TMP/templates/ignition" "$TMP/prometheus"
install -m 0644 "$REPO"/cloudinit/*.yaml "$REPO/cloudinit/README.md" "$TMP/templates/cloudinit/"
install -m 0644 "$REPO"/ignition/*.bu "$REPO"/ignition/*.ign "$REPO/ignition/README.md" "$TMP/templates/ignition/"
install -m 0644 "$REPO/dist/etcd-bootstrap.service" "$TMP/"
install -m 0644 "$REPO"/dist/prometheus/*.yml "$TMP/prometheus/"
(
    cd "$TMP"
    # The binary first: its line is what binary_sha256 takes.
    sha256sum "$NAME" >SHA256SUMS
    find . -type f ! -name SHA256SUMS ! -name "$NAME" | sed 's|^\./||' | LC_ALL=C sort |
        xargs sha256sum >>SHA256SUMS
    sha256sum --quiet -c SHA256SUMS
)
rm -rf "$OUT"
mv "$TMP" "$OUT"
trap - EXIT
printf 'release.sh: %s\n' "$OUT"
printf '  %s (%s bytes)\n' "$NAME" "$(stat -c %s "$OUT/$NAME")"
printf '  binary_sha256 = %s\n' "$(head -n1 "$OUT/SHA256SUMS" | cut -d' ' -f1)"
printf '  %s files in SHA256SUMS\n' "$(wc -l <"$OUT/SHA256SUMS")"

#!/usr/bin/env bash
# The whole test suite: unit tests, the command-line contract, and the real-etcd integration tests
# in the network-namespace lab (etcd 3.4.23 and 3.5.30, dnsmasq), then the real-VM test. Installs
# what it needs first. Needs root (network namespaces). Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/test.sh: must run as root (the lab uses network namespaces)" >&2
    exit 2
fi

scripts/install-deps.sh
export CARGO_TERM_COLOR=never

# The real-VM test's packages, release binary and image do not depend on the lab tests: they are
# made meanwhile, in a process group of their own at the lowest CPU and I/O priority, so that the
# lab tests keep the cores they need and the VM test starts at once (about 5 minutes of CI saved).
mkdir -p target
PREP_LOG=target/vm-prepare.log
setsid nice -n 19 ionice -c 3 tests/vm/run.sh --prepare >"$PREP_LOG" 2>&1 </dev/null &
PREP=$!
stop_prep() { kill -- "-$PREP" 2>/dev/null || true; }
trap stop_prep EXIT

# `--features failpoints`: the fault-injection lab tests (ETCD_BOOTSTRAP_FAILPOINT) need the fail
# points compiled in, and refuse a binary without them; the release build leaves them out.
cargo build --all-targets --features failpoints
# Lab tests serialize themselves; unit and CLI tests run in parallel.
cargo test --all-targets --features failpoints "$@"

# The real-VM end-to-end test (tests/vm/README.md): Debian VMs under qemu with cloud-init and
# Ignition; ~20 minutes from nothing, less with the cached image. A preparation that failed is
# shown and done again by the test itself.
if ! wait "$PREP"; then
    echo "scripts/test.sh: preparing the VM test in the background failed; its log:" >&2
    cat "$PREP_LOG" >&2
fi
trap - EXIT
tests/vm/run.sh

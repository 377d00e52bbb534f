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
# build and the lab tests keep the cores they need and the VM test starts at once.
mkdir -p target
PREP_LOG=target/vm-prepare.log
rm -f target/vm-prepare.rc
setsid nice -n 19 ionice -c 3 bash -c 'tests/vm/run.sh --prepare; echo $? >target/vm-prepare.rc' \
    >"$PREP_LOG" 2>&1 </dev/null &
PREP=$!
stop_prep() { kill -- "-$PREP" 2>/dev/null || true; }
trap stop_prep EXIT

# `--features failpoints`: the fault-injection lab tests (ETCD_BOOTSTRAP_FAILPOINT) need the fail
# points compiled in, and refuse a binary without them; the release build leaves them out.
cargo build --all-targets --features failpoints

if (($# > 0)); then
    # A chosen subset (cargo test's own arguments): run it as cargo does, then the VM test.
    cargo test --all-targets --features failpoints "$@"
    wait "$PREP" || true
    trap - EXIT
    exec tests/vm/run.sh
fi

# Everything: the test executables cargo built, in LANES lanes side by side, then the real-VM test
# (tests/vm/README.md: Debian VMs under qemu with cloud-init and Ignition) once its preparation has
# ended (scripts/run-tests.py says why this is safe and what it saves).
mapfile -t EXECUTABLES < <(cargo test --all-targets --features failpoints --no-run \
    --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')
((${#EXECUTABLES[@]} > 0)) || {
    echo "scripts/test.sh: cargo listed no test executables" >&2
    exit 1
}
LANES=${ETCD_BOOTSTRAP_TEST_LANES:-3}
set +e
scripts/run-tests.py "$LANES" "$PREP" -- "${EXECUTABLES[@]}"
rc=$?
set -e
trap - EXIT
stop_prep
exit "$rc"

#!/usr/bin/env bash
# The whole test suite: unit tests, the command-line contract, and the real-etcd integration tests
# in the network-namespace lab (etcd 3.4.23 and 3.5.30, dnsmasq). Installs what it needs first.
# Needs root (network namespaces). Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/test.sh: must run as root (the lab uses network namespaces)" >&2
    exit 2
fi

scripts/install-deps.sh
export CARGO_TERM_COLOR=never
# `--features failpoints`: the fault-injection lab tests (ETCD_BOOTSTRAP_FAILPOINT) need the fail
# points compiled in, and refuse a binary without them; the release build leaves them out.
cargo build --all-targets --features failpoints
# Lab tests serialize themselves; unit and CLI tests run in parallel.
cargo test --all-targets --features failpoints "$@"
# The real-VM end-to-end test (tests/vm/README.md): Debian VMs under qemu with cloud-init and
# Ignition; installs its own packages; ~20 minutes from nothing, less with the cached image.
tests/vm/run.sh

#!/usr/bin/env python3
"""Runs the built test binaries and the real-VM test side by side, then reports each.

Usage: scripts/run-tests.py LANES VM_PREPARE_PID|no-vm -- EXECUTABLE...   (called by scripts/test.sh;
       `no-vm` runs the executables alone, e.g. to try the lanes while a VM test runs elsewhere)

Why in parallel: a lab test spends most of its time waiting for etcd (elections, heal ticks,
snapshots), not computing: lab_deadpeer takes 216 s of wall clock for 41 s of CPU, the same
alone or beside a build. Each lab uses its own namespaces, subnet and state directory
(scripts/lab.sh), so they cannot collide; tests inside one binary still run one at a time
(tests/common::serial). The VM test is CPU-bound (emulated CPUs) and runs once the lanes are done.

Each executable's output goes to target/test-logs/NAME.log and is printed whole when it ends, so
the output of two tests never interleaves. The VM test then waits for its preparation
(tests/vm/run.sh --prepare, started by scripts/test.sh) and runs. Exit 1
when anything failed, after every job has ended and the summary is printed.
"""

import os
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGS = os.path.join(REPO, "target", "test-logs")

# Seconds each took (alone in the fresh-clone run of 370618e; lab_quorum (and lab_quorum_store, in
# lanes, 2026-12-07 evening), lab_reload and
# lab_deltas in the lanes of 383b7dd's, where lab_quorum, unknown here, started last and
# ended the lanes 5 minutes after the others): only the order comes from here
# (longest first, so that the last lane does not start a long test at the end); nothing is
# asserted on it. A binary missing here is taken to be short.
EXPECTED_S = {
    "lab_safety": 363,
    "lab_quorum": 415,
    "lab_quorum_store": 60,
    "lab_restore": 255,
    "lab_deadpeer": 300,
    "lab_join": 220,
    "lab_maintenance": 193,
    "lab_backup": 161,
    "lab_store_attacks": 190,
    "lab_tls": 120,
    "lab_campaign": 100,
    "lab_reload": 250,
    "lab_doctor": 80,
    "lab_deltas": 215,
    "lab_endpoint": 70,
    "lab_metrics": 60,
    "lab_cluster": 60,
    "lab_cfssl": 40,
    "lab_peer_roles": 40,
}

print_lock = threading.Lock()


def name_of(executable):
    base = os.path.basename(executable)
    return base.rsplit("-", 1)[0] if "-" in base else base


def say(text):
    with print_lock:
        print(text, flush=True)


def run_job(name, argv, results, before=None):
    log_path = os.path.join(LOGS, name + ".log")
    start = time.monotonic()
    rc = None
    with open(log_path, "wb") as log:
        if before is not None:
            rc = before(log)
        if rc is None:
            say(f"test lanes: {name} started")
            rc = subprocess.call(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
    took = time.monotonic() - start
    with open(log_path, "rb") as log:
        text = log.read().decode("utf-8", "replace")
    with print_lock:
        print(f"\n===== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {took:.0f} s "
              f"(log {os.path.relpath(log_path, REPO)}) =====", flush=True)
        print(text, end="" if text.endswith("\n") else "\n", flush=True)
    results.append((name, rc, took))


def wait_for_prepare(pid):
    """The VM preparation is scripts/test.sh's child, not ours: poll until it is gone, then read
    the exit status its wrapper leaves in target/vm-prepare.rc. A preparation that failed is shown
    and then done again by the VM test itself."""

    def before(log):
        deadline = time.monotonic() + 3600  # bounded: the preparation builds and installs
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if time.monotonic() > deadline:
                log.write(b"test lanes: the VM preparation did not end within an hour\n")
                return 1
            time.sleep(2)
        try:
            with open(os.path.join(REPO, "target", "vm-prepare.rc")) as f:
                status = f.read().strip()
        except OSError:
            status = "unknown (no target/vm-prepare.rc)"
        if status != "0":
            log.write(f"test lanes: preparing the VM test in the background failed "
                      f"(exit {status}); its log:\n".encode())
            try:
                with open(os.path.join(REPO, "target", "vm-prepare.log"), "rb") as f:
                    log.write(f.read())
            except OSError as e:
                log.write(f"(cannot read it: {e})\n".encode())
        log.flush()
        return None

    return before


def main():
    args = sys.argv[1:]
    if len(args) < 3 or args[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    lanes, executables = int(args[0]), args[3:]
    os.makedirs(LOGS, exist_ok=True)
    results = []


    queue = sorted(executables, key=lambda e: -EXPECTED_S.get(name_of(e), 30))
    queue_lock = threading.Lock()

    def lane():
        while True:
            with queue_lock:
                if not queue:
                    return
                executable = queue.pop(0)
            run_job(name_of(executable), [executable], results)

    workers = [threading.Thread(target=lane) for _ in range(lanes)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    # The VM test after the lanes, not beside them: its VMs run under qemu's TCG here (no usable
    # KVM), three emulated CPUs busy on two real cores, and the lab tests' bounded waits then
    # time out (measured: 3 lab tests of 2 executables failed beside it, none without it).
    if args[1] != "no-vm":
        run_job("vm", [os.path.join(REPO, "tests/vm/run.sh")], results,
                wait_for_prepare(int(args[1])))

    print("\n===== test lanes: summary =====")
    for name, rc, took in sorted(results, key=lambda r: -r[2]):
        print(f"{name:24} {'ok' if rc == 0 else 'FAILED':7} {took:6.0f} s")
    failed = [name for name, rc, _ in results if rc != 0]
    if failed:
        print(f"test lanes: FAILED: {' '.join(failed)}")
        return 1
    print(f"test lanes: all {len(results)} passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

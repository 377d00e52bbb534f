#!/usr/bin/env bash
# campaign.sh - the lab campaigns, long mode (the CI mode is part of scripts/test.sh).
#
# Usage: scripts/campaign.sh [--trials 100] [--seed S] [--base B]   randomized boot campaign
#        scripts/campaign.sh --faults                                 fault campaign
#
# Randomized boot (tests/lab_campaign.rs randomized_boot_campaign): --trials trials (one in
# four with 5 members, the others 3; etcd 3.4.23 or 3.5.30 by seed), random start order and
# delays up to 3 s, one host's DNS records late, one host's link up late; each must end with
# exactly one cluster of N started voters. Each trial prints its seed; --seed S replays seed
# S (as the first trial); --base B makes the seeds B, B+1, ... (default from the clock).
# A failed trial's logs are kept under /tmp/etcd-bootstrap-campaign/seed-S.
#
# Faults: the DNS server down at boot and back, a peer cut off during bootstrap, the signer
# not answering then back, SRV records pointing nowhere (tests/lab_campaign.rs), and a kill -9
# at every fail point of new, join and heal followed by a re-run, on etcd 3.4.23 and 3.5.30
# (tests/lab_join.rs fail_points_*).
#
# Needs root and scripts/install-deps.sh. Uses the debug build (cargo test builds it).
set -euo pipefail
cd "$(dirname "$0")/.."

TRIALS=100 SEED="" BASE="" FAULTS=0
die() { printf 'campaign: ERROR: %s\n' "$*" >&2; exit 2; }
while (($#)); do
    case "$1" in
    --trials) TRIALS=${2:-}; shift ;;
    --seed) SEED=${2:-}; shift ;;
    --base) BASE=${2:-}; shift ;;
    --faults) FAULTS=1 ;;
    -h | --help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces)"
[[ $TRIALS =~ ^[1-9][0-9]*$ ]] || die "--trials N (>= 1)"
[[ -z $SEED || $SEED =~ ^[0-9]+$ ]] || die "--seed: a number"
[[ -z $BASE || $BASE =~ ^[0-9]+$ ]] || die "--base: a number"
export CARGO_TERM_COLOR=never

if ((FAULTS)); then
    cargo test --features failpoints --test lab_campaign -- --skip randomized_boot_campaign --nocapture
    exec cargo test --features failpoints --test lab_join fail_points -- --nocapture
fi
export CAMPAIGN_TRIALS=$TRIALS
[[ -n $SEED ]] && export CAMPAIGN_SEED=$SEED
[[ -n $BASE ]] && export CAMPAIGN_BASE=$BASE
exec cargo test --test lab_campaign randomized_boot_campaign -- --exact --nocapture

//! `clock`: every other member's clock close to this node's.

use super::{DoctorInput, Finding};

/// etcd's own limit: its peer prober logs "prober found high clock drift" when a peer's clock
/// differs by more than 1 s (rafthttp, `ClockDifference > time.Second`). Raft itself does not
/// read wall clocks, but lease TTLs are granted and checked by whichever member leads (a leader
/// change moves them to another clock), certificates are checked against each side's clock
/// (they are backdated 5 minutes only), and snapshot times and logs stop lining up.
pub(crate) const MAX_CLOCK_SKEW_MS: i64 = 1000;

/// Every other member's clock within `MAX_CLOCK_SKEW_MS` of this node's: only a skew beyond the
/// measurement's own uncertainty (half the round trip) counts.
pub(crate) fn clock(o: &DoctorInput) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut largest: Option<(i64, &str)> = None;
    let mut unmeasured = Vec::new();
    for c in &o.clocks {
        match &c.measured {
            Err(why) => unmeasured.push(format!("{} ({why})", c.who)),
            Ok((offset, uncertainty)) => {
                if offset.abs() - uncertainty > MAX_CLOCK_SKEW_MS {
                    out.push(Finding::fail(
                        "clock",
                        format!(
                            "{}'s clock is {:.1} s {} this node's (±{uncertainty} ms)",
                            c.who,
                            offset.abs() as f64 / 1000.0,
                            if *offset > 0 { "ahead of" } else { "behind" }
                        ),
                        "keep every member's clock in sync with NTP: `timedatectl set-ntp true` (systemd-timesyncd) or chrony, on every member",
                    ));
                } else if largest.is_none_or(|(l, _)| offset.abs() > l) {
                    largest = Some((offset.abs(), &c.who));
                }
            }
        }
    }
    if out.is_empty() {
        let mut what = match largest {
            Some((l, who)) => format!(
                "other members' clocks within {} s of this node's (largest offset: {who}, {l} ms)",
                MAX_CLOCK_SKEW_MS / 1000
            ),
            None => "no other member's clock measured".to_string(),
        };
        if !unmeasured.is_empty() {
            what.push_str(&format!("; not measured: {}", unmeasured.join(", ")));
        }
        out.push(Finding::ok("clock", what));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::doctor::fixtures::*;

    /// (what the row is, the change to the healthy observation, the failing finding's `what`
    /// fragment and exact `fix`, or None: the check passes).
    fn table() -> Vec<Row> {
        vec![
            ("clock: in step", |_| {}, None),
            (
                "clock: 1.2 s measured with a 300 ms uncertainty is not sure",
                |o| o.clocks[0].measured = Ok((1200, 300)),
                None,
            ),
            (
                "clock: 3 s ahead",
                |o| o.clocks[1].measured = Ok((3000, 5)),
                Some((
                    "etcd3's clock is 3.0 s ahead of this node's (±5 ms)",
                    "keep every member's clock in sync with NTP: `timedatectl set-ntp true` (systemd-timesyncd) or chrony, on every member".into(),
                )),
            ),
        ]
    }

    #[test]
    fn passes_and_fails_as_its_table_says() {
        run_table(clock, table());
    }
}

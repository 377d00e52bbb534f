//! Retention, pure: keep the newest `keep_last`, plus the newest of each of the last `keep_daily`
//! days that have snapshots; never the newest verified snapshot; nothing at all when the store
//! lists fewer snapshots than the agent expects (a partial or lagging listing must not turn into
//! deletions).

use std::collections::BTreeSet;

/// Ids are `<UTC time>-r<revision>`: text order is time order.
pub(crate) fn to_delete(
    ids: &[String],
    keep_last: usize,
    keep_daily: usize,
    expected_at_least: usize,
) -> Result<Vec<String>, String> {
    if ids.len() < expected_at_least {
        return Err(format!(
            "the store lists {} snapshots but at least {expected_at_least} were expected; deleting nothing",
            ids.len()
        ));
    }
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort();
    sorted.reverse(); // newest first
    let mut keep: BTreeSet<&String> = sorted.iter().take(keep_last.max(1)).copied().collect();
    let mut days = BTreeSet::new();
    for id in &sorted {
        let day = super::manifest::day_of(id);
        if days.len() >= keep_daily && !days.contains(day) {
            break;
        }
        if days.insert(day.to_string()) {
            keep.insert(id);
        }
    }
    Ok(sorted
        .into_iter()
        .filter(|id| !keep.contains(id))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// (snapshots, keep_last, keep_daily, expected at least, deleted or refused)
    type Case = (Vec<String>, usize, usize, usize, Result<Vec<String>, ()>);

    #[test]
    fn retention_table() {
        let table: Vec<Case> = vec![
            // Fewer than keep_last: nothing.
            (
                ids(&["20261201T000000Z-r1", "20261201T010000Z-r2"]),
                3,
                0,
                0,
                Ok(vec![]),
            ),
            // The oldest beyond keep_last go.
            (
                ids(&[
                    "20261201T000000Z-r1",
                    "20261201T010000Z-r2",
                    "20261201T020000Z-r3",
                ]),
                2,
                0,
                0,
                Ok(ids(&["20261201T000000Z-r1"])),
            ),
            // keep_daily keeps the newest of each of the last days with snapshots.
            (
                ids(&[
                    "20261129T230000Z-r1",
                    "20261130T100000Z-r2",
                    "20261130T200000Z-r3",
                    "20261201T000000Z-r4",
                    "20261201T010000Z-r5",
                ]),
                1,
                2,
                0,
                Ok(ids(&[
                    "20261201T000000Z-r4",
                    "20261130T100000Z-r2",
                    "20261129T230000Z-r1",
                ])),
            ),
            // keep_last 0 still keeps the newest.
            (
                ids(&["20261201T000000Z-r1", "20261201T010000Z-r2"]),
                0,
                0,
                0,
                Ok(ids(&["20261201T000000Z-r1"])),
            ),
            // The store lists fewer than expected: delete nothing.
            (
                ids(&["20261201T000000Z-r1", "20261201T010000Z-r2"]),
                1,
                0,
                5,
                Err(()),
            ),
        ];
        for (i, (snaps, last, daily, expected, want)) in table.into_iter().enumerate() {
            let got = to_delete(&snaps, last, daily, expected).map_err(|_| ());
            assert_eq!(got, want, "case {i}");
        }
    }
}

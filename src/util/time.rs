//! Timestamps as text.

/// `20261203T082500Z`: UTC, sortable as text (moved-aside copies, snapshot ids, requests).
pub fn utc_stamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_stamp_is_utc_and_sortable() {
        // 09:25 at UTC+1 is 08:25 UTC.
        let t = time::OffsetDateTime::from_unix_timestamp(1_796_286_300)
            .unwrap()
            .to_offset(time::UtcOffset::from_hms(1, 0, 0).unwrap());
        assert_eq!(t.hour(), 9);
        assert_eq!(super::utc_stamp(t), "20261203T082500Z");
    }
}

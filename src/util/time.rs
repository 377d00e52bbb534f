//! Timestamps and ages as text.

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

/// An age in seconds in the largest unit that keeps two digits of precision: "45s", "12m", "5h", "3d".
pub fn age_text(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
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

    #[test]
    fn age_text_keeps_two_digits() {
        for (secs, text) in [
            (-5, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (7199, "119m"),
            (7200, "2h"),
            (172_799, "47h"),
            (172_800, "2d"),
        ] {
            assert_eq!(super::age_text(secs), text, "{secs}");
        }
    }
}

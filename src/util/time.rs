//! Timestamps and ages as text.

/// `20261203T082500Z`: UTC, sortable as text (moved-aside copies, snapshot ids, requests).
pub(crate) fn utc_stamp(t: time::OffsetDateTime) -> String {
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

/// A duration in the largest whole unit, as the config reads it back ("365d", "90s", "1500ms").
pub(crate) fn format_duration(d: std::time::Duration) -> String {
    let (secs, ms) = (d.as_secs(), d.subsec_millis());
    if ms != 0 || secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, len) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if secs % len == 0 {
            return format!("{}{unit}", secs / len);
        }
    }
    format!("{secs}s")
}

/// An age in seconds in the largest unit that keeps two digits of precision: "45s", "12m", "5h", "3d".
pub(crate) fn age_text(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Which units a duration may use. Milliseconds only where a sub-second value makes sense (a
/// check interval, a wait); months and years never: "10M" reads as ten minutes to some and ten
/// months to others, and a year has no fixed length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Units {
    /// s, m, h, d.
    Coarse,
    /// ms, s, m, h, d.
    WithMs,
}

/// A duration written as one or more `<number><unit>` parts ("90s", "10m", "1h30m", "7d",
/// "1500ms" where `units` allows it), units in lower case. The error says what is wrong and
/// which units work, for a message naming the key.
pub(crate) fn parse_duration(text: &str, units: Units) -> Result<std::time::Duration, String> {
    let allowed = match units {
        Units::Coarse => "s, m, h or d",
        Units::WithMs => "ms, s, m, h or d",
    };
    let example = "e.g. \"30s\", \"10m\", \"1h30m\", \"7d\"";
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("is empty; write {example}"));
    }
    let mut total: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(format!(
                "{text:?} is not a duration: expected a number at {rest:?}; write {example}"
            ));
        }
        let (num, after) = rest.split_at(digits);
        let after = after.trim_start_matches(' ');
        let unit_len = after.len()
            - after
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let (unit, after) = after.split_at(unit_len);
        let ms_per: u128 = match (unit, units) {
            ("ms", Units::WithMs) => 1,
            ("s", _) => 1_000,
            ("m", _) => 60_000,
            ("h", _) => 3_600_000,
            ("d", _) => 86_400_000,
            ("", _) => {
                return Err(format!(
                    "{text:?} is not a duration: {num} has no unit; use {allowed}, {example}"
                ))
            }
            ("M", _) => {
                return Err(format!(
                    "{text:?} is not a duration: \"M\" (months?) is not a unit; use {allowed} (minutes are \"m\")"
                ))
            }
            (u, _) => {
                return Err(format!(
                    "{text:?} is not a duration: {u:?} is not a unit; use {allowed}, {example}"
                ))
            }
        };
        // Too large to hold is longer than any caller accepts: saturate, and let it say so.
        let n: u128 = num.parse().unwrap_or(u128::MAX);
        total = total.saturating_add(n.saturating_mul(ms_per));
        rest = after.trim_start_matches(' ');
    }
    Ok(std::time::Duration::from_millis(
        u64::try_from(total).unwrap_or(u64::MAX),
    ))
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, Units};
    use std::time::Duration;

    #[test]
    fn durations_use_only_s_m_h_d_and_ms_where_allowed() {
        let ok = [
            ("90s", Units::Coarse, 90_000),
            ("10m", Units::Coarse, 600_000),
            ("1h30m", Units::Coarse, 5_400_000),
            ("1h 30m", Units::Coarse, 5_400_000),
            ("7d", Units::Coarse, 604_800_000),
            ("1500ms", Units::WithMs, 1_500),
            ("0s", Units::Coarse, 0),
        ];
        let huge = Duration::from_millis(u64::MAX);
        assert_eq!(
            parse_duration("99999999999999999999999999999999999999999d", Units::Coarse),
            Ok(huge)
        );
        assert_eq!(
            parse_duration("500000000000000000d", Units::Coarse),
            Ok(huge)
        );
        for (text, units, ms) in ok {
            assert_eq!(
                parse_duration(text, units),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        let bad = [
            ("10M", Units::Coarse, "months"),
            ("10M", Units::WithMs, "months"),
            ("1y", Units::Coarse, "\"y\" is not a unit"),
            ("2years", Units::Coarse, "\"years\" is not a unit"),
            ("10mins", Units::Coarse, "\"mins\" is not a unit"),
            ("10 minutes", Units::Coarse, "\"minutes\" is not a unit"),
            ("1500ms", Units::Coarse, "\"ms\" is not a unit"),
            ("10", Units::Coarse, "has no unit"),
            ("-1s", Units::Coarse, "expected a number"),
            ("forever", Units::Coarse, "expected a number"),
            ("", Units::Coarse, "is empty"),
        ];
        for (text, units, says) in bad {
            let e = parse_duration(text, units).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
    }

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

//! How the checks name members, sizes and dates in their messages.

use super::CheckedMember;
use crate::util::time::{age_text, utc_stamp};

pub(super) fn label(m: &CheckedMember) -> String {
    if m.name.is_empty() {
        format!("{:x} ({})", m.id, m.peer_url)
    } else {
        format!("{} ({})", m.name, m.peer_url)
    }
}

pub(super) fn short(m: &CheckedMember) -> String {
    if m.name.is_empty() {
        format!("{:x}", m.id)
    } else {
        m.name.clone()
    }
}

pub(super) fn since(m: &CheckedMember, now: i64) -> String {
    match m.down_since {
        Some(t) => match time::OffsetDateTime::from_unix_timestamp(t) {
            Ok(at) => format!(
                ", unreachable since {} ({} ago)",
                utc_stamp(at),
                age_text(now - t)
            ),
            Err(_) => String::new(),
        },
        None => String::new(),
    }
}

pub(super) fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(utc_stamp)
        .unwrap_or_else(|_| unix.to_string())
}

pub(super) fn bytes(b: i64) -> String {
    crate::util::text::size_text(b.max(0) as u64)
}

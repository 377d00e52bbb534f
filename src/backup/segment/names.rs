//! Where segments live and what they are called: `<cluster dir>/segments/<snapshot id>/`, ids
//! `<UTC time>-r<first revision>-<last revision>` (as strict as snapshot ids), the data object
//! `<id>.seg[.age]` beside its manifest `<id>.json`; and listing a chain's directory.

use crate::backup::manifest;
use crate::backup::store::Store;
use anyhow::{Context, Result};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;

/// A segment id's parts, when `id` is exactly `YYYYMMDDTHHMMSSZ-r<first>-<last>` with a real UTC
/// time and `first <= last`, nothing else.
pub(crate) fn parse_id(id: &str) -> Result<(&str, i64, i64), String> {
    let bad = || format!("{id:?} is not a segment id (YYYYMMDDTHHMMSSZ-r<first>-<last>)");
    let (head, last) = id.rsplit_once('-').ok_or_else(bad)?;
    let (stamp, first) = manifest::parse_id(head).map_err(|_| bad())?;
    if last.is_empty() || last.len() > 19 || !last.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let last: i64 = last.parse().map_err(|_| bad())?;
    if first < 1 || last < first {
        return Err(bad());
    }
    Ok((stamp, first, last))
}

pub(crate) fn id(t: time::OffsetDateTime, first: i64, last: i64) -> String {
    format!("{}-r{first}-{last}", crate::util::time::utc_stamp(t))
}

pub(crate) fn object_name(id: &str, encrypted: bool) -> String {
    if encrypted {
        format!("{id}.seg.age")
    } else {
        format!("{id}.seg")
    }
}

/// `<cluster dir>/segments/<base>`: the segments of the chain that extends snapshot `base`.
pub(crate) fn chain_dir(store: &Store, base: &str) -> ObjectPath {
    store.path("segments").join(base)
}

/// Every object name directly in the chain directory of `base`.
pub(super) async fn chain_objects(
    store: &Store,
    base: &str,
) -> Result<Vec<object_store::ObjectMeta>> {
    let dir = chain_dir(store, base);
    let depth = dir.parts().count() + 1;
    let all: Vec<object_store::ObjectMeta> = store
        .inner
        .list(Some(&dir))
        .try_collect()
        .await
        .with_context(|| format!("listing {dir} in {}", store.describe))?;
    Ok(all
        .into_iter()
        .filter(|o| o.location.parts().count() == depth)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_strict_segment_ids_parse() {
        assert_eq!(
            parse_id("20261203T082500Z-r11-15"),
            Ok(("20261203T082500Z", 11, 15))
        );
        for bad in [
            "",
            "20261203T082500Z-r11",
            "20261203T082500Z-r15-11",
            "20261203T082500Z-r0-1",
            "20261203T082500Z-r11-15.json",
            "20261203T082500Z-r11-15/..",
            "../20261203T082500Z-r11-15",
            "20261203T082500Z-r11-",
            "20261203T082500Z-r11-+5",
            "20261303T082500Z-r11-15",
            "20261203T082500Z-r11-1234567890123456789012",
        ] {
            assert!(parse_id(bad).is_err(), "{bad:?} parsed");
        }
    }
}

//! A segment's manifest: a signed envelope (`signed`), like a snapshot's, naming the revisions the
//! segment covers, its data object and that object's hash, and the object before it in the chain
//! with its hash. What a signed one must also be (`check`), and reading one from the store with
//! its signature verified against the cluster's CA (`read_manifest`).

use super::names::{chain_dir, object_name, parse_id};
use crate::backup::manifest;
use crate::backup::signed;
use crate::backup::store::{ReadError, Store};
use serde::{Deserialize, Serialize};

/// The kind of signed object a segment's manifest is.
pub(crate) const KIND: &str = "segment-manifest";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SegmentManifest {
    /// `<UTC time>-r<first>-<last>`, also the name of this manifest without `.json`.
    pub id: String,
    /// The full snapshot this segment's chain extends.
    pub base: String,
    /// The data object's name, beside the manifest.
    pub object: String,
    /// SHA-256 of the stored bytes (ciphertext when encrypted).
    pub sha256: String,
    pub size: u64,
    /// Every event of these revisions, and no other, is in the segment.
    pub first_revision: i64,
    pub last_revision: i64,
    /// Events in this segment, and in the chain up to and including it.
    pub events: u64,
    pub chain_events: u64,
    /// The object before this one in the chain (the base snapshot's id or a segment's id), and
    /// the SHA-256 of its stored bytes as its own signed manifest gives it.
    pub previous: String,
    pub previous_sha256: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// The agent that uploaded it: the member whose key signed this manifest.
    pub taken_by: String,
    pub encrypted: bool,
    pub cluster: String,
}

impl signed::Payload for SegmentManifest {
    fn signer(&self) -> &str {
        &self.taken_by
    }
    fn signed_at(&self) -> Option<time::OffsetDateTime> {
        signed::parse_time(&self.created)
    }
}

fn is_sha256(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl SegmentManifest {
    /// Everything a signed segment manifest must also be: stored under its id, in its base's
    /// directory, its object named from its id, its id agreeing with its time and revisions, of
    /// this cluster, hashes of the right form.
    pub(crate) fn check(&self, stored_as: &str, base: &str, cluster: &str) -> Result<(), String> {
        let (stamp, first, last) = parse_id(&self.id)?;
        if self.id != stored_as {
            return Err(format!(
                "it names segment {:?} but is stored as {stored_as:?}",
                self.id
            ));
        }
        if self.base != base {
            return Err(format!(
                "it extends snapshot {:?} but is stored under {base:?}",
                self.base
            ));
        }
        if self.object != object_name(&self.id, self.encrypted) {
            return Err(format!(
                "its data object {:?} is not the one its id names",
                self.object
            ));
        }
        let created = signed::parse_time(&self.created)
            .ok_or_else(|| format!("created {:?} is not RFC 3339", self.created))?;
        if crate::util::time::utc_stamp(created) != stamp
            || first != self.first_revision
            || last != self.last_revision
        {
            return Err(format!(
                "its id {} does not match its time {} and revisions {}-{}",
                self.id, self.created, self.first_revision, self.last_revision
            ));
        }
        if self.cluster != cluster {
            return Err(format!(
                "it is a segment of cluster {:?}, not {cluster:?}",
                self.cluster
            ));
        }
        if parse_id(&self.previous).is_err() && manifest::parse_id(&self.previous).is_err() {
            return Err(format!(
                "its previous object {:?} is neither a snapshot nor a segment id",
                self.previous
            ));
        }
        for (what, h) in [
            ("sha256", &self.sha256),
            ("previous_sha256", &self.previous_sha256),
        ] {
            if !is_sha256(h) {
                return Err(format!("its {what} is not a SHA-256 in hex"));
            }
        }
        if self.events == 0 || self.chain_events < self.events || self.size == 0 {
            return Err(format!(
                "{} events ({} in the chain) in {} bytes is not a segment",
                self.events, self.chain_events, self.size
            ));
        }
        Ok(())
    }
}

/// Read and check the signed manifest of segment `seg` of chain `base`.
pub(super) async fn read_manifest(
    store: &Store,
    base: &str,
    seg: &str,
    anchor: &crate::tls::signature::TrustAnchor,
    now: time::OffsetDateTime,
) -> Result<Option<SegmentManifest>, String> {
    let path = chain_dir(store, base).join(format!("{seg}.json"));
    let bytes = match store.get_bounded(&path, signed::MAX_BYTES).await {
        Ok(Some((b, _))) => b,
        Ok(None) => return Ok(None),
        Err(ReadError::TooLarge(_)) => return Err("too large to be a manifest; not read".into()),
        Err(ReadError::Failed(e)) => return Err(format!("{e:#}")),
    };
    signed::open(KIND, &bytes, anchor, now)
        .and_then(|m: SegmentManifest| m.check(seg, base, &store.cluster).map(|_| m))
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_refuses_what_does_not_agree() {
        let good = SegmentManifest {
            id: "20261203T082500Z-r11-15".into(),
            base: "20261203T080000Z-r10".into(),
            object: "20261203T082500Z-r11-15.seg.age".into(),
            sha256: "a".repeat(64),
            size: 100,
            first_revision: 11,
            last_revision: 15,
            events: 5,
            chain_events: 5,
            previous: "20261203T080000Z-r10".into(),
            previous_sha256: "b".repeat(64),
            created: "2026-12-03T08:25:00Z".into(),
            taken_by: "etcd1".into(),
            encrypted: true,
            cluster: "prod".into(),
        };
        let (id, base) = ("20261203T082500Z-r11-15", "20261203T080000Z-r10");
        assert_eq!(good.check(id, base, "prod"), Ok(()));
        type Change = fn(&mut SegmentManifest);
        let cases: Vec<(Change, &str)> = vec![
            (|m| m.base = "20261203T070000Z-r9".into(), "extends"),
            (|m| m.object = "../../x".into(), "data object"),
            (|m| m.last_revision = 16, "does not match"),
            (|m| m.cluster = "staging".into(), "not \"prod\""),
            (|m| m.previous = "../x".into(), "previous object"),
            (|m| m.previous_sha256 = "x".into(), "previous_sha256"),
            (|m| m.events = 0, "not a segment"),
            (|m| m.id = "20261203T082500Z-r11-16".into(), "stored as"),
        ];
        for (i, (change, why)) in cases.into_iter().enumerate() {
            let mut m = good.clone();
            change(&mut m);
            let err = m.check(id, base, "prod").unwrap_err();
            assert!(err.contains(why), "case {i}: {err}");
        }
    }
}

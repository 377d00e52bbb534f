//! Delta segments: every change to the keyspace between two full snapshots, uploaded every few
//! seconds, so that a total loss costs seconds of writes instead of a whole `backup.interval`.
//!
//! A segment's data object holds, in revision order, each revision's events (puts with key, value,
//! lease, create/mod revision and version; deletes), one JSON line per revision after a magic line,
//! encrypted to the same age recipients as full snapshots and streamed into a multipart upload.
//! Its manifest, a signed envelope like a snapshot's (`signed`), is written last: a segment without
//! one does not exist. Each manifest names the revisions it covers, `first_revision` to
//! `last_revision` (every event of those revisions is in it: the watch that filled it started at
//! `first_revision`), the object before it in the chain (the full snapshot it extends, or the
//! segment before) and that object's SHA-256: a hash chain back to the full snapshot.
//!
//! Layout: `<cluster dir>/segments/<snapshot id>/<segment id>.json` and `.seg[.age]`, below the
//! cluster's directory, so the snapshot catalog (which lists its directory only) never sees them,
//! and retention deletes a chain with the snapshot it extends. Segment ids are
//! `<UTC time>-r<first revision>-<last revision>`, as strict as snapshot ids.
//!
//! The files: `format` (the events and the data object's plain text: `group`, `decode`), `names`
//! (ids, object names, the chain's directory), `manifest` (the signed manifest, its `check`, and
//! reading one with its signature verified), `upload` (the next segment: data, then the signed
//! manifest), `chain` (where a chain ends: `tail`; `delete_chain`), `verify` (`verify_chain`);
//! for the tests, `fixture` (a signed snapshot and a chain of three segments).

mod chain;
#[cfg(test)]
mod fixture;
mod format;
mod manifest;
mod names;
mod upload;
mod verify;

pub(crate) use chain::{delete_chain, tail, Link};
pub(crate) use format::{group, Event};
pub(crate) use manifest::SegmentManifest;
pub(crate) use upload::upload;
pub(crate) use verify::verify_chain;

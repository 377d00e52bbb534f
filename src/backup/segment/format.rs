//! A segment's data object, as stored: a magic line, then one JSON line per revision (its events,
//! keys and values in base64), encrypted to the age recipients when there are any. `upload`
//! writes it, `decode` reads it back.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

/// The first line of a segment's plain text: what it is and the version of its format.
pub(crate) const MAGIC: &[u8] = b"etcd-bootstrap segment v1\n";

/// Keys and values are bytes to etcd: base64 in the JSON lines.
mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// One change to the keyspace, as etcd's watch reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Event {
    Put {
        #[serde(with = "b64")]
        key: Vec<u8>,
        #[serde(with = "b64")]
        value: Vec<u8>,
        /// The lease the key is attached to (0: none).
        lease: i64,
        create_revision: i64,
        mod_revision: i64,
        version: i64,
    },
    Delete {
        #[serde(with = "b64")]
        key: Vec<u8>,
        mod_revision: i64,
    },
}

impl Event {
    /// Bytes of key and value: what `backup.delta_max_bytes` counts.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Event::Put { key, value, .. } => key.len() + value.len(),
            Event::Delete { key, .. } => key.len(),
        }
    }

    pub(crate) fn mod_revision(&self) -> i64 {
        match self {
            Event::Put { mod_revision, .. } | Event::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// Every event of one revision (etcd applies them as one transaction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Revision {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// Events in watch order as revisions, each revision's events together.
pub(crate) fn group(events: Vec<Event>) -> Vec<Revision> {
    let mut out: Vec<Revision> = vec![];
    for e in events {
        let rev = e.mod_revision();
        match out.last_mut() {
            Some(last) if last.revision == rev => last.events.push(e),
            _ => out.push(Revision {
                revision: rev,
                events: vec![e],
            }),
        }
    }
    out
}

/// One revision as its line of the plain text: JSON, then a newline.
pub(super) fn line(r: &Revision) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(r)?;
    line.push(b'\n');
    Ok(line)
}

/// The revisions in a segment's stored bytes (decrypted with `identity_file` when encrypted).
pub(crate) fn decode(
    stored: &[u8],
    encrypted: bool,
    identity_file: Option<&Path>,
) -> Result<Vec<Revision>> {
    let plain = if encrypted {
        let identity_file =
            identity_file.context("the segment is encrypted: set backup.age_identity_file")?;
        let identities = age::IdentityFile::from_file(identity_file.display().to_string())
            .with_context(|| format!("reading {}", identity_file.display()))?
            .into_identities()
            .with_context(|| format!("{} holds no usable identity", identity_file.display()))?;
        let decryptor = age::Decryptor::new_buffered(stored).context("not an age file")?;
        let mut reader = decryptor
            .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .context(
                "decrypting (is backup.age_identity_file the key of one of the recipients?)",
            )?;
        let mut out = vec![];
        reader.read_to_end(&mut out).context("decrypting")?;
        out
    } else {
        stored.to_vec()
    };
    let body = plain
        .strip_prefix(MAGIC)
        .context("not a segment of this format (its first line is not the segment magic)")?;
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_slice(l).with_context(|| format!("revision line {}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::segment::fixture::{del, put};

    #[test]
    fn events_group_by_revision() {
        let g = group(vec![
            put(b"a", b"", 3, 0),
            del(b"b", 3),
            put(b"c", b"", 4, 0),
        ]);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].events.len(), 2);
        assert_eq!(g[1].revision, 4);
    }
}

//! For the tests: events, and a store holding a signed full snapshot and a chain of three
//! encrypted segments.

use super::{group, tail, upload, Event, SegmentManifest};
use crate::backup::manifest::{self, Manifest};
use crate::backup::signed::{self, tests::Pki};
use crate::backup::store::Store;
use age::secrecy::ExposeSecret;
use object_store::{ObjectStoreExt, PutPayload};

pub(super) fn put(key: &[u8], value: &[u8], rev: i64, lease: i64) -> Event {
    Event::Put {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        create_revision: rev,
        mod_revision: rev,
        version: 1,
    }
}

pub(super) fn del(key: &[u8], rev: i64) -> Event {
    Event::Delete {
        key: key.to_vec(),
        mod_revision: rev,
    }
}

pub(super) struct ChainFixture {
    _dir: tempfile::TempDir,
    pub(super) root: std::path::PathBuf,
    pub(super) pki: Pki,
    pub(super) store: Store,
    pub(super) identity: std::path::PathBuf,
    pub(super) recipient: String,
    pub(super) base: Manifest,
    pub(super) segments: Vec<SegmentManifest>,
}

impl ChainFixture {
    pub(super) fn seg_path(&self, m: &SegmentManifest, name: &str) -> std::path::PathBuf {
        self.root
            .join("prod/segments")
            .join(&self.base.id)
            .join(name.replace("{}", &m.id))
    }
}

/// A signed full snapshot at revision 10 and three encrypted segments: 11-12, 13, 14-15.
pub(super) async fn fixture() -> ChainFixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let pki = Pki::new();
    let store = crate::backup::store::local_for_test(&root, "prod", pki.member_material("etcd1"));
    let key = age::x25519::Identity::generate();
    let identity = root.join("identity.txt");
    std::fs::write(&identity, format!("{}\n", key.to_string().expose_secret())).unwrap();
    let recipient = key.to_public().to_string();

    let now = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);
    let base_id = manifest::id(now, 10);
    let data = b"a full snapshot, as far as the chain is concerned".to_vec();
    let base = Manifest {
        id: base_id.clone(),
        object: manifest::object_name(&base_id, true),
        sha256: crate::util::sha256::sha256_hex(&data),
        etcd_sha256: "b".repeat(64),
        size: data.len() as u64,
        db_size: 1024 + 32,
        revision: 10,
        cluster_id: "1234".into(),
        member_count: 3,
        etcd_version: "3.5.30".into(),
        created: manifest::rfc3339(now),
        taken_from: "https://10.0.0.1:2379".into(),
        taken_by: "etcd1".into(),
        encrypted: true,
        cluster: "prod".into(),
    };
    store
        .inner
        .put(&store.path(&base.object), PutPayload::from(data))
        .await
        .unwrap();
    let sealed = signed::seal(manifest::KIND, &base, &pki.member("etcd1")).unwrap();
    store
        .inner
        .put(
            &store.path(&manifest::manifest_name(&base_id)),
            PutPayload::from(sealed),
        )
        .await
        .unwrap();
    let batches = vec![
        vec![
            put(b"/a", b"1", 11, 0),
            put(b"/b", &[0, 255, 10, 13], 12, 0x1234),
            del(b"/a", 12),
        ],
        vec![put(b"\xff\x00binary key", b"2", 13, 0)],
        vec![del(b"/b", 14), put(b"/c", &vec![7u8; 100_000], 15, 0)],
    ];
    let mut segments = vec![];
    for b in batches {
        let link = tail(&store, &base).await.unwrap();
        segments.push(
            upload(&store, std::slice::from_ref(&recipient), &link, &group(b))
                .await
                .unwrap(),
        );
    }
    ChainFixture {
        _dir: dir,
        root,
        pki,
        store,
        identity,
        recipient,
        base,
        segments,
    }
}

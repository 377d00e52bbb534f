//! Plain data shared across layers (URLs, peers, what etcd answered, the local state, etcd's ID
//! arithmetic) and pure functions over it. No I/O here: no files, network, clock or RNG.

pub(crate) mod cluster;
pub(crate) mod datadir;
pub(crate) mod etcd_version;
pub(crate) mod held;
pub(crate) mod ids;
pub(crate) mod local;
pub(crate) mod peer;
pub(crate) mod tls;
pub(crate) mod url;

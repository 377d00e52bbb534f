//! Plain data shared across layers (URLs, peers, what etcd answered, the local state, etcd's ID
//! arithmetic) and pure functions over it. No I/O here: no files, network, clock or RNG.

pub mod cluster;
pub mod datadir;
pub mod ids;
pub mod local;
pub mod peer;
pub mod tls;
pub mod url;

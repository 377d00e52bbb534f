//! Helpers with no etcd knowledge (atomic files, the HTTPS client, the one retry/backoff, connection caps, hashes,
//! timestamps): nothing here may depend on etcd's rules or on any module of this crate but `error`.

pub(crate) mod fs;
pub(crate) mod hex;
pub(crate) mod http;
pub(crate) mod limit;
pub(crate) mod process;
pub(crate) mod retry;
pub(crate) mod sha256;
pub(crate) mod text;
pub(crate) mod time;

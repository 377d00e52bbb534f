//! Helpers with no etcd knowledge (atomic files, the HTTPS client, the one retry/backoff, connection caps, hashes,
//! timestamps): nothing here may depend on etcd's rules or on any module of this crate but `error`.

pub mod fs;
pub mod hex;
pub mod http;
pub mod limit;
pub mod process;
pub mod retry;
pub mod sha256;
pub mod text;
pub mod time;

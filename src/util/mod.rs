pub mod fs;
pub mod hex;
pub mod http;
pub mod retry;
pub mod sha256;

pub mod cluster;
pub mod ids;
pub mod local;
pub mod peer;
pub mod url;

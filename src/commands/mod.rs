//! One module per command.

pub mod check_config;
pub mod defrag;
pub mod doctor;
pub mod leave;
pub mod plan;
pub mod recover;
pub mod restore;
pub mod run;
pub mod snapshot;
pub mod status;

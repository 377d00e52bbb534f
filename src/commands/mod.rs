//! One module per command.

pub(crate) mod check_config;
pub(crate) mod defrag;
pub(crate) mod doctor;
pub(crate) mod leave;
pub(crate) mod plan;
pub(crate) mod recover;
pub(crate) mod restore;
pub(crate) mod run;
pub(crate) mod snapshot;
pub(crate) mod status;

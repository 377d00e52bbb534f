//! One module per command.

pub mod leave;
pub mod plan;
pub mod recover;
pub mod run;
pub mod snapshot;
pub mod status;

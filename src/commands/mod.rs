//! One module per command.

pub mod leave;
pub mod plan;
pub mod run;
pub mod status;

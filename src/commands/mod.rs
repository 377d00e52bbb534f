//! One module per command.

pub mod plan;
pub mod run;
pub mod status;

//! Failure classes and their exit codes.
//!
//! Errors travel as `anyhow::Error` with context; the class is a marker error at the root of the
//! chain, so `main` can pick the exit code without every layer knowing about exit codes.

use std::fmt;

/// A problem with the configuration or the command line: exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key (`member.data_dir`), flag (`--config`) or variable the problem is about.
    pub key: String,
    /// Where the value came from: a file path, an environment variable, "default", ...
    pub source: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(
        key: impl Into<String>,
        source: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            key: key.into(),
            source: source.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.source.is_empty() {
            write!(f, "config key `{}`: {}", self.key, self.message)
        } else {
            write!(
                f,
                "config key `{}` (from {}): {}",
                self.key, self.source, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Proceeding would be unsafe (two clusters answered, this node is not in the peer set, ...):
/// exit code 3. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused: {}", self.0)
    }
}

impl std::error::Error for Refused {}

/// A run-time failure that retrying will not fix (a signer that refuses us): exit code 1 at once
/// instead of waiting out `discovery.timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fatal(pub String);

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// A failure the command has already reported in full on stdout (`doctor`'s FAIL lines): exit
/// code 1, and `main` prints only this summary, without an "error:" prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reported(pub String);

impl fmt::Display for Reported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reported {}

/// The exit code for an error chain: 2 for config errors, 3 for refusals, 1 otherwise.
pub(crate) fn exit_code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<ConfigError>().is_some() {
            return 2;
        }
        if cause.downcast_ref::<Refused>().is_some() {
            return 3;
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn exit_codes_follow_the_root_cause() {
        let e: anyhow::Error = ConfigError::new("member.name", "f.toml", "bad").into();
        assert_eq!(exit_code_for(&e.context("loading")), 2);
        let r: anyhow::Result<()> = Err(Refused("two clusters".into()).into());
        assert_eq!(exit_code_for(&r.context("deciding").unwrap_err()), 3);
        assert_eq!(exit_code_for(&anyhow::anyhow!("io")), 1);
        assert_eq!(exit_code_for(&Reported("2 problems".into()).into()), 1);
    }

    /// `Fatal` is attached as context; it must still be found under further context.
    #[test]
    fn fatal_is_found_as_context() {
        let e = anyhow::anyhow!("HTTP 400")
            .context(Fatal("signer refused".into()))
            .context("observing");
        assert!(e.downcast_ref::<Fatal>().is_some());
        assert_eq!(exit_code_for(&e), 1);
    }
}

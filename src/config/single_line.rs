//! Every string in the configuration is one line of text: checked over the merged table, before
//! any section is validated.

use super::Validator;
use crate::error::ConfigError;

/// The first control character (newline, carriage return, NUL, ...) in `value`. Values end up as
/// lines of etcd's environment file and unit: a line break in one would add a line of the
/// writer's choosing (`ETCD_FORCE_NEW_CLUSTER=true`, `ExecStartPre=`).
pub(crate) fn control_char(value: &str) -> Option<char> {
    value.chars().find(|c| c.is_control())
}

/// Every string in the configuration (values, list items, `[etcd.flags]` values) is one line of
/// text without control characters.
pub(super) fn single_line_values(v: &Validator<'_>) -> Result<(), ConfigError> {
    let check = |key: &str, text: &str| match control_char(text) {
        None => Ok(()),
        Some(c) => Err(v.err(
            key,
            format!(
                "{text:?} holds a control character ({c:?}); config values are single-line text \
                 (in etcd's environment file or unit a line break would start a line of its own)"
            ),
        )),
    };
    for (section, keys) in &v.merged.table {
        let Some(keys) = keys.as_table() else {
            continue;
        };
        for (key, value) in keys {
            let full = format!("{section}.{key}");
            match value {
                toml::Value::String(s) => check(&full, s)?,
                toml::Value::Array(items) => {
                    for s in items.iter().filter_map(toml::Value::as_str) {
                        check(&full, s)?;
                    }
                }
                toml::Value::Table(flags) => {
                    for (flag, value) in flags {
                        if let Some(s) = value.as_str() {
                            check(&format!("{full}.{flag}"), s)?;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

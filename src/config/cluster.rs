//! `[cluster]`: the cluster's name (it also seeds the token), its size and an explicit token. The
//! section's struct and its validation live together; every bad value is one line naming its key.

use super::Validator;
use crate::error::ConfigError;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ClusterConfig {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

pub(super) fn validate(
    v: &Validator<'_>,
    raw: super::raw::RawCluster,
) -> Result<ClusterConfig, ConfigError> {
    let name = raw.name.ok_or_else(|| {
        v.err(
            "cluster.name",
            "is required (it names the cluster and seeds its token)",
        )
    })?;
    v.name("cluster.name", &name)?;
    let size = match raw.size {
        None => None,
        Some(n) if (1..=15).contains(&n) => Some(n as usize),
        Some(n) => {
            return Err(v.err(
                "cluster.size",
                format!("{n} is not a cluster size (1-15 voting members)"),
            ))
        }
    };
    let token = match raw.token.filter(|t| !t.is_empty()) {
        Some(t) => {
            v.name("cluster.token", &t)?;
            Some(t)
        }
        None => None,
    };
    Ok(ClusterConfig { name, size, token })
}

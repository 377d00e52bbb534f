//! `[cluster]`: the cluster's name (it also seeds the token), its size and an explicit token. The
//! section's struct and its validation live together; every bad value is one line naming its key.

use super::Validator;
use crate::error::ConfigError;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClusterConfig {
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
        if v.merged.files.is_empty() {
            // Nothing was read at all: the file is what is missing, not one key of it.
            return ConfigError::new(
                "--config",
                "",
                format!(
                    "no file at {} (and no ETCD_BOOTSTRAP_CLUSTER_NAME in the environment): write the config there or pass --config PATH",
                    super::DEFAULT_CONFIG_PATH
                ),
            );
        }
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

/// `cluster.size` against a fixed peer set (`discovery.peers`): the static list is the whole
/// membership a new cluster forms from, so a size it does not match can never be met. More
/// peers than the size is refused by the first-boot decision ("refusing to guess which form the
/// cluster"); fewer waits forever for peers that no source will add (seeds can add members, so
/// fewer is allowed with seeds).
pub(super) fn check_peers(
    v: &Validator<'_>,
    cluster: &ClusterConfig,
    discovery: &super::DiscoveryConfig,
) -> Result<(), ConfigError> {
    let (Some(size), n) = (cluster.size, discovery.peers.len()) else {
        return Ok(());
    };
    if n == 0 || n == size || (n < size && !discovery.seeds.is_empty()) {
        return Ok(());
    }
    Err(v.err(
        "cluster.size",
        format!(
            "is {size}, but discovery.peers lists {n} peer{}: {}; make them agree",
            if n == 1 { "" } else { "s" },
            if n > size {
                "the first boot would refuse to guess which of them form the cluster"
            } else {
                "the first boot would wait forever for the missing ones"
            }
        ),
    ))
}

/// Things that are allowed but probably not meant, for `check-config` to print.
pub(super) fn warnings(cluster: &ClusterConfig, discovery: &super::DiscoveryConfig) -> Vec<String> {
    let mut out = Vec::new();
    let size = cluster.size.or(match discovery.peers.len() {
        0 => None,
        n => Some(n),
    });
    if let Some(n) = size.filter(|n| n % 2 == 0) {
        // etcd's quorum is n/2+1: an even size tolerates no more failures than the odd size
        // below it (4 members tolerate 1, like 3) and has one more member that can fail.
        out.push(format!(
            "cluster.size: {n} members (an even size) tolerate the loss of {} member{}, as {} do; an odd size ({} or {}) is the usual choice",
            (n - 1) / 2,
            if (n - 1) / 2 == 1 { "" } else { "s" },
            n - 1,
            n - 1,
            n + 1
        ));
    }
    out
}

//! `[upgrade]`: how a change etcd must be restarted for is rolled through the cluster, one
//! member at a time (`agent::rollout`).

use super::Validator;
use crate::error::ConfigError;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct UpgradeConfig {
    /// How long a restarted member has to be healthy and caught up with the leader before the
    /// rollout lock is released (and the rollout stops there if it is not).
    #[serde(serialize_with = "super::ser_duration")]
    pub member_timeout: Duration,
}

pub(super) fn validate(
    v: &Validator<'_>,
    raw: super::raw::RawUpgrade,
) -> Result<UpgradeConfig, ConfigError> {
    Ok(UpgradeConfig {
        member_timeout: v.duration("upgrade.member_timeout", raw.member_timeout, "2m")?,
    })
}

//! `etcd-bootstrap leave`: scale-in or decommission. Remove the local member through a voting
//! member, stop etcd, move its data aside (`agent::leave`). Refused when the remaining members
//! could not keep a quorum.

use crate::agent::leave;
use crate::config::Config;
use anyhow::Result;

pub(crate) async fn leave(cfg: Config) -> Result<()> {
    let left = leave::leave_cluster(&cfg).await?;
    println!(
        "removed member {:x} ({}) from the cluster",
        left.id, left.name
    );
    if let Some(to) = leave::stop_and_move_aside(&cfg, &left).await? {
        println!("stopped etcd; its data is kept at {}", to.display());
    }
    Ok(())
}

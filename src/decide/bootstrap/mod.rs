//! The first-boot decision: what to do with the local member, as a pure function of what was
//! observed (the data dir, the discovered peers, what each peer's etcd and each peer's agent
//! answered). No I/O here; the table tests in each file are the specification.
//!
//! Two rules keep a cluster from forking:
//! - a new cluster is formed only when every member of the complete, stable peer set positively
//!   says, through its agent, that it holds no data; a member that cannot be asked blocks it
//!   (`evidence`);
//! - the token of a new cluster mixes in a nonce from every initial member, and a member draws a
//!   new nonce once the data it formed with is gone, so a re-formed cluster never gets the
//!   member and cluster IDs of an earlier one (etcd derives both from peer URLs and token only;
//!   `initial_cluster`).
//!
//! The files: `report` (what a peer's agent says about its node), `observations` (everything the
//! decision looks at), `action` (what it decides, and why it waits), `initial_cluster` (the
//! `--initial-cluster` and token of a new cluster), `decision` (the entry: the data dir first,
//! then how many clusters answer), `new_cluster` (no cluster answers: plan one and form it),
//! `evidence` (what the peers' agents say, and what it allows a new cluster), `join` (one
//! cluster answers: join it, adopt this node's unstarted entry, replace its stale one, or start
//! as a late initial member).

mod action;
mod decision;
mod evidence;
mod initial_cluster;
mod join;
mod new_cluster;
mod observations;
mod report;

pub(crate) use action::{Action, WaitReason};
pub(crate) use decision::decide;
pub(crate) use initial_cluster::InitialCluster;
pub(crate) use observations::{AgentAnswer, Observations};
pub(crate) use report::AgentReport;

/// What the table tests (here and in `agent::observe`) build their observations from.
#[cfg(test)]
pub(crate) mod fixtures;

//! A cluster as one peer's etcd showed it: `etcd::client` fills these in, `decide` reads them.

/// One member as a peer's MemberList shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberView {
    pub id: u64,
    /// Empty until the member has started and published itself.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl MemberView {
    /// Has published its name and client URLs, i.e. has run with its data.
    pub(crate) fn started(&self) -> bool {
        !self.name.is_empty() && !self.client_urls.is_empty()
    }
}

/// What a peer's etcd said about its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterView {
    pub endpoint: String,
    pub cluster_id: u64,
    /// The answering member.
    pub member_id: u64,
    /// 0 when it knows no leader.
    pub leader: u64,
    pub is_learner: bool,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    Cluster(ClusterView),
    /// Not reachable, TLS refused, not etcd, ...: the reason, for logs.
    NoAnswer(String),
}

//! What `doctor` looks at, gathered from this node: its identity record, every member's etcd
//! (member list, status, alarms) and agent (its data, its clock, whom the leader's agent sees
//! down since when), this node's certificates and those the other members serve, discovery and
//! the snapshot store. Independent questions are asked at once and every one is bounded
//! (`client::PROBE_TIMEOUT`, the agent endpoint's `IO_TIMEOUT`, the timeouts below), so a dead
//! member or a hung DNS server costs seconds. Without a quorum the membership comes from the
//! identity record, as for `recover::quorum_report`.

use super::endpoint::{self, Timing};
use super::local_endpoint;
use crate::config::{Config, TlsMode};
use crate::decide::bootstrap::AgentReport;
use crate::decide::doctor::{self as d, DoctorInput};
use crate::decide::recover::AgentSeen;
use crate::discovery;
use crate::etcd::client;
use crate::etcd::datadir::{self, Record};
use crate::model::cluster::{Answer, ClusterView, MemberView};
use crate::model::peer::Peer;
use crate::model::tls::CertFacts;
use crate::model::url::EtcdUrl;
use crate::tls::{self, CertKind, ClientMaterial};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// One read of discovery (SRV lookups are 3 s x 2 attempts each; a static list resolves names).
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// What the other members' agents answered, by peer URL.
type AgentAnswers = HashMap<String, Result<(AgentReport, Timing), String>>;

pub async fn observe(cfg: &Config) -> Result<DoctorInput> {
    let data_dir = &cfg.member.data_dir;
    let record = Record::load(data_dir)?.with_context(|| {
        format!(
            "this node has not been bootstrapped: there is no identity record at {} (`etcd-bootstrap run` writes it when it first starts); doctor checks a member, or a node that runs to become one",
            datadir::record_path(data_dir).display()
        )
    })?;
    let material = ClientMaterial::from_dir(&cfg.tls.dir).with_context(|| {
        format!(
            "reading the client certificate in tls.dir ({})",
            cfg.tls.dir.display()
        )
    })?;
    let peer_material = ClientMaterial::peer_from_dir(&cfg.tls.dir).ok();
    let my_id = record.member();

    let (snapshot, ((discovered, _), seen)) =
        tokio::join!(super::snapshots::last_snapshot(cfg), async {
            let mut first: Vec<String> = vec![local_endpoint(cfg)];
            first.extend(
                record
                    .members
                    .iter()
                    .filter(|m| u64::from_str_radix(&m.id, 16).ok() != my_id)
                    .filter_map(|m| m.client_urls.first().cloned()),
            );
            let (discovered, answers) =
                tokio::join!(read_discovery(cfg), client::probe_all(&first, &material));
            let mut answers: HashMap<String, Answer> = first.into_iter().zip(answers).collect();
            let seen = see_members(&record, &material, &mut answers, &discovered).await;
            (discovered, seen)
        });
    let Seen {
        cluster,
        members: views,
        from_record,
        answers,
    } = seen;

    // Who answers, and the URL each is asked at (this node's own member locally).
    let url_of = |m: &MemberView| -> Option<String> {
        if Some(m.id) == my_id {
            Some(local_endpoint(cfg))
        } else {
            m.client_urls.first().cloned()
        }
    };
    let reach: Vec<(bool, Option<String>)> = views
        .iter()
        .map(|m| match url_of(m).and_then(|u| answers.get(&u)) {
            Some(Answer::Cluster(v)) if cluster.is_none_or(|c| c == v.cluster_id) => (true, None),
            Some(Answer::Cluster(v)) => (
                false,
                Some(format!(
                    "answers as cluster {:x}, not {:x}",
                    v.cluster_id,
                    cluster.unwrap_or_default()
                )),
            ),
            Some(Answer::NoAnswer(why)) => (false, Some(why.clone())),
            None if m.client_urls.is_empty() => (false, Some("never started".into())),
            None => (false, Some("not asked".into())),
        })
        .collect();
    let up_urls: Vec<(u64, String)> = views
        .iter()
        .zip(&reach)
        .filter(|(_, (ok, _))| *ok)
        .filter_map(|(m, _)| Some((m.id, url_of(m)?)))
        .collect();

    let others: Vec<&MemberView> = views.iter().filter(|m| Some(m.id) != my_id).collect();
    let (statuses, alarms, agents, served) = tokio::join!(
        statuses(&up_urls, &material),
        alarms(&up_urls, &views, &material),
        ask_agents(cfg, &others, peer_material.as_ref()),
        served_certificates(&views, &reach, my_id, peer_material.as_ref()),
    );

    // Since when: the earliest any leader's agent (this node's own record included) noted.
    let mut down_since: BTreeMap<String, i64> = record.unreachable_since.clone();
    for (report, _) in agents.values().filter_map(|a| a.as_ref().ok()) {
        for (id, t) in &report.unreachable_since {
            let e = down_since.entry(id.clone()).or_insert(*t);
            *e = (*e).min(*t);
        }
    }

    let alarm_list = alarms.or_else(|e| {
        // The alarm list goes through raft (it needs a quorum); each member's status carries
        // the alarms it knows of too ("memberID:… alarm:NOSPACE").
        if statuses.is_empty() {
            return Err(e);
        }
        Ok(statuses
            .iter()
            .flat_map(|(id, s)| {
                s.errors.iter().filter_map(move |err| {
                    ["NOSPACE", "CORRUPT"]
                        .into_iter()
                        .find(|a| err.contains(&format!("alarm:{a}")))
                        .map(|a| (*id, a.to_string()))
                })
            })
            .map(|(id, alarm)| d::Alarm {
                member: name_of(&views, id),
                alarm,
            })
            .collect())
    });

    let members: Vec<d::Member> = views
        .iter()
        .zip(&reach)
        .map(|(m, (reachable, error))| {
            let peer_url = m.peer_urls.first().cloned().unwrap_or_default();
            let agent = agents
                .get(&peer_url)
                .and_then(|a| a.as_ref().ok())
                .filter(|(r, _)| r.cluster_name == cfg.cluster.name)
                .map(|(r, _)| AgentSeen {
                    has_data: r.has_data,
                    raft_index: r.raft_index,
                });
            d::Member {
                id: m.id,
                name: m.name.clone(),
                peer_url,
                client_url: m.client_urls.first().cloned(),
                is_learner: m.is_learner,
                is_self: Some(m.id) == my_id,
                reachable: *reachable,
                error: error.clone(),
                down_since: (!reachable)
                    .then(|| down_since.get(&format!("{:x}", m.id)).copied())
                    .flatten(),
                agent,
                db: statuses.get(&m.id).map(|s| s.db),
            }
        })
        .collect();

    let clocks: Vec<d::Clock> = others
        .iter()
        .map(|m| {
            let url = m.peer_urls.first().cloned().unwrap_or_default();
            let measured = match agents.get(&url) {
                None => Err("no agent to ask".to_string()),
                Some(Err(_)) => Err("its agent does not answer".to_string()),
                Some(Ok((r, timing))) => match r.now_unix_ms {
                    Some(t) => Ok(timing.offset_of(t)),
                    None => Err("its agent is an older version".to_string()),
                },
            };
            d::Clock {
                who: name_of(&views, m.id),
                measured,
            }
        })
        .collect();

    let srv_names: HashMap<String, String> = match &discovered {
        Some((_, Ok((peers, _)))) => peers
            .iter()
            .filter_map(|p| Some((p.peer_url.to_string(), p.dns_name.clone()?)))
            .collect(),
        _ => HashMap::new(),
    };
    let issuing = cfg.tls.mode != TlsMode::Files;
    let certificates = certificates(cfg, &views, my_id, &record, served, |peer_url: &str| {
        // The agents of the issuing modes put the SRV target name into the SANs
        // (`tls::Identity`); pre-issued files are checked for the addresses alone.
        srv_names.get(peer_url).filter(|_| issuing).cloned()
    });

    // Without a quorum: what the agents do about it by themselves.
    let voters: Vec<&d::Member> = members.iter().filter(|m| !m.is_learner).collect();
    let auto_recovery = if voters.iter().filter(|m| m.reachable).count() <= voters.len() / 2 {
        Some(super::auto_recover::would_do(cfg, &material).await)
    } else {
        None
    };
    Ok(DoctorInput {
        now: time::OffsetDateTime::now_utc().unix_timestamp(),
        local_index: record.raft_index,
        membership_from_record: from_record,
        members,
        certificates,
        renewal: match cfg.tls.mode {
            TlsMode::Files => d::Renewal::Files,
            _ => d::Renewal::Agent {
                heal_interval_secs: cfg.heal.interval.as_secs() as i64,
            },
        },
        alarms: alarm_list,
        quota: quota(cfg),
        revision: statuses
            .values()
            .map(|s| s.revision)
            .filter(|r| *r > 0)
            .max(),
        discovery: discovered.map(|(source, read)| d::DiscoverySeen {
            source,
            read: read.map(|(peers, unresolved)| {
                (
                    peers.iter().map(|p| p.peer_url.to_string()).collect(),
                    unresolved,
                )
            }),
        }),
        clocks,
        snapshot: snapshot.map(|s| d::SnapshotSeen {
            newest: match (s.error, s.id) {
                (Some(e), _) => Err(e),
                (None, None) => Ok(None),
                (None, Some(id)) => Ok(Some((id, s.age_seconds.unwrap_or(i64::MAX / 4)))),
            },
            untrusted: s.untrusted.into_iter().map(|u| (u.object, u.why)).collect(),
            deltas: s.delta.map(|d| d::DeltaSeen {
                interval_secs: d.delta_interval_seconds,
                behind: d.cluster_revision.map(|r| (r - d.last_revision).max(0)),
                base: d.base,
                segments: d.segments,
                events: d.events,
                newest_age: d.newest_segment_age_seconds,
            }),
            store: s.store,
            interval_secs: cfg
                .backup
                .as_ref()
                .map(|b| b.interval.as_secs() as i64)
                .unwrap_or_default(),
        }),
        tls_dir: cfg.tls.dir.display().to_string(),
        dead_member_policy: super::converge::dead_member_policy(cfg),
        auto_recovery,
        last_auto_recovery: super::auto_recover::last_recovery(&cfg.member.data_dir).map(|r| {
            (
                r,
                super::auto_recover::outcome_path(&cfg.member.data_dir)
                    .display()
                    .to_string(),
            )
        }),
        config_rejected: crate::etcd::datadir::config_rejected(&cfg.member.data_dir),
    })
}

/// `quota-backend-bytes` as etcd applies it: unset or 0 is the default, negative turns quotas
/// off.
fn quota(cfg: &Config) -> Option<i64> {
    match cfg
        .etcd
        .flags
        .get("quota-backend-bytes")
        .and_then(|v| v.trim().parse::<i64>().ok())
    {
        None | Some(0) => Some(d::DEFAULT_QUOTA_BYTES),
        Some(q) if q < 0 => None,
        Some(q) => Some(q),
    }
}

fn name_of(views: &[MemberView], id: u64) -> String {
    views
        .iter()
        .find(|m| m.id == id && !m.name.is_empty())
        .map(|m| m.name.clone())
        .unwrap_or_else(|| format!("{id:x}"))
}

/// Discovery, when it lists peers: its description, and the peers it found with the targets
/// that did not resolve, or why it could not be read.
type DiscoveryRead = Option<(String, Result<(Vec<Peer>, Vec<String>), String>)>;

/// Discovery read once, and every client endpoint it names (for a node that was never a
/// member to find the cluster through).
async fn read_discovery(cfg: &Config) -> (DiscoveryRead, Vec<String>) {
    let d = &cfg.discovery;
    if d.srv_domain.is_none() && d.peers.is_empty() {
        return (None, vec![]);
    }
    let sources = match discovery::sources(cfg) {
        Ok(s) => s,
        Err(e) => return (Some(("discovery".into(), Err(format!("{e:#}")))), vec![]),
    };
    let describe = sources
        .iter()
        .map(|s| s.describe())
        .filter(|s| s != "discovery.seeds")
        .collect::<Vec<_>>()
        .join(" + ");
    match tokio::time::timeout(DISCOVERY_TIMEOUT, discovery::read_all(&sources)).await {
        Err(_) => (
            Some((
                describe,
                Err(format!("no answer within {DISCOVERY_TIMEOUT:?}")),
            )),
            vec![],
        ),
        Ok(Err(e)) => (Some((describe, Err(format!("{e:#}")))), vec![]),
        Ok(Ok(found)) => {
            let endpoints = found.endpoints_except("");
            (
                Some((describe, Ok((found.peers, found.unresolved)))),
                endpoints,
            )
        }
    }
}

struct Seen {
    cluster: Option<u64>,
    members: Vec<MemberView>,
    from_record: bool,
    answers: HashMap<String, Answer>,
}

/// The membership: the member list of a member that answers as this node's cluster (the
/// leader's when it answered), else the last-known one of the identity record. Members not
/// asked yet are probed too.
async fn see_members(
    record: &Record,
    material: &ClientMaterial,
    answers: &mut HashMap<String, Answer>,
    discovered: &(DiscoveryRead, Vec<String>),
) -> Seen {
    let mut cluster = record.cluster();
    let pick = |answers: &HashMap<String, Answer>, cluster: Option<u64>| -> Option<ClusterView> {
        answers
            .values()
            .filter_map(|a| match a {
                Answer::Cluster(v)
                    if !v.members.is_empty() && cluster.is_none_or(|c| c == v.cluster_id) =>
                {
                    Some(v.clone())
                }
                _ => None,
            })
            .max_by_key(|v| (v.leader != 0 && v.leader == v.member_id, v.leader != 0))
    };
    let mut live = pick(answers, cluster);
    if live.is_none() && record.members.is_empty() {
        // A node that never became a member (a joiner that waits): the cluster is where
        // discovery points.
        let more: Vec<String> = discovered
            .1
            .iter()
            .filter(|e| !answers.contains_key(*e))
            .cloned()
            .collect();
        let got = client::probe_all(&more, material).await;
        answers.extend(more.into_iter().zip(got));
        live = pick(answers, cluster);
    }
    let (members, from_record) = match &live {
        Some(v) => {
            cluster = Some(v.cluster_id);
            (v.members.clone(), false)
        }
        None => (
            record
                .members
                .iter()
                .filter_map(|m| {
                    Some(MemberView {
                        id: u64::from_str_radix(&m.id, 16).ok()?,
                        name: m.name.clone(),
                        peer_urls: m.peer_urls.clone(),
                        client_urls: m.client_urls.clone(),
                        // The record does not say; a learner counted as a voter only makes
                        // the quorum look harder to reach.
                        is_learner: false,
                    })
                })
                .collect(),
            true,
        ),
    };
    let my_id = record.member();
    let missing: Vec<String> = members
        .iter()
        .filter(|m| Some(m.id) != my_id)
        .filter_map(|m| m.client_urls.first().cloned())
        .filter(|u| !answers.contains_key(u))
        .collect();
    let got = client::probe_all(&missing, material).await;
    answers.extend(missing.into_iter().zip(got));
    Seen {
        cluster,
        members,
        from_record,
        answers: std::mem::take(answers),
    }
}

/// What one member's Maintenance.Status says.
struct StatusSeen {
    db: d::Db,
    /// "etcdserver: no leader", alarms ("memberID:… alarm:NOSPACE").
    errors: Vec<String>,
    /// The header's revision.
    revision: i64,
}

/// Maintenance.Status of each member that answers: its DB size and in use, and its errors.
async fn statuses(up: &[(u64, String)], material: &ClientMaterial) -> HashMap<u64, StatusSeen> {
    let mut set = tokio::task::JoinSet::new();
    for (id, url) in up {
        let (id, url, m) = (*id, url.clone(), material.clone());
        set.spawn(async move { (id, client::status(&url, &m).await) });
    }
    let mut out = HashMap::new();
    while let Some(r) = set.join_next().await {
        if let Ok((id, Ok(s))) = r {
            out.insert(
                id,
                StatusSeen {
                    db: d::Db {
                        size: s.db_size(),
                        in_use: s.raft_used_db_size(),
                    },
                    errors: s.errors().to_vec(),
                    revision: s.header().map(|h| h.revision()).unwrap_or_default(),
                },
            );
        }
    }
    out
}

/// etcd's alarm list, asked of the members that answer (it goes through raft: it needs a
/// quorum).
async fn alarms(
    up: &[(u64, String)],
    views: &[MemberView],
    material: &ClientMaterial,
) -> Result<Vec<d::Alarm>, String> {
    let voters: Vec<String> = up
        .iter()
        .filter(|(id, _)| views.iter().any(|m| m.id == *id && !m.is_learner))
        .map(|(_, u)| u.clone())
        .collect();
    if voters.is_empty() {
        return Err("no voting member answers".into());
    }
    let list = async {
        let mut c = client::connect(&voters, material, client::PROBE_TIMEOUT).await?;
        client::bounded(
            "Maintenance.Alarm (list)",
            client::PROBE_TIMEOUT,
            c.alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None,
            ),
        )
        .await
    };
    let resp = list.await.map_err(|e| format!("{e:#}"))?;
    Ok(resp
        .alarms()
        .iter()
        .filter(|a| a.alarm() != etcd_client::AlarmType::None)
        .map(|a| d::Alarm {
            member: name_of(views, a.member_id()),
            alarm: a.alarm().as_str_name().to_string(),
        })
        .collect())
}

/// Every other member's agent (at its peer address, `member.agent_port`), timed.
async fn ask_agents(
    cfg: &Config,
    others: &[&MemberView],
    material: Option<&ClientMaterial>,
) -> AgentAnswers {
    let Some(material) = material else {
        return HashMap::new();
    };
    let mut set = tokio::task::JoinSet::new();
    for m in others {
        let Some(url) = m.peer_urls.first().cloned() else {
            continue;
        };
        let Some(ip) = EtcdUrl::parse(&url).ok().and_then(|u| u.ip()) else {
            continue;
        };
        let addr = SocketAddr::new(ip, cfg.member.agent_port);
        let m = material.clone();
        set.spawn(async move {
            let r = endpoint::ask_timed(addr, &m)
                .await
                .map_err(|e| format!("{e:#}"));
            (url, r)
        });
    }
    let mut out = HashMap::new();
    while let Some(r) = set.join_next().await {
        if let Ok((url, answer)) = r {
            out.insert(url, answer);
        }
    }
    out
}

/// A certificate another member serves: whose, which port's, at which address.
struct Served {
    member: String,
    port_kind: &'static str,
    url: String,
    host: String,
    facts: Result<CertFacts, String>,
}

/// The certificates the other members that answer serve on their peer and client ports.
async fn served_certificates(
    views: &[MemberView],
    reach: &[(bool, Option<String>)],
    my_id: Option<u64>,
    material: Option<&ClientMaterial>,
) -> Vec<Served> {
    let Some(material) = material else {
        return vec![];
    };
    let mut set = tokio::task::JoinSet::new();
    for (m, (reachable, _)) in views.iter().zip(reach) {
        if !reachable || Some(m.id) == my_id {
            continue;
        }
        let name = if m.name.is_empty() {
            format!("{:x}", m.id)
        } else {
            m.name.clone()
        };
        for (kind, url) in [
            ("peer", m.peer_urls.first()),
            ("client", m.client_urls.first()),
        ] {
            let Some(url) = url.cloned() else { continue };
            // etcd-bootstrap's URLs carry IPs; a member added by hand under a name is left out
            // (resolving it here would need another resolver than discovery's).
            let Some(parsed) = EtcdUrl::parse(&url).ok() else {
                continue;
            };
            let Some(ip) = parsed.ip() else { continue };
            let addr = SocketAddr::new(ip, parsed.port);
            let (name, m) = (name.clone(), material.clone());
            set.spawn(async move {
                let facts = tls::served::fetch(addr, &m, client::PROBE_TIMEOUT)
                    .await
                    .map_err(|e| format!("{e:#}"));
                Served {
                    member: name,
                    port_kind: kind,
                    url,
                    host: ip.to_string(),
                    facts,
                }
            });
        }
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(s) = r {
            out.push(s);
        }
    }
    out.sort_by(|a, b| (&a.member, a.port_kind).cmp(&(&b.member, b.port_kind)));
    out
}

/// This node's certificate files and those served by the others, with what each must cover.
fn certificates(
    cfg: &Config,
    views: &[MemberView],
    my_id: Option<u64>,
    record: &Record,
    served: Vec<Served>,
    srv_name: impl Fn(&str) -> Option<String>,
) -> Vec<d::Cert> {
    // This member's URLs: its entry in the membership, else its record or etcd's environment.
    let me = views.iter().find(|m| Some(m.id) == my_id);
    let my_peer_url = me
        .and_then(|m| m.peer_urls.first().cloned())
        .or_else(|| record.peer_url.clone())
        .or_else(|| super::env_value(cfg, "ETCD_INITIAL_ADVERTISE_PEER_URLS"));
    let my_client_url = me
        .and_then(|m| m.client_urls.first().cloned())
        .or_else(|| super::env_value(cfg, "ETCD_ADVERTISE_CLIENT_URLS"));
    let host = |url: &Option<String>| -> Option<String> {
        let u = EtcdUrl::parse(url.as_deref()?).ok()?;
        Some(match u.ip() {
            Some(ip) => ip.to_string(),
            None => u.host.to_string(),
        })
    };
    let my_srv_name = my_peer_url.as_deref().and_then(&srv_name);
    let mut out: Vec<d::Cert> = tls::on_disk(cfg)
        .into_iter()
        .map(|f| {
            let must_cover: Vec<String> = match f.kind {
                // etcd-bootstrap itself talks to the local member at 127.0.0.1.
                Some(CertKind::Server) => host(&my_client_url)
                    .into_iter()
                    .chain([IpAddr::from([127, 0, 0, 1]).to_string()])
                    .chain(my_srv_name.clone())
                    .collect(),
                Some(CertKind::Peer) => host(&my_peer_url)
                    .into_iter()
                    .chain(my_srv_name.clone())
                    .collect(),
                _ => vec![],
            };
            d::Cert {
                what: format!("{} on this node", f.file),
                origin: match f.kind {
                    None => d::Origin::Ca,
                    // As in `tls.<stem>_cert` of `tls.mode = "files"`.
                    Some(k) => d::Origin::Local {
                        stem: k.profile_name().replace('-', "_"),
                    },
                },
                facts: f.facts,
                must_cover,
            }
        })
        .collect();
    for s in served {
        let peer_url = views
            .iter()
            .find(|m| m.client_urls.contains(&s.url) || m.peer_urls.contains(&s.url))
            .and_then(|m| m.peer_urls.first().cloned())
            .unwrap_or_default();
        out.push(d::Cert {
            what: format!(
                "the {} certificate {} serves at {}",
                s.port_kind, s.member, s.url
            ),
            origin: d::Origin::Served { member: s.member },
            facts: s.facts,
            must_cover: std::iter::once(s.host).chain(srv_name(&peer_url)).collect(),
        });
    }
    out
}

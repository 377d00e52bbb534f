//! The command line: parse, validate the configuration, dispatch, map errors to exit codes.

use crate::commands;
use crate::config::Config;
use crate::error::{exit_code_for, ConfigError, Reported};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `--version`: the crate version, and "+failpoints" when fail points are compiled in, so the
/// fault-injection tests can refuse a binary that would ignore them.
const VERSION: &str = if crate::failpoint::ENABLED {
    concat!(env!("CARGO_PKG_VERSION"), " +failpoints")
} else {
    env!("CARGO_PKG_VERSION")
};

/// Exit codes and environment, shown under every command's --help.
const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  a failure at run time (I/O, network, a check that failed); retrying may help
  2  a configuration or usage error (one line naming the key and where its value came from)
  3  refused: proceeding would be unsafe (e.g. two clusters answered); nothing was changed

Environment:
  ETCD_BOOTSTRAP_<SECTION>_<KEY>  set a config key, overriding the files, e.g.
                                  ETCD_BOOTSTRAP_HEAL_INTERVAL=30s sets heal.interval
  ETCD_BOOTSTRAP_LOG              log filter, comma-separated target=level directives
                                  (default: info), e.g. ETCD_BOOTSTRAP_LOG=debug";

/// `plan`'s exit codes: what the decision was.
const PLAN_AFTER_HELP: &str = "\
Exit codes:
  0  the decision was printed: this node would start, join, restart or wait
  1  observing failed (I/O, network)
  2  a configuration or usage error, or TLS material that does not load
  3  the decision is to refuse (the reason is printed); run would exit 3 too

Environment:
  ETCD_BOOTSTRAP_<SECTION>_<KEY>  set a config key, overriding the files
  ETCD_BOOTSTRAP_LOG              log filter (target=level directives; default: info)";

/// `check-config`'s exit codes.
const CHECK_AFTER_HELP: &str = "\
Checks everything that needs no network: every key, the peer set against cluster.size,
heal.interval against the agent unit's WatchdogSec, and the key material (PEM, the CA key
belongs to the CA certificate, certificates match their keys and chain to the CA). Warnings
(e.g. an even cluster.size) go to stderr; the effective configuration goes to stdout as TOML
that check-config reads back to the same.

Exit codes:
  0  the configuration is valid
  2  it is not (one line naming the key and where its value came from)

Environment:
  ETCD_BOOTSTRAP_<SECTION>_<KEY>  set a config key, overriding the files
  ETCD_BOOTSTRAP_LOG              log filter (target=level directives; default: info)";

/// `doctor`'s exit codes.
const DOCTOR_AFTER_HELP: &str = "\
Exit codes:
  0  all is well
  1  at least one check failed (each with its fix on stdout)
  2  a configuration or usage error

Environment:
  ETCD_BOOTSTRAP_<SECTION>_<KEY>  set a config key, overriding the files
  ETCD_BOOTSTRAP_LOG              log filter (target=level directives; default: info)";

#[derive(Debug, Parser)]
#[command(
    name = "etcd-bootstrap",
    version = VERSION,
    about = "Turns a freshly booted VM into a healthy, TLS-secured etcd member",
    after_help = AFTER_HELP
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArg {
    /// Config file [default: /etc/etcd-bootstrap/config.toml]; drop-ins are read from config.d/
    /// beside it; ETCD_BOOTSTRAP_<SECTION>_<KEY> variables override both.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Bootstrap or restart the local member, then keep it running and watched.
    #[command(after_help = AFTER_HELP)]
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Exit 0 as soon as the local member is healthy (for cloud-init runcmd).
        #[arg(long)]
        once: bool,
    },
    /// Dry run: observe, print the decision and the files it would write; change nothing.
    #[command(after_help = PLAN_AFTER_HELP)]
    Plan {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Members, leader, learners, raft index, DB size, health, certificate expiry.
    #[command(after_help = AFTER_HELP)]
    Status {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
        /// Client URLs to ask (default: this node's local client URL).
        #[arg(long, value_delimiter = ',')]
        endpoints: Vec<String>,
    },
    /// What is wrong and the fix, one line per check: quorum, unreachable members and since
    /// when, a dead member blocking joins, certificates near expiry or not covering their
    /// member's addresses, NOSPACE and fragmentation, discovery against the membership, clock
    /// skew, the last snapshot's age. Exit 0 when all is well, 1 otherwise.
    #[command(after_help = DOCTOR_AFTER_HELP)]
    Doctor {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Remove the local member from the cluster, stop etcd, move its data aside.
    #[command(after_help = AFTER_HELP)]
    Leave {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// A majority of the members is lost for good: start this surviving member alone (etcd's
    /// --force-new-cluster, once), keeping every key it has; replacements then join it. Refused
    /// while a quorum can still form or another member's data is further ahead.
    #[command(after_help = AFTER_HELP)]
    Recover {
        #[command(flatten)]
        config: ConfigArg,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Put every member back to one snapshot of the store, from this one node, also when etcd
    /// has lost its quorum: the request goes into the store and every member's agent carries
    /// it out (old data moved aside, the same snapshot, a new cluster ID).
    #[command(after_help = AFTER_HELP)]
    Restore {
        #[command(flatten)]
        config: ConfigArg,
        /// A snapshot id (see `snapshot list`) or `latest`.
        #[arg(long, value_name = "ID|latest")]
        from: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// How long to show the members' progress before returning (the agents go on).
        #[arg(long, default_value = "10m", value_parser = parse_timeout)]
        timeout: Duration,
    },
    /// Defragment now, one member at a time, followers first, the leader last after moving
    /// leadership away: the members maintenance.defrag_when picks, or every member with --all.
    #[command(after_help = AFTER_HELP)]
    Defrag {
        #[command(flatten)]
        config: ConfigArg,
        /// Every member, whatever maintenance.defrag_when says.
        #[arg(long)]
        all: bool,
    },
    /// Check the configuration offline (keys, peer set, key material) and print the effective
    /// result.
    #[command(after_help = CHECK_AFTER_HELP)]
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Snapshots in the store of [backup]: take one now, list them, check one.
    #[command(after_help = AFTER_HELP)]
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Certificate authority for tls.mode = "local-ca".
    #[command(after_help = AFTER_HELP)]
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Take a verified snapshot now, through the local member (or --endpoint); prints its id.
    #[command(after_help = AFTER_HELP)]
    Save {
        #[command(flatten)]
        config: ConfigArg,
        /// A voting member's client URL instead of the local member.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// List the snapshots the store holds for cluster.name, newest first.
    #[command(after_help = AFTER_HELP)]
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Download one, check both hashes, decrypt it and restore it into a scratch dir.
    #[command(after_help = AFTER_HELP)]
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// A snapshot id or `latest`.
        #[arg(default_value = "latest")]
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Make ca.crt and ca.key (0600) in DIR.
    #[command(after_help = AFTER_HELP)]
    Init {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value = "etcd-bootstrap CA")]
        common_name: String,
        /// How long the CA is valid, in days (d) or hours (h); at most 9125d (25 years).
        #[arg(long, default_value = "3650d", value_parser = parse_ca_validity)]
        validity: Duration,
    },
}

/// `restore --timeout`: s, m, h or d, as in the config.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    crate::util::time::parse_duration(text, crate::util::time::Units::Coarse)
}

/// The longest `ca init --validity`: long-lived enough for a fleet's lifetime, short enough that
/// a typo ("200years", "36500d") does not make a CA that outlives every key algorithm it uses.
pub(crate) const CA_VALIDITY_MAX: Duration = Duration::from_secs(9125 * 86_400);

fn parse_ca_validity(text: &str) -> Result<Duration, String> {
    let d = crate::util::time::parse_duration(text, crate::util::time::Units::Coarse)?;
    if d < Duration::from_secs(86_400) {
        return Err(format!("{text:?} is shorter than a day"));
    }
    if d > CA_VALIDITY_MAX {
        return Err(format!("{text:?} is longer than 9125d (25 years)"));
    }
    Ok(d)
}

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    const DEFAULT: &str = "info,h2=warn,tonic=warn,hyper=warn,tower=warn,hickory_resolver=warn,hickory_proto=warn,hickory_net=warn";
    // `target=level` directives (no span or field filters: those need a regex engine, which
    // would cost the binary about 0.5 MiB).
    let filter = std::env::var("ETCD_BOOTSTRAP_LOG")
        .ok()
        .and_then(|f| match f.parse::<tracing_subscriber::filter::Targets>() {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("ETCD_BOOTSTRAP_LOG={f:?} is not a list of target=level directives ({e}); using the default");
                None
            }
        })
        .unwrap_or_else(|| DEFAULT.parse().expect("the default filter parses"));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_target(false),
        )
        .with(filter)
        .try_init();
}

fn load(arg: &ConfigArg) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    Config::load(arg.config.as_deref(), &env)
}

/// `status` and `doctor` with a configuration that does not load: what a running agent does
/// with it at `systemctl reload` (it refuses it and keeps the one it has), on stdout, before the
/// error (exit 2).
fn rejected_line(e: &ConfigError, doctor: bool) -> String {
    let why = crate::agent::reload::one_line(&e.to_string());
    if doctor {
        format!("FAIL config: config rejected: {why} -> fix: correct the configuration; a running agent refuses it at `systemctl reload` and keeps the one it last accepted")
    } else {
        format!("config rejected: {why} (a running agent refuses it at reload and keeps the configuration it last accepted)")
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging();
    crate::failpoint::warn_if_unavailable();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<Reported>().is_some() {
                eprintln!("{e}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(exit_code_for(&e))
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config, once } => {
            let source = commands::run::ConfigSource {
                path: config.config.clone(),
                env: std::env::vars().collect(),
            };
            commands::run::run(load(&config)?, once, source).await
        }
        Command::Plan { config } => commands::plan::plan(load(&config)?).await,
        Command::Status {
            config,
            output,
            endpoints,
        } => {
            let cfg = load(&config).inspect_err(|e| println!("{}", rejected_line(e, false)))?;
            commands::status::status(&cfg, &endpoints, matches!(output, Output::Json)).await
        }
        Command::Doctor { config, output } => {
            let cfg = load(&config).inspect_err(|e| println!("{}", rejected_line(e, true)))?;
            commands::doctor::doctor(&cfg, matches!(output, Output::Json)).await
        }
        Command::Leave { config } => commands::leave::leave(load(&config)?).await,
        Command::Defrag { config, all } => commands::defrag::defrag(load(&config)?, all).await,
        Command::Recover { config, yes } => commands::recover::recover(load(&config)?, yes).await,
        Command::Restore {
            config,
            from,
            yes,
            timeout,
        } => commands::restore::restore(load(&config)?, &from, yes, timeout).await,
        Command::CheckConfig { config } => {
            commands::check_config::check_config(&load(&config)?).await
        }
        Command::Snapshot { command } => match command {
            SnapshotCommand::Save { config, endpoint } => {
                commands::snapshot::save(&load(&config)?, endpoint).await
            }
            SnapshotCommand::List { config, output } => {
                commands::snapshot::list(&load(&config)?, matches!(output, Output::Json)).await
            }
            SnapshotCommand::Verify { config, id, output } => {
                commands::snapshot::verify(&load(&config)?, &id, matches!(output, Output::Json))
                    .await
            }
        },
        Command::Ca {
            command:
                CaCommand::Init {
                    out,
                    common_name,
                    validity,
                },
        } => {
            let (cert, key) = crate::tls::ca::init(&out, &common_name, validity)?;
            println!("wrote {} and {} (0600)", cert.display(), key.display());
            println!("keep the key safe: with tls.mode = \"local-ca\" every node that holds it can sign certificates");
            Ok(())
        }
    }
}

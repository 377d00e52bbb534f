//! The binary's command-line contract, driven as a user drives it: exit codes, one-line errors
//! naming the key and its source, nothing written on bad input.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_etcd-bootstrap");

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("ETCD_BOOTSTRAP_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let out = run(
            &[
                "ca",
                "init",
                "--out",
                dir.path().join("ca").to_str().unwrap(),
            ],
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Setup { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A valid config with `extra` appended (later keys in a drop-in override it).
    fn config(&self, extra: &str) -> PathBuf {
        let d = self.dir.path().display();
        let text = format!(
            r#"[cluster]
name = "t"
[member]
data_dir = "{d}/data"
[discovery]
peers = ["a=https://10.9.9.1:2380"]
timeout = "2s"
[tls]
dir = "{d}/pki"
ca_cert = "{d}/ca/ca.crt"
ca_key = "{d}/ca/ca.key"
[etcd]
binary = "{d}/no-etcd-here"
service_manager = "process"
env_file = "{d}/etcd.env"
unit_path = "{d}/etcd.service"
"#
        );
        let p = self.path("config.toml");
        std::fs::write(&p, text).unwrap();
        if !extra.is_empty() {
            std::fs::create_dir_all(self.path("config.d")).unwrap();
            std::fs::write(self.path("config.d/50-test.toml"), extra).unwrap();
        }
        p
    }

    /// Nothing but the inputs in the directory.
    fn assert_nothing_written(&self) {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.retain(|n| n != "config.d" && n != "fixtures");
        assert_eq!(
            names,
            vec!["ca", "config.toml"],
            "files were written on bad input"
        );
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_config_prints_the_effective_config() {
    let s = Setup::new();
    let cfg = s.config("[member]\nclient_port = 12379\n");
    let out = run(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[("ETCD_BOOTSTRAP_HEAL_INTERVAL", "30s")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("client_port = 12379"),
        "drop-in not applied: {text}"
    );
    assert!(
        text.contains("interval = \"30s\""),
        "env override not applied: {text}"
    );
    assert!(
        text.contains("peers = [\"a=https://10.9.9.1:2380\"]"),
        "{text}"
    );
    assert!(text.contains("50-test.toml"), "drop-in not listed: {text}");
}

/// One bad input of the corpus: a drop-in (`{d}` stands for the test's directory), environment
/// overrides, the key the one-line message must name (in backquotes), where the value came from,
/// the commands that must refuse it, and words the message must hold besides.
struct Bad {
    dropin: &'static str,
    env: &'static [(&'static str, &'static str)],
    key: &'static str,
    source: &'static str,
    cmds: &'static [&'static str],
    says: &'static str,
}

/// Every command that loads the config.
const ALL: &[&str] = &["check-config", "run", "plan"];
const DROPIN: &str = "50-test.toml";

const fn bad(dropin: &'static str, key: &'static str) -> Bad {
    Bad {
        dropin,
        env: &[],
        key,
        source: DROPIN,
        cmds: ALL,
        says: "",
    }
}

const fn bad_env(env: &'static [(&'static str, &'static str)], key: &'static str) -> Bad {
    Bad {
        dropin: "",
        env,
        key,
        source: env[0].0,
        cmds: ALL,
        says: "",
    }
}

/// The bad-input corpus: malformed TOML, unknown keys and sections, wrong types, bad values,
/// URLs and durations, missing, unreadable, non-PEM and mismatched CA files, bad environment
/// overrides. ("SRV answers pointing nowhere" needs a DNS server: tests/lab_campaign.rs.)
const CORPUS: &[Bad] = &[
    // Malformed TOML.
    Bad {
        source: "50-test.toml:2",
        ..bad("[member]\nname = \n", "(syntax)")
    },
    Bad {
        source: "50-test.toml:1",
        ..bad("[member\n", "(syntax)")
    },
    Bad {
        source: "50-test.toml:3",
        ..bad("[cluster]\nname = \"a\"\nname = \"b\"\n", "(syntax)")
    },
    Bad {
        source: "50-test.toml:2",
        ..bad("[tls]\nmode = \"local-ca\n", "(syntax)")
    },
    // Unknown keys and sections.
    bad("[member]\nbogus = 1\n", "member.bogus"),
    bad("[tls]\nmodee = \"local-ca\"\n", "tls.modee"),
    bad("[bogus]\nx = 1\n", "bogus"),
    // Wrong types.
    bad("[member]\nclient_port = \"2379\"\n", "member.client_port"),
    bad("[cluster]\nsize = \"3\"\n", "cluster.size"),
    bad("[heal]\nenabled = \"yes\"\n", "heal.enabled"),
    bad("cluster = 5\n", "cluster"),
    // Bad values.
    bad("[cluster]\nname = \"\"\n", "cluster.name"),
    bad("[cluster]\nsize = 16\n", "cluster.size"),
    bad("[member]\npeer_port = 0\n", "member.peer_port"),
    bad("[member]\nname = \"a b\"\n", "member.name"),
    bad(
        "[member]\nadvertise_address = \"not-an-ip\"\n",
        "member.advertise_address",
    ),
    bad(
        "[member]\ndata_dir = \"relative/path\"\n",
        "member.data_dir",
    ),
    bad("[tls]\nmode = \"magic\"\n", "tls.mode"),
    bad(
        "[etcd]\nservice_manager = \"upstart\"\n",
        "etcd.service_manager",
    ),
    bad("[etcd]\nbinary = \"\"\n", "etcd.binary"),
    bad(
        "[discovery]\nnameservers = [\"not-an-ip\"]\n",
        "discovery.nameservers",
    ),
    bad(
        "[discovery]\npeers = []\nsrv_domain = \"lab..test\"\n",
        "discovery.srv_domain",
    ),
    Bad {
        source: "default",
        ..bad("[member]\nclient_port = 2380\n", "member.peer_port")
    },
    Bad {
        source: "default",
        ..bad("[discovery]\npeers = []\n", "discovery.srv_domain")
    },
    // Bad URLs.
    bad(
        "[discovery]\npeers = [\"a=https://10.9.9.1:2380/\"]\n",
        "discovery.peers",
    ),
    bad("[discovery]\npeers = [\"noequals\"]\n", "discovery.peers"),
    bad("[discovery]\npeers = [\"a=http//x\"]\n", "discovery.peers"),
    bad(
        "[discovery]\npeers = [\"a=https://10.0.0.1:99999\"]\n",
        "discovery.peers",
    ),
    bad("[discovery]\nseeds = [\"ftp://x\"]\n", "discovery.seeds"),
    // Bad durations.
    bad("[discovery]\ntimeout = \"forever\"\n", "discovery.timeout"),
    bad("[discovery]\ntimeout = \"-1s\"\n", "discovery.timeout"),
    bad("[heal]\ninterval = \"0s\"\n", "heal.interval"),
    bad(
        "[heal]\nremove_dead_after = \"x\"\n",
        "heal.remove_dead_after",
    ),
    // CA files: missing, unreadable (a directory), not PEM, a key of another CA.
    bad("[tls]\nca_key = \"/nonexistent/ca.key\"\n", "tls.ca_key"),
    bad(
        "[tls]\nca_cert = \"{d}/fixtures/nope.crt\"\n",
        "tls.ca_cert",
    ),
    Bad {
        source: "{d}/ca",
        says: "not a regular file",
        ..bad("[tls]\nca_cert = \"{d}/ca\"\n", "tls.ca_cert")
    },
    Bad {
        source: "junk.pem",
        ..bad(
            "[tls]\nca_cert = \"{d}/fixtures/junk.pem\"\n",
            "tls.ca_cert",
        )
    },
    Bad {
        source: "junk.pem",
        ..bad("[tls]\nca_key = \"{d}/fixtures/junk.pem\"\n", "tls.ca_key")
    },
    Bad {
        source: "fixtures/ca2/ca.key",
        ..bad(
            "[tls]\nca_key = \"{d}/fixtures/ca2/ca.key\"\n",
            "tls.ca_key",
        )
    },
    Bad {
        source: "fixtures/ca2/ca.crt",
        ..bad(
            "[tls]\nca_cert = \"{d}/fixtures/ca2/ca.crt\"\n",
            "tls.ca_key",
        )
    },
    // tls.mode = "files": pre-issued material that fails a check (`{F}` = a files-mode [tls]
    // whose every certificate and key is the fixture CA's own pair).
    Bad {
        source: "junk.pem",
        ..bad(
            "{F}server_cert = \"{d}/fixtures/junk.pem\"\n",
            "tls.server_cert",
        )
    },
    Bad {
        source: "{d}/ca/ca.key",
        ..bad("{F}server_key = \"{d}/ca/ca.key\"\n", "tls.server_key")
    },
    Bad {
        source: "fixtures/ca2/ca.crt",
        ..bad("{F}", "tls.server_cert")
    },
    Bad {
        source: "fixtures/ca2/ca.crt",
        ..bad(
            "{F}sha256_pins = [\"ca.crt=0000000000000000000000000000000000000000000000000000000000000000\"]\n",
            "tls.sha256_pins",
        )
    },
    bad("{F}client_cert = \"{d}/fixtures/nope.crt\"\n", "tls.client_cert"),
    bad(
        "{F}client_key = \"http://10.9.9.9/client.key\"\n",
        "tls.client_key",
    ),
    bad("[tls]\nmode = \"files\"\nca_key = \"\"\n", "tls.server_cert"),
    // etcd installation.
    bad(
        "[etcd]\ndownload_url = \"https://x.test/etcd-v3.5.30-linux-amd64.tar.gz\"\n",
        "etcd.sha256",
    ),
    // [backup]
    bad("[backup]\nurl = \"ftp://bucket/x\"\n", "backup.url"),
    bad("[backup]\nurl = \"s3://B_ad/x\"\n", "backup.url"),
    bad("[backup]\nurl = \"file://relative/dir\"\n", "backup.url"),
    bad(
        "[backup]\nurl = \"file:///var/backups/etcd\"\ns3_endpoint = \"https://10.0.0.5:8333\"\n",
        "backup.s3_endpoint",
    ),
    bad(
        "[backup]\nurl = \"s3://bucket/x\"\ns3_endpoint = \"http://10.0.0.5:8333\"\n",
        "backup.s3_endpoint",
    ),
    bad(
        "[backup]\nurl = \"file:///var/backups/etcd\"\nage_recipients = [\"age1notakey\"]\n",
        "backup.age_recipients",
    ),
    bad(
        "[backup]\nurl = \"file:///var/backups/etcd\"\nage_identity_file = \"{d}/fixtures/nope.txt\"\n",
        "backup.age_identity_file",
    ),
    bad("[backup]\nurl = \"file:///var/backups/etcd\"\nkeep_last = 0\n", "backup.keep_last"),
    bad("[backup]\nurl = \"file:///var/backups/etcd\"\ninterval = \"1s\"\n", "backup.interval"),
    bad("[backup]\nage_recipients = [\"age1x\"]\n", "backup.age_recipients"),
    bad("[backup]\nurl = \"file:///var/backups/etcd\"\ndelta_interval = \"500ms\"\n", "backup.delta_interval"),
    bad("[backup]\nurl = \"file:///var/backups/etcd\"\ndelta_interval = \"soon\"\n", "backup.delta_interval"),
    bad("[backup]\nurl = \"file:///var/backups/etcd\"\ndelta_max_bytes = \"8 MiB\"\n", "backup.delta_max_bytes"),
    bad("[backup]\nurl = \"file:///var/backups/etcd\"\ndelta_max_bytes = \"1KiB\"\n", "backup.delta_max_bytes"),
    bad("[backup]\nurl = \"file:///var/backups/etcd\"\ndelta_max_events = 0\n", "backup.delta_max_events"),
    bad(
        "[backup]\nurl = \"s3://bucket/x\"\ns3_credentials_file = \"{d}/fixtures/nope\"\n",
        "backup.s3_credentials_file",
    ),
    // [metrics]
    bad("[metrics]\nlisten = \"localhost:9479\"\n", "metrics.listen"),
    bad("[metrics]\nlisten = \"127.0.0.1:2379\"\n", "metrics.listen"),
    // Environment overrides.
    bad_env(
        &[("ETCD_BOOTSTRAP_MEMBER_PEER_PORT", "70000")],
        "member.peer_port",
    ),
    bad_env(
        &[("ETCD_BOOTSTRAP_METRICS_LISTEN", "0.0.0.0:2380")],
        "metrics.listen",
    ),
    Bad {
        source: "environment",
        ..bad_env(
            &[("ETCD_BOOTSTRAP_TLS_MODEE", "x")],
            "ETCD_BOOTSTRAP_TLS_MODEE",
        )
    },
    bad_env(&[("ETCD_BOOTSTRAP_CLUSTER_SIZE", "abc")], "cluster.size"),
    bad_env(
        &[("ETCD_BOOTSTRAP_DISCOVERY_TIMEOUT", "soon")],
        "discovery.timeout",
    ),
    bad_env(&[("ETCD_BOOTSTRAP_HEAL_ENABLED", "maybe")], "heal.enabled"),
    bad_env(
        &[("ETCD_BOOTSTRAP_DISCOVERY_PEERS", "bad")],
        "discovery.peers",
    ),
    bad_env(
        &[("ETCD_BOOTSTRAP_MEMBER_ADVERTISE_ADDRESS", "x")],
        "member.advertise_address",
    ),
    bad_env(
        &[("ETCD_BOOTSTRAP_TLS_CA_CERT", "/nonexistent/ca.crt")],
        "tls.ca_cert",
    ),
    // Control characters in values that reach etcd's environment file or unit.
    Bad {
        says: "control character",
        ..bad(
            "[member]\ndata_dir = \"{d}/data\\nETCD_FORCE_NEW_CLUSTER=true\"\n",
            "member.data_dir",
        )
    },
    Bad {
        says: "control character",
        ..bad(
            "[etcd]\nbinary = \"/bin/true\\nExecStartPre=/bin/sh -c id\"\n",
            "etcd.binary",
        )
    },
    Bad {
        says: "control character",
        ..bad(
            "[etcd.flags]\nheartbeat-interval = \"100\\r\"\n",
            "etcd.flags.heartbeat-interval",
        )
    },
    Bad {
        says: "control character",
        ..bad("[member]\nname = \"a\\u0000\"\n", "member.name")
    },
    Bad {
        says: "control character",
        ..bad_env(
            &[("ETCD_BOOTSTRAP_ETCD_ENV_FILE", "/tmp/x.env\nETCD_X=1")],
            "etcd.env_file",
        )
    },
    // Sizes: an endless or huge PEM file; a duration that would overflow a clock.
    Bad {
        says: "not a regular file",
        ..bad("[tls]\nca_key = \"/dev/zero\"\n", "tls.ca_key")
    },
    Bad {
        says: "larger than",
        ..bad("[tls]\nca_cert = \"{d}/fixtures/huge.pem\"\n", "tls.ca_cert")
    },
    Bad {
        says: "100 years",
        ..bad(
            "[discovery]\ntimeout = \"182500000000000d\"\n",
            "discovery.timeout",
        )
    },
    // A data dir that is not etcd's alone; files rewritten on every start that are inputs.
    bad("[member]\ndata_dir = \"/\"\n", "member.data_dir"),
    Bad {
        says: "not etcd's: ca/, config.d/, config.toml",
        ..bad("[member]\ndata_dir = \"{d}\"\n", "member.data_dir")
    },
    Bad {
        says: "the config file",
        ..bad("[etcd]\nenv_file = \"{d}/config.toml\"\n", "etcd.env_file")
    },
    Bad {
        says: "tls.ca_cert",
        ..bad("[etcd]\nenv_file = \"{d}/ca/ca.crt\"\n", "etcd.env_file")
    },
    Bad {
        says: "50-test.toml",
        ..bad(
            "[etcd]\nunit_path = \"{d}/config.d/50-test.toml\"\n",
            "etcd.unit_path",
        )
    },
    // Key material readable by group or others.
    Bad {
        says: "mode 0644",
        ..bad("[tls]\nca_key = \"{d}/fixtures/open.key\"\n", "tls.ca_key")
    },
    Bad {
        says: "mode 0644",
        ..bad(
            "[tls]\nmode = \"cfssl\"\nca_key = \"\"\ncfssl_url = \"https://10.9.9.9:8888\"\ncfssl_auth_key_file = \"{d}/fixtures/open.key\"\n",
            "tls.cfssl_auth_key_file",
        )
    },
    Bad {
        says: "mode 0644",
        ..bad(
            "[backup]\nurl = \"file:///var/backups/etcd\"\nage_identity_file = \"{d}/fixtures/open.key\"\n",
            "backup.age_identity_file",
        )
    },
    // Certificates renewed in their last third need several heal checks inside it.
    bad("[heal]\ninterval = \"40d\"\n", "heal.interval"),
    bad("[tls]\ncert_validity = \"2m\"\n", "tls.cert_validity"),
    // Issue 25: what check-config passed and plan refused, or what nothing caught.
    // A CA key in a form no signer reads (encrypted).
    Bad {
        source: "encrypted.key",
        says: "unencrypted",
        ..bad("[tls]\nca_key = \"{d}/fixtures/encrypted.key\"\n", "tls.ca_key")
    },
    // One member wanted, three listed: the first boot would refuse to pick.
    Bad {
        says: "lists 3 peers",
        ..bad(
            "[cluster]\nsize = 1\n[discovery]\npeers = [\"a=https://10.9.9.1:2380\", \"b=https://10.9.9.2:2380\", \"c=https://10.9.9.3:2380\"]\n",
            "cluster.size",
        )
    },
    // The agent unit's watchdog (WatchdogSec=2min) would kill the agent between two checks.
    Bad {
        says: "WatchdogSec",
        ..bad("[heal]\ninterval = \"5m\"\n", "heal.interval")
    },
    // Durations: s, m, h, d (ms for heal.interval); never months, years or words.
    Bad {
        says: "months",
        ..bad("[discovery]\ntimeout = \"10M\"\n", "discovery.timeout")
    },
    Bad {
        says: "\"mins\" is not a unit",
        ..bad("[discovery]\ntimeout = \"10mins\"\n", "discovery.timeout")
    },
    Bad {
        says: "\"minutes\" is not a unit",
        ..bad("[discovery]\ntimeout = \"10 minutes\"\n", "discovery.timeout")
    },
    Bad {
        says: "\"y\" is not a unit",
        ..bad("[tls]\ncert_validity = \"1y\"\n", "tls.cert_validity")
    },
    // Debian's etcd-server data under the data dir: the message says what to do about it.
    Bad {
        says: "etcd-server",
        ..bad(
            "[member]\ndata_dir = \"{d}/fixtures/debian\"\n",
            "member.data_dir",
        )
    },
];

/// Each bad input: exit 2, exactly one line on stderr naming the key (and where its value came
/// from), and nothing written: no data dir, pki dir, env file or unit.
#[test]
fn bad_input_exits_2_with_one_line_naming_the_key() {
    assert!(CORPUS.len() >= 30, "the corpus shrank: {}", CORPUS.len());
    for case in CORPUS {
        let s = Setup::new();
        let d = s.dir.path().display().to_string();
        let fx = s.path("fixtures");
        std::fs::create_dir_all(&fx).unwrap();
        std::fs::write(fx.join("junk.pem"), "this is not PEM\n").unwrap();
        // 0600 so that it passes as key material and fails for not being PEM.
        std::fs::set_permissions(fx.join("junk.pem"), Permissions::from_mode(0o600)).unwrap();
        std::fs::write(fx.join("open.key"), "a key left readable by all\n").unwrap();
        std::fs::write(
            fx.join("encrypted.key"),
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::set_permissions(fx.join("encrypted.key"), Permissions::from_mode(0o600)).unwrap();
        std::fs::create_dir_all(fx.join("debian/default/member/wal")).unwrap();
        std::fs::set_permissions(fx.join("open.key"), Permissions::from_mode(0o644)).unwrap();
        if case.dropin.contains("huge.pem") {
            std::fs::write(fx.join("huge.pem"), vec![b'#'; 2 << 20]).unwrap();
        }
        let out = run(
            &["ca", "init", "--out", fx.join("ca2").to_str().unwrap()],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        // The case's own lines after {F} override the files-mode defaults.
        let overridden: Vec<&str> = case
            .dropin
            .lines()
            .filter_map(|l| {
                l.split_once(" = ")
                    .map(|(k, _)| k.trim_start_matches("{F}"))
            })
            .collect();
        let mut files_tls = String::from("[tls]\nmode = \"files\"\nca_key = \"\"\n");
        let mut defaults = vec![("ca_cert".to_string(), "ca.crt")];
        for k in ["server", "peer", "client"] {
            defaults.push((format!("{k}_cert"), "ca.crt"));
            defaults.push((format!("{k}_key"), "ca.key"));
        }
        for (key, file) in defaults {
            if !overridden.contains(&key.as_str()) {
                files_tls += &format!("{key} = \"{{d}}/fixtures/ca2/{file}\"\n");
            }
        }
        let mut dropin = case.dropin.replace("{F}", &files_tls).replace("{d}", &d);
        if !dropin.contains("[etcd]") && case.key != "(syntax)" {
            // run checks etcd.binary before it reads certificate files: give it one that exists.
            dropin.push_str("[etcd]\nbinary = \"/bin/true\"\n");
        }
        let cfg = s.config(&dropin);
        let source = case.source.replace("{d}", &d);
        for cmd in case.cmds {
            let out = run(&[cmd, "--config", cfg.to_str().unwrap()], case.env);
            let err = stderr(&out);
            let what = format!("{cmd} with {:?} {:?}", case.dropin, case.env);
            assert_eq!(out.status.code(), Some(2), "{what}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{what}: not one line: {err}");
            assert!(
                err.contains(&format!("`{}`", case.key)),
                "{what}: {err} does not name {}",
                case.key
            );
            assert!(
                err.contains(&source),
                "{what}: {err} does not name {source}"
            );
            assert!(
                err.contains(case.says),
                "{what}: {err} does not say {:?}",
                case.says
            );
            s.assert_nothing_written();
        }
    }
}

/// A config file or drop-in that cannot be what it claims: an endless device, one too large, a
/// `*.toml` drop-in that is a directory or a dangling symlink. Exit 2, one line naming it.
#[test]
fn unreadable_config_files_are_refused_not_read_whole_or_skipped() {
    let s = Setup::new();
    let out = run(&["check-config", "--config", "/dev/zero"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("`--config`"), "{}", stderr(&out));
    assert!(stderr(&out).contains("larger than"), "{}", stderr(&out));
    let cfg = s.config("");
    let dropins = s.path("config.d");
    std::fs::create_dir_all(&dropins).unwrap();
    let huge = dropins.join("10-huge.toml");
    std::fs::write(&huge, vec![b'#'; 2 << 20]).unwrap();
    let dir = dropins.join("20-dir.toml");
    std::fs::create_dir(&dir).unwrap();
    let dangling = dropins.join("30-gone.toml");
    std::os::unix::fs::symlink(dropins.join("moved-away.toml"), &dangling).unwrap();
    // Drop-ins are all listed (and checked to be files) before any is read.
    for (path, says) in [
        (&dir, "is a directory"),
        (&dangling, "dangling symlink"),
        (&huge, "larger than"),
    ] {
        let out = run(&["check-config", "--config", cfg.to_str().unwrap()], &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
        assert!(err.contains("`config.d`"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(says), "{err}");
        // Fixed, the next one is reported.
        if path.is_dir() {
            std::fs::remove_dir(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }
    let out = run(&["check-config", "--config", cfg.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    s.assert_nothing_written();
}

#[test]
fn run_refuses_a_missing_etcd_binary_and_once_without_systemd() {
    let s = Setup::new();
    let cfg = s.config("");
    let out = run(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`etcd.binary`"), "{}", stderr(&out));
    let out = run(&["run", "--once", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`--once`"), "{}", stderr(&out));
    s.assert_nothing_written();
}

/// Under the shipped unit's sandbox a data dir outside its `ReadWritePaths=` is read-only: `run`
/// refuses at once (exit 2) naming the key and the drop-in that fixes it, before anything is
/// written. A read-only bind mount in a mount namespace of its own plays the sandbox.
#[test]
fn run_refuses_a_data_dir_its_sandbox_makes_read_only() {
    let s = Setup::new();
    let ro = s.path("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let cfg = s.config(&format!("[member]\ndata_dir = \"{}/data\"\n", ro.display()));
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind -o ro "$2" "$2" && exec "$0" run --config "$1""#)
        .arg(BIN)
        .arg(&cfg)
        .arg(&ro)
        .env_remove("ETCD_BOOTSTRAP_LOG")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("member.data_dir")
            && err.contains(&format!("ReadWritePaths={}", ro.display())),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&ro).unwrap().count(),
        0,
        "written into {}",
        ro.display()
    );
}

#[test]
fn unknown_flags_and_missing_config_are_usage_errors() {
    assert_eq!(run(&["run", "--bogus"], &[]).status.code(), Some(2));
    let out = run(
        &["check-config", "--config", "/nonexistent/config.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/config.toml"));
    assert_eq!(run(&["--help"], &[]).status.code(), Some(0));
}

/// Fail points are in the binary only with `--features failpoints` (the tests' build): `--version`
/// says which, and a binary without them warns, once, that it ignores ETCD_BOOTSTRAP_FAILPOINT.
#[test]
fn fail_points_only_with_the_feature() {
    let with = cfg!(feature = "failpoints");
    let out = run(&["--version"], &[]);
    let version = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        version.contains("+failpoints"),
        with,
        "--version: {version}"
    );
    let s = Setup::new();
    let cfg = s.config("");
    let out = run(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[("ETCD_BOOTSTRAP_FAILPOINT", "join:before-add")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let warnings = stderr(&out)
        .matches("this binary has no fail points")
        .count();
    assert_eq!(warnings, if with { 0 } else { 1 }, "{}", stderr(&out));
}

#[test]
fn ca_init_makes_a_private_key_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    let key = s.path("ca/ca.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = std::fs::read(&key).unwrap();
    let out = run(
        &["ca", "init", "--out", s.path("ca").to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(&key).unwrap(), before, "CA key overwritten");
}

/// The rendered etcd unit passes systemd's own checker.
#[test]
fn rendered_unit_passes_systemd_analyze_verify() {
    let s = Setup::new();
    // ExecStart must point at an executable file for `verify` to pass.
    let fake_etcd = s.path("etcd");
    std::fs::copy("/bin/true", &fake_etcd).unwrap();
    let cfg_path = s.config("");
    let text = std::fs::read_to_string(&cfg_path).unwrap().replace(
        &format!("{}/no-etcd-here", s.dir.path().display()),
        fake_etcd.to_str().unwrap(),
    );
    std::fs::write(&cfg_path, text).unwrap();
    let mut cfg = etcd_bootstrap::config::Config::load(Some(&cfg_path), &[]).unwrap();
    cfg.etcd.service_manager = etcd_bootstrap::config::ServiceManagerKind::Systemd;
    std::fs::write(&cfg.etcd.env_file, "ETCD_NAME=a\n").unwrap();
    let unit = s.path("etcd.service");
    let me = etcd_bootstrap::etcd::render::LocalMember {
        name: "a".into(),
        ip: "10.0.0.1".parse().unwrap(),
    };
    let spec = etcd_bootstrap::etcd::render::spec(
        &cfg,
        &me,
        &etcd_bootstrap::etcd::render::ClusterState::FromDisk,
    )
    .unwrap();
    let artifacts = etcd_bootstrap::service::manager(&cfg)
        .render(&spec)
        .unwrap();
    let rendered = artifacts
        .iter()
        .find(|a| a.path == cfg.etcd.unit_path)
        .expect("the systemd manager writes a unit");
    std::fs::write(&unit, &rendered.content).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (scripts/install-deps.sh installs systemd)");
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        stderr(&out)
    );
    let warnings = stderr(&out);
    assert!(!warnings.contains("Unknown key"), "{warnings}");
    assert!(
        !warnings.contains(&unit_name(&unit)),
        "warnings about the unit: {warnings}"
    );
}

fn unit_name(p: &Path) -> String {
    format!("{}:", p.display())
}

#[test]
fn restore_without_a_store_is_a_config_error() {
    let s = Setup::new();
    let cfg = s.config("");
    let out = run(
        &[
            "restore",
            "--from",
            "latest",
            "--yes",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("backup.url"), "{}", stderr(&out));
    s.assert_nothing_written();
    // `--from` is required.
    let out = run(
        &["restore", "--yes", "--config", cfg.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--from"), "{}", stderr(&out));
}

/// `doctor` on a node that was never made a member: one clear line naming the missing identity
/// record and what makes one, exit 1, nothing on stdout, nothing written.
#[test]
fn doctor_on_a_node_that_was_never_bootstrapped_says_so() {
    let s = Setup::new();
    let cfg = s.config("");
    for output in ["table", "json"] {
        let out = run(
            &[
                "doctor",
                "--config",
                cfg.to_str().unwrap(),
                "--output",
                output,
            ],
            &[],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{output}: {err}");
        assert!(
            err.contains("this node has not been bootstrapped")
                && err.contains(&format!("{}/data.identity.json", s.dir.path().display()))
                && err.contains("`etcd-bootstrap run`"),
            "{output}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(out.stdout.is_empty(), "{output}: stdout {:?}", out.stdout);
    }
    s.assert_nothing_written();
    let out = run(
        &[
            "doctor",
            "--config",
            cfg.to_str().unwrap(),
            "--output",
            "yaml",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Without --config and without a file at the default path, the message names the missing file
/// (before: "cluster.name is required").
#[test]
fn a_missing_default_config_file_is_named() {
    if Path::new("/etc/etcd-bootstrap/config.toml").exists() {
        eprintln!("skipped: this machine has /etc/etcd-bootstrap/config.toml");
        return;
    }
    let out = run(&["check-config"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no file at /etc/etcd-bootstrap/config.toml"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Every command's --help gives the --config default, the exit codes, ETCD_BOOTSTRAP_LOG and the
/// ETCD_BOOTSTRAP_<SECTION>_<KEY> overrides; plan's and check-config's give their own codes.
#[test]
fn help_gives_the_config_default_exit_codes_and_environment() {
    for cmd in [
        &["run", "--help"][..],
        &["plan", "--help"],
        &["check-config", "--help"],
        &["doctor", "--help"],
        &["status", "--help"],
        &["snapshot", "save", "--help"],
        &["--help"],
    ] {
        let out = run(cmd, &[]);
        assert_eq!(out.status.code(), Some(0), "{cmd:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for says in [
            "Exit codes:",
            "ETCD_BOOTSTRAP_LOG",
            "ETCD_BOOTSTRAP_<SECTION>_<KEY>",
        ] {
            assert!(text.contains(says), "{cmd:?} --help lacks {says:?}: {text}");
        }
        if cmd.len() > 1 {
            assert!(
                text.contains("[default: /etc/etcd-bootstrap/config.toml]"),
                "{cmd:?}: {text}"
            );
        }
    }
    let plan = String::from_utf8_lossy(&run(&["plan", "--help"], &[]).stdout).into_owned();
    assert!(plan.contains("3  the decision is to refuse"), "{plan}");
    let check = String::from_utf8_lossy(&run(&["check-config", "--help"], &[]).stdout).into_owned();
    assert!(check.contains("2  it is not"), "{check}");
}

/// What check-config prints is a config: fed back, it yields the same configuration (before:
/// `tls.cfssl_profiles` and `tls.sha256_pins` came out as tables, which the schema refuses).
#[test]
fn check_config_output_is_valid_input() {
    let s = Setup::new();
    let cfg = s.config("[heal]\ninterval = \"1500ms\"\nremove_dead_after = \"2m\"\n");
    let out = run(&["check-config", "--config", cfg.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = String::from_utf8_lossy(&out.stdout).into_owned();
    let printed = s.dir.path().join("printed");
    std::fs::create_dir_all(&printed).unwrap();
    let again_path = printed.join("config.toml");
    std::fs::write(&again_path, &first).unwrap();
    let out = run(
        &["check-config", "--config", again_path.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}\n{first}", stderr(&out));
    let body = |t: &str| -> String {
        t.lines()
            .filter(|l| !l.starts_with("# read "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&String::from_utf8_lossy(&out.stdout)), body(&first));
}

/// An even size is allowed, with a warning on stderr: it tolerates no more failures than the odd
/// size below it.
#[test]
fn an_even_size_is_warned_about() {
    let s = Setup::new();
    let cfg = s.config(
        "[cluster]\nsize = 4\n[discovery]\npeers = [\"a=https://10.9.9.1:2380\", \"b=https://10.9.9.2:2380\", \"c=https://10.9.9.3:2380\", \"d=https://10.9.9.4:2380\"]\n",
    );
    let out = run(&["check-config", "--config", cfg.to_str().unwrap()], &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: cluster.size: 4 members (an even size) tolerate the loss of 1 member, as 3 do"),
        "{err}"
    );
    let odd = s.config("[cluster]\nsize = 1\n");
    let out = run(&["check-config", "--config", odd.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

/// `ca init --validity`: days or hours, at most 25 years; years and words refused (exit 2).
#[test]
fn ca_init_validity_is_bounded() {
    let s = Setup::new();
    for (validity, says) in [
        ("200years", "\"years\" is not a unit"),
        ("10y", "\"y\" is not a unit"),
        ("36500d", "longer than 9125d"),
        ("1h", "shorter than a day"),
    ] {
        let out = run(
            &[
                "ca",
                "init",
                "--validity",
                validity,
                "--out",
                s.path("ca3").to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{validity}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{validity}: {}", stderr(&out));
        assert!(!s.path("ca3").exists(), "{validity}: a CA was made");
    }
    let out = run(
        &[
            "ca",
            "init",
            "--validity",
            "9125d",
            "--out",
            s.path("ca3").to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

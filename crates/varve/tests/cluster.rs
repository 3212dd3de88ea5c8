//! `varve cluster-check` against a real three-node cluster on loopback (TLS, verified client
//! certificates, a password): it creates the log's stream once, reports it after, and says what
//! to do when refused, never printing the password.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{stderr, stdout};
use natscluster::Cluster;

/// Runs the built varve with `args`, the password (when given) in VARVE_NATS_PASSWORD.
fn varve(args: &[String], password: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_varve"));
    cmd.args(args).env_remove("VARVE_NATS_PASSWORD");
    if let Some(password) = password {
        cmd.env("VARVE_NATS_PASSWORD", password);
    }
    cmd.output().expect("run varve")
}

fn args(cluster: &Cluster, extra: &[&str]) -> Vec<String> {
    command_args("cluster-check", cluster, extra)
}

fn command_args(command: &str, cluster: &Cluster, extra: &[&str]) -> Vec<String> {
    let pki = cluster.pki();
    let mut args = vec![command.to_owned()];
    for url in cluster.urls() {
        args.extend(["--server".to_owned(), url]);
    }
    args.extend(
        [
            "--user",
            cluster.user(),
            "--ca",
            pki.ca.to_str().unwrap(),
            "--cert",
            pki.client_cert.to_str().unwrap(),
            "--key",
            pki.client_key.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn cluster_check_creates_the_stream_once_and_explains_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, Duration::from_secs(60)).unwrap();

    let out = varve(&args(&cluster, &[]), Some(cluster.password()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("stream          VARVEDB (created now)"),
        "{text}"
    );
    assert!(text.contains("replicas        3"), "{text}");

    let mut json = args(&cluster, &[]);
    json.insert(0, "--json".to_owned());
    let out = varve(&json, Some(cluster.password()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["created"], false);
    assert_eq!(report["replicas"], 3);
    assert_eq!(report["followers"].as_array().unwrap().len(), 2);

    // A wrong password: refused, with what to check, and the password shown nowhere.
    let out = varve(&args(&cluster, &[]), Some("wrong-password-123"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("refused the node's credentials"), "{err}");
    assert!(err.contains("what to do: check --user"), "{err}");
    assert!(!err.contains("wrong-password-123"), "{err}");
    assert!(!stdout(&out).contains("wrong-password-123"));

    // No password at all: a usage error before anything is tried.
    let out = varve(&args(&cluster, &[]), None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("VARVE_NATS_PASSWORD"),
        "{}",
        stderr(&out)
    );

    // Another replica count than the stream's: refused, the stream left as it is.
    let out = varve(
        &args(&cluster, &["--replicas", "1"]),
        Some(cluster.password()),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("has replicas = 3"), "{err}");
    assert!(err.contains("never changes an existing stream"), "{err}");

    // A password file works as the variable does.
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{}\n", cluster.password())).unwrap();
    let out = varve(
        &args(&cluster, &["--password-file", file.to_str().unwrap()]),
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("exists, settings checked"));
}

/// The configuration of a replica on `cluster`, its log in the default stream.
fn member(cluster: &Cluster) -> varvedb::cluster::ClusterConfig {
    use varvedb::cluster::{ClusterAuth, ClusterConfig, ClusterTls};
    let pki = cluster.pki();
    ClusterConfig {
        servers: cluster.urls(),
        auth: ClusterAuth::user_and_password(cluster.user(), cluster.password()),
        tls: ClusterTls {
            ca_file: Some(pki.ca.clone()),
            client_cert: Some((pki.client_cert.clone(), pki.client_key.clone())),
        },
        ..ClusterConfig::default()
    }
}

#[test]
fn cluster_lag_reports_how_far_a_replica_is_behind() {
    use varvedb::{Storage, StorageConfig, Writer};
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&dir.path().join("cluster"), 3, Duration::from_secs(60)).unwrap();
    let open = |name: &str| {
        Storage::open_replicated(
            StorageConfig {
                path: dir.path().join(name),
                ..Default::default()
            },
            member(&cluster),
        )
        .unwrap()
    };
    let a_path = dir.path().join("a");
    let lag = |extra: &[&str]| {
        let mut extra = extra.to_vec();
        extra.insert(0, a_path.to_str().unwrap());
        varve(
            &command_args("cluster-lag", &cluster, &extra),
            Some(cluster.password()),
        )
    };
    {
        let a = open("a");
        Writer::<u64>::new(a.clone())
            .append("tally-1", 1, 10)
            .unwrap();
        // Caught up, while its node has it open.
        let out = lag(&["--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(report["applied"], 1, "{report}");
        assert_eq!(report["lag_messages"], 0, "{report}");
        assert_eq!(report["lag_seconds"], 0.0, "{report}");
    }
    // Closed while another node appends: five messages behind, and for some time.
    let b = open("b");
    let mut writer = Writer::<u64>::new(b.clone());
    for v in 2..=6 {
        writer.append("tally-1", v, v * 10).unwrap();
    }
    let out = lag(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("applied         1"), "{text}");
    assert!(text.contains("last sequence   6"), "{text}");
    assert!(text.contains("lag             5 messages"), "{text}");
    assert!(!text.contains(cluster.password()), "{text}");
    // Opened again, it catches up.
    drop(open("a"));
    let out = lag(&["--json"]);
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["lag_messages"], 0, "{report}");
    // A store that replicates nothing is named as such.
    let plain = dir.path().join("plain");
    drop(
        Storage::open(StorageConfig {
            path: plain.clone(),
            ..Default::default()
        })
        .unwrap(),
    );
    let out = varve(
        &command_args("cluster-lag", &cluster, &[plain.to_str().unwrap()]),
        Some(cluster.password()),
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("no cluster's log"),
        "{}",
        stderr(&out)
    );
}

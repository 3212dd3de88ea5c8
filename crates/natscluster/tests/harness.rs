//! The harness itself: a three-node cluster forms, survives a killed node, takes it back, and
//! holds a paused one.

use std::time::Duration;

use natscluster::Cluster;

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn a_cluster_forms_and_takes_back_a_killed_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3, TIMEOUT).unwrap();
    assert_eq!(cluster.urls().len(), 3);
    for node in cluster.nodes() {
        assert!(node.health().unwrap(), "{} is not healthy", node.name());
        assert!(node.url().starts_with("tls://127.0.0.1:"));
    }

    cluster.node(1).kill();
    assert!(!cluster.node(1).is_running());
    assert!(
        cluster.node(1).health().is_err(),
        "a killed node still answers"
    );
    cluster.wait_healthy(TIMEOUT).unwrap();

    cluster.restart(1).unwrap();
    cluster.wait_healthy(TIMEOUT).unwrap();
    assert!(cluster.node(1).health().unwrap());
    assert!(
        cluster.node(1).log_tail(200).contains("Server is ready"),
        "{}",
        cluster.node(1).log_tail(20)
    );
}

#[test]
fn a_paused_node_answers_nothing_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3, TIMEOUT).unwrap();
    cluster.node(2).pause();
    assert!(cluster.node(2).is_paused());
    assert!(
        cluster.node(2).health().is_err(),
        "a stopped process answered its health check"
    );
    cluster.node(2).resume();
    cluster.wait_healthy(TIMEOUT).unwrap();
}

#[test]
fn secrets_and_keys_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 1, TIMEOUT).unwrap();
    let pki = cluster.pki();
    for key in [&pki.node_key, &pki.client_key, &pki.foreign_client_key] {
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    let config = dir.path().join("n1/nats.conf");
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("sync_interval: always"));
}

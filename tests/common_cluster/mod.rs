//! What the cluster tests share (each includes it with `mod common_cluster;`).

/// The configuration of a node that belongs to `cluster`: its user and password, its
/// certificate authority, and a client certificate that authority signed; the log in JetStream
/// stream `stream`, under the subject prefix `varvedb.{stream in lower case}`.
pub fn cluster_member(
    cluster: &natscluster::Cluster,
    stream: &str,
) -> varvedb::cluster::ClusterConfig {
    use varvedb::cluster::{ClusterAuth, ClusterConfig, ClusterTls};
    let pki = cluster.pki();
    ClusterConfig {
        servers: cluster.urls(),
        stream: stream.to_owned(),
        subject_prefix: format!("varvedb.{}", stream.to_ascii_lowercase()),
        auth: ClusterAuth::user_and_password(cluster.user(), cluster.password()),
        tls: ClusterTls {
            ca_file: Some(pki.ca.clone()),
            client_cert: Some((pki.client_cert.clone(), pki.client_key.clone())),
        },
        connect_timeout: std::time::Duration::from_secs(10),
        ..ClusterConfig::default()
    }
}

/// How long a test waits for a replica to reach a position (a condition, not a pace).
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until `storage` has applied the log up to global sequence `head`.
#[allow(dead_code)]
pub fn wait_head(storage: &varvedb::Storage, head: u64) {
    let started = std::time::Instant::now();
    while storage.head() < head {
        assert!(
            started.elapsed() < WAIT,
            "the replica stayed at {} of {head}",
            storage.head()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

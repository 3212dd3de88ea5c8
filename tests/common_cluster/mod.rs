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

//! Reaching a NATS JetStream cluster: three real servers on loopback with TLS (client
//! certificates required) and passwords; who gets in, who is refused and how, and the
//! JetStream stream the log lives in.
#![cfg(feature = "cluster")]

mod common_cluster;

use std::time::Duration;

use natscluster::Cluster;
use varvedb::cluster::{check, ClusterAuth, ClusterConfig, ClusterError, ClusterTls};
use varvedb::Error;

const START: Duration = Duration::from_secs(60);

fn member(cluster: &Cluster, stream: &str) -> ClusterConfig {
    common_cluster::cluster_member(cluster, stream)
}

fn cluster_error(result: varvedb::Result<varvedb::cluster::ClusterReport>) -> ClusterError {
    match result {
        Err(Error::Cluster(e)) => e,
        other => panic!("expected a cluster error, got {other:?}"),
    }
}

#[test]
fn a_member_creates_the_log_stream_once_and_finds_it_after() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, START).unwrap();
    let config = member(&cluster, "ORDERS");

    let first = check(&config).unwrap();
    assert!(first.created);
    assert_eq!(first.stream, "ORDERS");
    assert_eq!(first.replicas, 3);
    assert_eq!(first.messages, 0);
    let (major, minor) = {
        let mut parts = first.server_version.split('.');
        (
            parts.next().unwrap().parse::<u32>().unwrap(),
            parts.next().unwrap().parse::<u32>().unwrap(),
        )
    };
    assert!((major, minor) >= (2, 12), "{}", first.server_version);
    let names: Vec<&str> = cluster.nodes().iter().map(|n| n.name()).collect();
    assert!(names.contains(&first.server.as_str()), "{first:?}");

    // A second node, through another server only, finds the same stream and creates nothing.
    let other = ClusterConfig {
        servers: vec![cluster.urls()[1].clone()],
        ..config.clone()
    };
    let second = check(&other).unwrap();
    assert!(!second.created);
    assert_eq!(second.replicas, 3);
    let leader = second.leader.clone().expect("an R3 stream has a leader");
    assert!(names.contains(&leader.as_str()), "{second:?}");
    assert_eq!(second.followers.len(), 2, "{second:?}");
}

#[test]
fn a_stream_that_could_lose_events_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, START).unwrap();
    let config = member(&cluster, "EVENTS");
    check(&config).unwrap();

    // Asking for one replica of a stream that has three: refused, and the stream keeps three.
    let fewer = ClusterConfig {
        replicas: 1,
        ..config.clone()
    };
    match cluster_error(check(&fewer)) {
        ClusterError::StreamMismatch {
            stream,
            setting,
            found,
            wanted,
        } => {
            assert_eq!(stream, "EVENTS");
            assert_eq!(setting, "replicas");
            assert_eq!(found, "3");
            assert_eq!(wanted, "1");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(check(&config).unwrap().replicas, 3);

    // Another duplicate window than the stream's: refused the same way.
    let window = ClusterConfig {
        duplicate_window: Duration::from_secs(30),
        ..config.clone()
    };
    assert!(matches!(
        cluster_error(check(&window)),
        ClusterError::StreamMismatch {
            setting: "duplicate_window",
            ..
        }
    ));
}

#[test]
fn events_larger_than_the_servers_take_are_refused_at_connect() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, START).unwrap();
    // The test servers take messages of up to 8 MiB.
    let config = ClusterConfig {
        max_message_size: 16 << 20,
        ..member(&cluster, "BIG")
    };
    match cluster_error(check(&config)) {
        ClusterError::PayloadLimit {
            max_payload,
            max_message_size,
            ..
        } => {
            assert_eq!(max_payload, 8 << 20);
            assert_eq!(max_message_size, 16 << 20);
        }
        other => panic!("{other:?}"),
    }
    // 8 MiB with the room for headers: just too much; 4 KiB less fits.
    let config = ClusterConfig {
        max_message_size: 8 << 20,
        ..member(&cluster, "BIG")
    };
    assert!(matches!(
        cluster_error(check(&config)),
        ClusterError::PayloadLimit { .. }
    ));
    let fits = ClusterConfig {
        max_message_size: (8 << 20) - (4 << 10),
        ..member(&cluster, "BIG")
    };
    assert!(check(&fits).unwrap().created);
}

#[test]
fn a_wrong_password_is_refused_as_unauthorized() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, START).unwrap();
    let config = ClusterConfig {
        auth: ClusterAuth::user_and_password(cluster.user(), "not-the-password"),
        ..member(&cluster, "LOG")
    };
    match cluster_error(check(&config)) {
        ClusterError::Unauthorized { servers, reason } => {
            assert_eq!(servers, cluster.urls());
            assert!(!reason.contains(cluster.password()), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let nobody = ClusterConfig {
        auth: ClusterAuth::None,
        ..member(&cluster, "LOG")
    };
    assert!(matches!(
        cluster_error(check(&nobody)),
        ClusterError::Unauthorized { .. }
    ));
}

#[test]
fn a_certificate_the_cluster_does_not_trust_is_refused_by_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, START).unwrap();
    let pki = cluster.pki().clone();

    // A client certificate from another authority: the servers refuse the handshake.
    let foreign = ClusterConfig {
        tls: ClusterTls {
            ca_file: Some(pki.ca.clone()),
            client_cert: Some((
                pki.foreign_client_cert.clone(),
                pki.foreign_client_key.clone(),
            )),
        },
        ..member(&cluster, "LOG")
    };
    match cluster_error(check(&foreign)) {
        ClusterError::Tls { reason, .. } => assert!(reason.contains("UnknownCA"), "{reason}"),
        other => panic!("a foreign client certificate was not refused by TLS: {other:?}"),
    }

    // No client certificate at all, while the servers verify clients.
    let anonymous = ClusterConfig {
        tls: ClusterTls {
            ca_file: Some(pki.ca.clone()),
            client_cert: None,
        },
        ..member(&cluster, "LOG")
    };
    match cluster_error(check(&anonymous)) {
        ClusterError::Tls { reason, .. } => {
            assert!(reason.contains("CertificateRequired"), "{reason}")
        }
        other => panic!("a client without a certificate got past TLS: {other:?}"),
    }

    // The node trusts another authority than the one that signed the servers' certificates.
    let distrusting = ClusterConfig {
        tls: ClusterTls {
            ca_file: Some(pki.foreign_ca.clone()),
            client_cert: Some((pki.client_cert.clone(), pki.client_key.clone())),
        },
        ..member(&cluster, "LOG")
    };
    match cluster_error(check(&distrusting)) {
        ClusterError::Tls { reason, .. } => assert!(reason.contains("UnknownIssuer"), "{reason}"),
        other => panic!("a server certificate of an untrusted issuer was accepted: {other:?}"),
    }

    // None of them got in: the stream was never created.
    let report = check(&member(&cluster, "LOG")).unwrap();
    assert!(report.created);
}

#[test]
fn a_cluster_that_is_not_there_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = ClusterConfig {
        servers: vec![format!("nats://127.0.0.1:{port}")],
        connect_timeout: Duration::from_secs(2),
        ..ClusterConfig::default()
    };
    assert!(matches!(
        cluster_error(check(&config)),
        ClusterError::Unreachable { .. }
    ));
}

#[test]
fn credentials_never_go_to_a_server_without_tls() {
    use std::io::{Read, Write};
    // A server that offers no TLS: it announces itself and records what the client sends.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(
            b"INFO {\"server_id\":\"plain\",\"server_name\":\"plain\",\"version\":\"2.14.6\",\"proto\":1,\"headers\":true,\"max_payload\":1048576,\"auth_required\":true}\r\n",
        )
        .unwrap();
        // As a plain server does: the first bytes are not a NATS operation (a TLS hello), so
        // it answers with an error and closes.
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut received = vec![0u8; 64 << 10];
        let n = conn.read(&mut received).unwrap_or(0);
        received.truncate(n);
        let _ = conn.write_all(b"-ERR 'Unknown Protocol Operation'\r\n");
        drop(conn);
        received
    });
    let config = ClusterConfig {
        servers: vec![format!("nats://127.0.0.1:{port}")],
        auth: ClusterAuth::user_and_password("varvedb", "never-in-the-clear"),
        connect_timeout: Duration::from_secs(5),
        ..ClusterConfig::default()
    };
    let err = cluster_error(check(&config));
    assert!(matches!(err, ClusterError::Tls { .. }), "{err:?}");
    let received = server.join().unwrap();
    assert!(
        !String::from_utf8_lossy(&received).contains("never-in-the-clear"),
        "the password crossed the network in the clear"
    );
}

#[test]
fn configurations_and_errors_never_show_the_password() {
    let config = ClusterConfig {
        servers: vec!["tls://127.0.0.1:1".into()],
        auth: ClusterAuth::user_and_password("varvedb", "hunter2-secret"),
        ..ClusterConfig::default()
    };
    let shown = format!("{config:?}");
    assert!(shown.contains("varvedb"));
    assert!(!shown.contains("hunter2-secret"), "{shown}");
    let err = check(&ClusterConfig {
        connect_timeout: Duration::from_secs(2),
        ..config
    })
    .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2-secret"));
}

//! The JetStream stream that holds the log: created when missing, checked when it exists, never
//! changed.
//!
//! The log of record must keep every message for good, on disk, on `replicas` servers, and must
//! take atomic batches: no limits (messages, bytes, age, per subject), file storage, deletes
//! and purges denied, atomic publish allowed.

use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{Config, Info, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, ErrorCode};

use super::client::{Client, HEADER_ROOM};
use super::config::ClusterConfig;
use super::error::ClusterError;

/// What the log needs of its stream, from `config`.
pub(crate) fn wanted(config: &ClusterConfig) -> Config {
    Config {
        name: config.stream.clone(),
        description: Some("VarveDB event log".to_owned()),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        retention: RetentionPolicy::Limits,
        max_messages: -1,
        max_bytes: -1,
        max_age: Duration::ZERO,
        max_messages_per_subject: -1,
        max_message_size: (config.max_message_size + HEADER_ROOM) as i32,
        storage: StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        deny_delete: true,
        deny_purge: true,
        allow_atomic_publish: true,
        ..Config::default()
    }
}

/// The stream's information: looked up, or created from [`wanted`] when there is none; then
/// checked against what the log needs. Returns it, and whether it was created.
///
/// # Errors
///
/// [`ClusterError::StreamMismatch`] when it exists with a setting the log cannot run on,
/// [`ClusterError::NoJetStream`], [`ClusterError::Request`], [`ClusterError::Timeout`].
pub(crate) fn ensure(
    client: &Client,
    config: &ClusterConfig,
) -> Result<(Info, bool), ClusterError> {
    let js = client.jetstream.clone();
    let want = wanted(config);
    let name = config.stream.clone();
    let timeout = config.request_timeout;
    let server = client.nats.server_info().server_name.clone();
    let found = client.run(async move {
        /// The stream's information, and whether this call created it.
        async fn info_of(
            stream: Result<jetstream::stream::Stream, String>,
            created: bool,
        ) -> Result<(Info, bool), String> {
            let mut stream = stream?;
            let info = stream.info().await.map_err(|e| e.to_string())?;
            Ok((info.clone(), created))
        }
        match js.get_stream(&name).await {
            Ok(stream) => info_of(Ok(stream), false).await,
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(err)
                    if err.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    // Another node may create it at the same moment: an identical config
                    // is accepted twice, a different one is checked below.
                    match js.create_stream(want).await {
                        Ok(stream) => info_of(Ok(stream), true).await,
                        // Created by another node meanwhile, with other settings: checked
                        // below like any stream that exists.
                        Err(e)
                            if matches!(e.kind(), CreateStreamErrorKind::JetStream(err)
                            if err.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
                        {
                            let stream = js.get_stream(&name).await.map_err(|e| e.to_string());
                            info_of(stream, false).await
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                _ => Err(e.to_string()),
            },
        }
    })?;
    let (info, created) = found.map_err(|reason| request_error(&server, timeout, reason))?;
    check(&info.config, config)?;
    Ok((info, created))
}

/// What a failed stream request means for the caller.
fn request_error(server: &str, timeout: Duration, reason: String) -> ClusterError {
    let lower = reason.to_ascii_lowercase();
    if lower.contains("jetstream not enabled") || lower.contains("no responders") {
        ClusterError::NoJetStream {
            server: server.to_owned(),
            reason,
        }
    } else if lower.contains("timed out") || lower.contains("timeout") {
        ClusterError::Timeout {
            operation: "stream lookup or creation",
            after: timeout,
        }
    } else {
        ClusterError::Request {
            operation: "stream lookup or creation",
            reason,
        }
    }
}

/// Checks an existing stream's settings against what the log needs.
///
/// # Errors
///
/// [`ClusterError::StreamMismatch`] naming the first setting that does not fit.
pub(crate) fn check(found: &Config, config: &ClusterConfig) -> Result<(), ClusterError> {
    let want = wanted(config);
    let mismatch = |setting: &'static str, found: String, wanted: String| {
        Err(ClusterError::StreamMismatch {
            stream: config.stream.clone(),
            setting,
            found,
            wanted,
        })
    };
    if found.num_replicas != want.num_replicas {
        return mismatch(
            "replicas",
            found.num_replicas.to_string(),
            want.num_replicas.to_string(),
        );
    }
    if found.storage != StorageType::File {
        return mismatch(
            "storage",
            format!("{:?}", found.storage),
            "File (the log of record is kept on disk)".to_owned(),
        );
    }
    if found.subjects != want.subjects {
        return mismatch(
            "subjects",
            format!("{:?}", found.subjects),
            format!("{:?} (the log's subjects only)", want.subjects),
        );
    }
    // Settings that bring in messages from elsewhere, rewrite them, or let them expire or be
    // summed: each would make the log hold something other than the events appended.
    let foreign = [
        (
            "sources",
            found.sources.as_ref().is_some_and(|s| !s.is_empty()),
        ),
        ("mirror", found.mirror.is_some()),
        ("subject_transform", found.subject_transform.is_some()),
        ("republish", found.republish.is_some()),
        ("allow_msg_ttl", found.allow_message_ttl),
        (
            "subject_delete_marker_ttl",
            found.subject_delete_marker_ttl.is_some(),
        ),
        ("allow_rollup_hdrs", found.allow_rollup),
        ("allow_msg_schedules", found.allow_message_schedules),
        ("allow_msg_counter", found.allow_message_counter),
        ("no_ack", found.no_ack),
        ("sealed", found.sealed),
    ];
    if let Some((setting, _)) = foreign.iter().find(|(_, set)| *set) {
        return mismatch(
            setting,
            "set".to_owned(),
            "unset (the log holds the events appended, as they were appended)".to_owned(),
        );
    }
    if found.retention != RetentionPolicy::Limits {
        return mismatch(
            "retention",
            format!("{:?}", found.retention),
            "Limits, with no limit (the log keeps every event)".to_owned(),
        );
    }
    let unlimited = "unlimited (the log keeps every event)".to_owned();
    if found.max_messages > 0 {
        return mismatch("max_msgs", found.max_messages.to_string(), unlimited);
    }
    if found.max_bytes > 0 {
        return mismatch("max_bytes", found.max_bytes.to_string(), unlimited);
    }
    if found.max_age > Duration::ZERO {
        return mismatch("max_age", format!("{:?}", found.max_age), unlimited);
    }
    if found.max_messages_per_subject > 0 {
        return mismatch(
            "max_msgs_per_subject",
            found.max_messages_per_subject.to_string(),
            unlimited,
        );
    }
    if !found.deny_delete || !found.deny_purge {
        return mismatch(
            "deny_delete and deny_purge",
            format!("{} and {}", found.deny_delete, found.deny_purge),
            "true and true (no message of the log is ever removed)".to_owned(),
        );
    }
    if !found.allow_atomic_publish {
        return mismatch(
            "allow_atomic",
            "false".to_owned(),
            "true (batches and transactions are atomic batch publishes)".to_owned(),
        );
    }
    if found.duplicate_window != want.duplicate_window {
        return mismatch(
            "duplicate_window",
            format!("{:?}", found.duplicate_window),
            format!("{:?} (as configured)", want.duplicate_window),
        );
    }
    if found.max_message_size > 0 && found.max_message_size < want.max_message_size {
        return mismatch(
            "max_msg_size",
            found.max_message_size.to_string(),
            format!("at least {} (as configured)", want.max_message_size),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClusterConfig {
        ClusterConfig {
            servers: vec!["tls://127.0.0.1:4222".into()],
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn the_stream_the_log_asks_for_passes_its_own_check() {
        check(&wanted(&config()), &config()).unwrap();
    }

    #[test]
    fn every_setting_that_could_lose_or_split_events_is_refused() {
        let c = config();
        type Change = Box<dyn Fn(&mut Config)>;
        let changes: Vec<(&str, Change)> = vec![
            ("replicas", Box::new(|s| s.num_replicas = 1)),
            ("storage", Box::new(|s| s.storage = StorageType::Memory)),
            (
                "subjects",
                Box::new(|s| s.subjects = vec!["other.>".into()]),
            ),
            (
                "retention",
                Box::new(|s| s.retention = RetentionPolicy::Interest),
            ),
            ("max_msgs", Box::new(|s| s.max_messages = 1_000)),
            ("max_bytes", Box::new(|s| s.max_bytes = 1 << 30)),
            (
                "max_age",
                Box::new(|s| s.max_age = Duration::from_secs(3600)),
            ),
            (
                "max_msgs_per_subject",
                Box::new(|s| s.max_messages_per_subject = 1),
            ),
            (
                "deny_delete and deny_purge",
                Box::new(|s| s.deny_purge = false),
            ),
            ("allow_atomic", Box::new(|s| s.allow_atomic_publish = false)),
            (
                "duplicate_window",
                Box::new(|s| s.duplicate_window = Duration::from_secs(1)),
            ),
            ("max_msg_size", Box::new(|s| s.max_message_size = 1024)),
            ("subjects", Box::new(|s| s.subjects.push("other.>".into()))),
            (
                "sources",
                Box::new(|s| {
                    s.sources = Some(vec![async_nats::jetstream::stream::Source {
                        name: "OTHER".into(),
                        ..Default::default()
                    }])
                }),
            ),
            ("allow_msg_ttl", Box::new(|s| s.allow_message_ttl = true)),
            (
                "subject_transform",
                Box::new(|s| {
                    s.subject_transform = Some(async_nats::jetstream::stream::SubjectTransform {
                        source: "varvedb.>".into(),
                        destination: "moved.>".into(),
                    })
                }),
            ),
            ("allow_rollup_hdrs", Box::new(|s| s.allow_rollup = true)),
            (
                "allow_msg_counter",
                Box::new(|s| s.allow_message_counter = true),
            ),
            ("no_ack", Box::new(|s| s.no_ack = true)),
            ("sealed", Box::new(|s| s.sealed = true)),
        ];
        for (setting, change) in changes {
            let mut stream = wanted(&c);
            change(&mut stream);
            match check(&stream, &c) {
                Err(ClusterError::StreamMismatch { setting: s, .. }) => assert_eq!(s, setting),
                other => panic!("{setting}: {other:?}"),
            }
        }
    }
}

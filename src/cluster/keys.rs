//! The stream keys of an encrypted log, in a JetStream key-value bucket beside the log.
//!
//! The bucket `{stream}-keys` (kept on as many servers as the log) holds each stream's data
//! key wrapped under the master key, under `s.{stream id}`, exactly as every replica's keystore
//! holds it (`crypto::replicated`), and the master key's version and check value under
//! `master`. A key is put in the bucket before the first event sealed under it is published,
//! only where the stream has none (a conditional put: two nodes creating one stream's key agree
//! on the first); a replica that applies an event of a stream whose key it does not hold reads
//! it from the bucket, from the stream's leader (never a stale follower). Shredding purges the
//! stream's key from the bucket (the purge marker stays: the stream reads as shredded, and no
//! key can be put for it again), then puts a shred marker in the log.
//!
//! The master key is never in the bucket: what the bucket holds is as safe as a keystore, and
//! erasure rests on the master key as on one node (purged messages may stay in the servers'
//! files until compacted, wrapped under it).

use async_nats::jetstream;
use async_nats::jetstream::kv;
use bytes::Bytes;

use super::config::ClusterConfig;
use super::error::ClusterError;
use crate::cipher::aead::WRAPPED_LEN;
use crate::crypto::keystore::{WrappedEntry, ENTRY_LEN};
use crate::crypto::Learned;
use crate::error::Result;
use crate::types::StreamId;

/// Key of the master key's version and check value.
const MASTER: &str = "master";
/// The header JetStream's key-value store marks deletes and purges with.
const KV_OPERATION: &str = "KV-Operation";

/// The bucket of an encrypted log (see the module documentation).
pub(crate) struct Keys {
    kv: kv::Store,
    /// The bucket's stream, for reads from its leader.
    stream: jetstream::stream::Stream,
    bucket: String,
}

/// What the bucket holds under a key: its last revision, and the value unless it was deleted
/// or purged.
struct Last {
    revision: u64,
    value: Option<Bytes>,
}

/// The name of the key bucket of the log `stream`.
pub(crate) fn bucket_name(stream: &str) -> String {
    format!("{stream}-keys")
}

fn key_name(stream: StreamId) -> String {
    format!("s.{:032x}", stream.0)
}

fn failed(operation: &'static str) -> impl Fn(&dyn std::fmt::Display) -> ClusterError {
    move |e| ClusterError::Request {
        operation,
        reason: e.to_string(),
    }
}

impl Keys {
    /// The key bucket of the log `config` names, when it exists.
    pub(crate) async fn find(
        js: &jetstream::Context,
        config: &ClusterConfig,
    ) -> Result<Option<Keys>> {
        use async_nats::jetstream::context::GetStreamErrorKind;
        use async_nats::jetstream::ErrorCode;
        let bucket = bucket_name(&config.stream);
        match js.get_stream(format!("KV_{bucket}")).await {
            Ok(_) => {}
            Err(e) => {
                return match e.kind() {
                    GetStreamErrorKind::JetStream(err)
                        if err.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                    {
                        Ok(None)
                    }
                    _ => Err(failed("looking the key bucket up")(&e).into()),
                }
            }
        }
        let kv = js
            .get_key_value(&bucket)
            .await
            .map_err(|e| failed("opening the key bucket")(&e))?;
        Ok(Some(Keys::with(js, kv, bucket).await?))
    }

    /// The key bucket of the log `config` names, created when missing.
    pub(crate) async fn open(js: &jetstream::Context, config: &ClusterConfig) -> Result<Keys> {
        if let Some(keys) = Keys::find(js, config).await? {
            return Ok(keys);
        }
        let bucket = bucket_name(&config.stream);
        let kv = js
            .create_key_value(kv::Config {
                bucket: bucket.clone(),
                description: "VarveDB: the wrapped stream keys of an encrypted log".into(),
                history: 1,
                num_replicas: config.replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| failed("creating the key bucket")(&e))?;
        Keys::with(js, kv, bucket).await
    }

    async fn with(js: &jetstream::Context, kv: kv::Store, bucket: String) -> Result<Keys> {
        let stream = js
            .get_stream(format!("KV_{bucket}"))
            .await
            .map_err(|e| failed("opening the key bucket's stream")(&e))?;
        Ok(Keys { kv, stream, bucket })
    }

    /// What the bucket holds under `key`, read from the bucket's leader.
    async fn last(&self, key: &str) -> Result<Option<Last>> {
        use jetstream::stream::LastRawMessageErrorKind;
        let subject = format!("$KV.{}.{key}", self.bucket);
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => {
                let op = m.headers.get(KV_OPERATION).map(|v| v.as_str().to_owned());
                let value = match op.as_deref() {
                    Some("DEL") | Some("PURGE") => None,
                    _ => Some(m.payload),
                };
                Ok(Some(Last {
                    revision: m.sequence,
                    value,
                }))
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(failed("reading the key bucket")(&e).into()),
        }
    }

    /// What the bucket holds for `stream`: `None` when it never held a key for it.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Request`] for a failed read, [`ClusterError::BadKey`] for an entry that
    /// is not a wrapped key.
    pub(crate) async fn fetch(&self, stream: StreamId) -> Result<Option<Learned>> {
        Ok(self
            .fetch_revision(stream)
            .await?
            .map(|(learned, _)| learned))
    }

    /// Puts `entry` as `stream`'s key unless the bucket holds something for the stream, and
    /// returns what it holds then: `entry`, another node's key, or the stream's shredding.
    pub(crate) async fn create(&self, stream: StreamId, entry: WrappedEntry) -> Result<Learned> {
        let value = Bytes::copy_from_slice(&entry.encode());
        if self
            .update_at(&key_name(stream), value, 0, "creating a stream key")
            .await?
        {
            return Ok(Learned::Key(entry));
        }
        self.fetch(stream).await?.ok_or_else(|| {
            ClusterError::Request {
                operation: "creating a stream key",
                reason: format!(
                    "the key bucket refused a key for stream {stream} as it holds one, but holds none"
                ),
            }
            .into()
        })
    }

    /// Puts `value` under `key` if the bucket's entry is at `revision` (0: it holds nothing
    /// under the key, not even a purge marker). `false` when it is not.
    async fn update_at(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
        operation: &'static str,
    ) -> Result<bool> {
        match self.kv.update(key, value, revision).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(failed(operation)(&e).into()),
        }
    }

    /// The streams the bucket holds a key for (not those it purged).
    pub(crate) async fn streams(&self) -> Result<Vec<StreamId>> {
        use futures_util::StreamExt;
        let mut names = self
            .kv
            .keys()
            .await
            .map_err(|e| failed("listing the key bucket")(&e))?;
        let mut out = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(|e| failed("listing the key bucket")(&e))?;
            if name == MASTER {
                continue;
            }
            let stream = name
                .strip_prefix("s.")
                .filter(|hex| hex.len() == 32)
                .and_then(|hex| u128::from_str_radix(hex, 16).ok())
                .ok_or_else(|| ClusterError::BadKey {
                    key: name.clone(),
                    reason: "not a key VarveDB puts in its bucket".into(),
                })?;
            out.push(StreamId(stream));
        }
        Ok(out)
    }

    /// What the bucket holds for `stream` and its revision.
    pub(crate) async fn fetch_revision(&self, stream: StreamId) -> Result<Option<(Learned, u64)>> {
        let Some(last) = self.last(&key_name(stream)).await? else {
            return Ok(None);
        };
        let learned = match last.value {
            None => Learned::Shredded,
            Some(v) => Learned::Key(decode_entry(stream, &v)?),
        };
        Ok(Some((learned, last.revision)))
    }

    /// Replaces `stream`'s key by `entry` (the same key re-wrapped) if the bucket's entry is at
    /// `revision`. `false` when it moved (shredded meanwhile).
    pub(crate) async fn replace(
        &self,
        stream: StreamId,
        entry: WrappedEntry,
        revision: u64,
    ) -> Result<bool> {
        let value = Bytes::copy_from_slice(&entry.encode());
        self.update_at(
            &key_name(stream),
            value,
            revision,
            "re-wrapping a stream key",
        )
        .await
    }

    /// Purges `stream`'s key from the bucket: every copy of it the bucket held is gone, and
    /// the purge marker it leaves refuses a new key.
    pub(crate) async fn purge(&self, stream: StreamId) -> Result<()> {
        self.kv
            .purge(key_name(stream))
            .await
            .map_err(|e| failed("purging a stream key")(&e).into())
    }

    /// The master key version and check value the bucket holds, with their revision.
    pub(crate) async fn master(&self) -> Result<Option<(u32, [u8; WRAPPED_LEN], u64)>> {
        let Some(last) = self.last(MASTER).await? else {
            return Ok(None);
        };
        let bad = || ClusterError::BadKey {
            key: MASTER.into(),
            reason: "not a master key version and check value".into(),
        };
        let v = last.value.ok_or_else(bad)?;
        if v.len() != 4 + WRAPPED_LEN {
            return Err(bad().into());
        }
        let version = u32::from_le_bytes(v[..4].try_into().expect("4 bytes"));
        let check = v[4..].try_into().expect("checked length");
        Ok(Some((version, check, last.revision)))
    }

    /// Puts the master key version and check value if the bucket's are at `revision` (0: it
    /// holds none). `false` when they moved.
    pub(crate) async fn put_master(
        &self,
        version: u32,
        check: &[u8; WRAPPED_LEN],
        revision: u64,
    ) -> Result<bool> {
        let mut v = Vec::with_capacity(4 + WRAPPED_LEN);
        v.extend_from_slice(&version.to_le_bytes());
        v.extend_from_slice(check);
        self.update_at(
            MASTER,
            v.into(),
            revision,
            "recording the master key check value",
        )
        .await
    }
}

fn decode_entry(stream: StreamId, v: &[u8]) -> Result<WrappedEntry> {
    (v.len() == ENTRY_LEN)
        .then(|| WrappedEntry::decode(v))
        .flatten()
        .ok_or_else(|| {
            ClusterError::BadKey {
                key: key_name(stream),
                reason: format!("{} bytes, not a wrapped key of {ENTRY_LEN}", v.len()),
            }
            .into()
        })
}

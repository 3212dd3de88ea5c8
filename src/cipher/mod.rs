//! The cipher: AES-256-GCM sealing of records and wrapping of stream keys (`aead`), the data key
//! of one stream ([`StreamKey`]), and the aligned buffers decrypted events live in. Functions on
//! bytes and keys only; which key belongs to which stream is `crate::crypto`'s business.

pub(crate) mod aead;
mod buffer;

pub(crate) use buffer::PlainBuf;

use aead::{SealingKey, KEY_LEN};

/// A stream's unwrapped data key. Its `Debug` shows no key material.
#[derive(Debug)]
pub(crate) struct StreamKey {
    pub key: SealingKey,
    pub version: u32,
    /// The key that derives the nonces of records sealed for transit ([`StreamKey::transit_nonce`]).
    nonces: aead::NonceKey,
}

impl StreamKey {
    /// A data key from raw bytes.
    pub(crate) fn from_bytes(bytes: &[u8; KEY_LEN], version: u32) -> StreamKey {
        StreamKey {
            key: SealingKey::new(bytes),
            version,
            nonces: aead::NonceKey::derive(bytes),
        }
    }

    /// The nonce of a record sealed for transit: derived from everything the record
    /// authenticates (`aad`) and its plaintext, so that sealing the same event twice gives the
    /// same bytes (a retry is recognised without the key) and two different events get
    /// different nonces (as unlikely to collide as random ones).
    pub(crate) fn transit_nonce(&self, aad: &[u8], plaintext: &[u8]) -> [u8; aead::NONCE_LEN] {
        self.nonces.nonce(aad, plaintext)
    }
}

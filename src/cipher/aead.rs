//! The two uses of AES-256-GCM: sealing record payloads under a stream's data key, and wrapping
//! data keys under the master key. Both take a fresh random 96-bit nonce from aws-lc's CSPRNG for
//! every seal, so no nonce depends on a position that a crash, an aborted transaction or a
//! restored backup could reuse. Records draw their nonces from [`Nonces`], which asks the CSPRNG
//! once per block of nonces rather than once per record.
//!
//! Key material lives in aws-lc's AEAD contexts, which aws-lc wipes when they are freed
//! (`EVP_AEAD_CTX_free` ends in `OPENSSL_free`, which cleanses the allocation); the raw bytes a
//! key is made from are held in [`Zeroizing`] buffers and wiped as soon as the context exists.

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hmac;

pub(crate) use aws_lc_rs::aead::NONCE_LEN;
use zeroize::Zeroizing;

/// Length of an AES-256 key.
pub(crate) const KEY_LEN: usize = 32;
/// Length of a GCM tag.
pub(crate) const TAG_LEN: usize = 16;
/// A wrapped data key: nonce, encrypted key, tag.
pub(crate) const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// Fills a fresh random 256-bit key.
pub(crate) fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, Unavailable> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    aws_lc_rs::rand::fill(&mut key[..]).map_err(|_| Unavailable)?;
    Ok(key)
}

/// Nonces asked from the CSPRNG at once by [`Nonces`].
const NONCE_BLOCK: usize = 32;

/// Random 96-bit nonces from aws-lc's CSPRNG, drawn [`NONCE_BLOCK`] at a time: the CSPRNG's
/// per-call cost (about half of sealing a 100-byte record) is paid once per block.
///
/// Each nonce is handed out once: the pool only moves forward and is dropped with what it did
/// not hand out. A pool belongs to one write transaction (or one import, one test) on one
/// thread and is never kept past it, so a forked child cannot draw a copy of a parent's pending
/// nonces (only the forking thread runs in the child, and it does not fork in the middle of a
/// commit). The nonces are as random as `RAND_bytes` makes them, one by one.
pub(crate) struct Nonces {
    buf: [u8; NONCE_LEN * NONCE_BLOCK],
    next: usize,
}

impl Nonces {
    /// An empty pool; the first [`Nonces::next`] fills it.
    pub(crate) fn new() -> Nonces {
        Nonces {
            buf: [0; NONCE_LEN * NONCE_BLOCK],
            next: NONCE_BLOCK,
        }
    }

    /// A nonce no seal has used.
    pub(crate) fn next(&mut self) -> Result<[u8; NONCE_LEN], Unavailable> {
        if self.next == NONCE_BLOCK {
            aws_lc_rs::rand::fill(&mut self.buf).map_err(|_| Unavailable)?;
            self.next = 0;
        }
        let at = self.next * NONCE_LEN;
        self.next += 1;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&self.buf[at..at + NONCE_LEN]);
        Ok(nonce)
    }
}

impl Default for Nonces {
    fn default() -> Nonces {
        Nonces::new()
    }
}

impl fmt::Debug for Nonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nonces")
            .field("left", &(NONCE_BLOCK - self.next))
            .finish()
    }
}

/// The system's random source or the cipher failed: nothing was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unavailable;

/// Authentication failed: wrong key, or bytes or associated data changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unauthentic;

/// Domain of the key [`NonceKey::derive`] makes from a data key.
const NONCE_KEY_LABEL: &[u8] = b"varvedb/transit-nonce/v1";

/// The HMAC-SHA-256 key that derives a data key's synthetic nonces: records sealed for transit
/// (`format::record`) take as nonce the first 96 bits of HMAC(nonce key, associated data ‖
/// length of the associated data ‖ plaintext). Equal inputs give equal nonces and so equal
/// ciphertexts, which is the point; different inputs give nonces that collide no more often than
/// random ones. Its `Debug` shows no key material.
pub(crate) struct NonceKey {
    key: hmac::Key,
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey(<redacted>)")
    }
}

impl NonceKey {
    /// The nonce key of the data key `bytes`: HMAC-SHA-256(data key, label), a key of its own,
    /// so that the data key is never used both for AES and for HMAC.
    pub(crate) fn derive(bytes: &[u8; KEY_LEN]) -> NonceKey {
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, bytes), NONCE_KEY_LABEL);
        NonceKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// The synthetic nonce of `plaintext` sealed with associated data `aad`.
    pub(crate) fn nonce(&self, aad: &[u8], plaintext: &[u8]) -> [u8; NONCE_LEN] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(aad);
        ctx.update(&(aad.len() as u64).to_le_bytes());
        ctx.update(plaintext);
        let tag = ctx.sign();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
        nonce
    }
}

/// An AES-256-GCM key, sealing with the random nonces it is given. Its `Debug` never shows key
/// material.
pub(crate) struct SealingKey {
    key: LessSafeKey,
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

impl SealingKey {
    /// A key from raw bytes (which the caller wipes).
    pub(crate) fn new(bytes: &[u8; KEY_LEN]) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .expect("a 32-byte key is always a valid AES-256-GCM key");
        SealingKey {
            key: LessSafeKey::new(key),
        }
    }

    /// Encrypts `in_out` in place under `nonce`, which must come from [`Nonces`] (used once,
    /// random); returns the tag.
    pub(crate) fn seal(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Unavailable> {
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map_err(|_| Unavailable)?;
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag.as_ref());
        Ok(t)
    }

    /// Decrypts `in_out` (ciphertext followed by the tag) in place; returns the plaintext part.
    pub(crate) fn open<'a>(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &'a mut [u8],
    ) -> Result<&'a mut [u8], Unauthentic> {
        self.key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map_err(|_| Unauthentic)
    }

    /// Wraps a data key: `nonce ‖ encrypted key ‖ tag`.
    pub(crate) fn wrap(
        &self,
        aad: &[u8],
        key: &[u8; KEY_LEN],
    ) -> Result<[u8; WRAPPED_LEN], Unavailable> {
        let mut buf = Zeroizing::new(*key);
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Unavailable)?;
        let tag = self.seal(nonce, aad, &mut buf[..])?;
        let mut out = [0u8; WRAPPED_LEN];
        out[..NONCE_LEN].copy_from_slice(&nonce);
        out[NONCE_LEN..NONCE_LEN + KEY_LEN].copy_from_slice(&buf[..]);
        out[NONCE_LEN + KEY_LEN..].copy_from_slice(&tag);
        Ok(out)
    }

    /// Unwraps a data key wrapped by [`SealingKey::wrap`] with the same associated data.
    pub(crate) fn unwrap(
        &self,
        aad: &[u8],
        wrapped: &[u8; WRAPPED_LEN],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, Unauthentic> {
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&wrapped[..NONCE_LEN]);
        let mut buf = Zeroizing::new([0u8; KEY_LEN + TAG_LEN]);
        buf.copy_from_slice(&wrapped[NONCE_LEN..]);
        let plain = self.open(nonce, aad, &mut buf[..])?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(plain);
        Ok(key)
    }
}

/// Associated data of a wrapped stream key: it binds the wrapped key to its store, its stream,
/// the master-key version that wrapped it and its own key version.
pub(crate) fn wrap_aad(
    store_id: u128,
    stream: u128,
    master_version: u32,
    key_version: u32,
) -> [u8; 58] {
    let mut aad = [0u8; 58];
    aad[..18].copy_from_slice(b"varvedb/stream-key");
    aad[18..34].copy_from_slice(&store_id.to_le_bytes());
    aad[34..50].copy_from_slice(&stream.to_le_bytes());
    aad[50..54].copy_from_slice(&master_version.to_le_bytes());
    aad[54..58].copy_from_slice(&key_version.to_le_bytes());
    aad
}

/// Associated data of the master-key check value.
pub(crate) fn check_aad(store_id: u128, master_version: u32) -> [u8; 40] {
    let mut aad = [0u8; 40];
    aad[..20].copy_from_slice(b"varvedb/master-check");
    aad[20..36].copy_from_slice(&store_id.to_le_bytes());
    aad[36..40].copy_from_slice(&master_version.to_le_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// NIST GCM test vector (gcmEncryptExtIV256.rsp, Count 0 of Keylen 256, IVlen 96,
    /// PTlen 128, AADlen 128, Taglen 128): our `open` accepts it, and a changed byte of the
    /// ciphertext, tag, nonce or associated data is rejected.
    #[test]
    fn known_answer_open() {
        let key = hex("92e11dcdaa866f5ce790fd24501f92509aacf4cb8b1339d50c9c1240935dd08b");
        let nonce: [u8; 12] = hex("ac93a1a6145299bde902f21a").try_into().unwrap();
        let pt = hex("2d71bcfa914e4ac045b2aa60955fad24");
        let aad = hex("1e0889016f67601c8ebea4943bc23ad6");
        let ct = hex("8995ae2e6df3dbf96fac7b7137bae67f");
        let tag = hex("eca5aa77d51d4a0a14d9c51e1da474ab");
        let k = SealingKey::new(&key.clone().try_into().unwrap());
        let mut in_out = [ct.clone(), tag.clone()].concat();
        assert_eq!(k.open(nonce, &aad, &mut in_out).unwrap(), &pt[..]);
        for i in 0..32 {
            let mut bad = [ct.clone(), tag.clone()].concat();
            bad[i] ^= 1;
            assert_eq!(k.open(nonce, &aad, &mut bad), Err(Unauthentic), "byte {i}");
        }
        let mut bad_nonce = nonce;
        bad_nonce[0] ^= 1;
        let mut in_out = [ct.clone(), tag.clone()].concat();
        assert!(k.open(bad_nonce, &aad, &mut in_out).is_err());
        let mut in_out = [ct, tag].concat();
        assert!(k.open(nonce, &aad[1..], &mut in_out).is_err());
    }

    /// Our seal is standard AES-256-GCM: a fixed-nonce implementation opens what it sealed, and
    /// the same (key, nonce, plaintext, aad) gives the known ciphertext and tag.
    #[test]
    fn known_answer_seal_matches_standard_gcm() {
        let key: [u8; 32] = hex("92e11dcdaa866f5ce790fd24501f92509aacf4cb8b1339d50c9c1240935dd08b")
            .try_into()
            .unwrap();
        let aad = hex("1e0889016f67601c8ebea4943bc23ad6");
        let pt = hex("2d71bcfa914e4ac045b2aa60955fad24");
        let k = SealingKey::new(&key);
        let mut nonces = Nonces::new();
        let mut buf = pt.clone();
        let nonce = nonces.next().unwrap();
        let tag = k.seal(nonce, &aad, &mut buf).unwrap();
        let reference = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
        let mut in_out = [buf.clone(), tag.to_vec()].concat();
        let opened = reference
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut in_out,
            )
            .unwrap();
        assert_eq!(opened, &pt[..]);
        // Two seals of the same plaintext use different nonces.
        let mut again = pt.clone();
        let nonce2 = nonces.next().unwrap();
        k.seal(nonce2, &aad, &mut again).unwrap();
        assert_ne!(nonce, nonce2);
        assert_ne!(buf, again);
        // The NIST vector's nonce gives its ciphertext and tag.
        let nist: [u8; 12] = hex("ac93a1a6145299bde902f21a").try_into().unwrap();
        let mut buf = pt.clone();
        let tag = k.seal(nist, &aad, &mut buf).unwrap();
        assert_eq!(buf, hex("8995ae2e6df3dbf96fac7b7137bae67f"));
        assert_eq!(tag.to_vec(), hex("eca5aa77d51d4a0a14d9c51e1da474ab"));
    }

    /// A pool hands out every nonce once, across refills, and no two of many are equal.
    #[test]
    fn nonces_are_distinct_across_blocks() {
        let mut nonces = Nonces::new();
        let drawn: Vec<[u8; NONCE_LEN]> = (0..NONCE_BLOCK * 5 + 3)
            .map(|_| nonces.next().unwrap())
            .collect();
        let distinct: std::collections::HashSet<_> = drawn.iter().collect();
        assert_eq!(distinct.len(), drawn.len());
        assert!(drawn.iter().all(|n| n != &[0u8; NONCE_LEN]));
        // Another pool draws others.
        let mut other = Nonces::new();
        assert!(!drawn.contains(&other.next().unwrap()));
    }

    /// Test Case 14 of McGrew and Viega's GCM specification: 256-bit zero key, zero nonce, one
    /// zero block.
    #[test]
    fn known_answer_gcm_spec_case_14() {
        let k = SealingKey::new(&[0u8; 32]);
        let mut in_out = [
            hex("cea7403d4d606b6e074ec5d3baf39d18"),
            hex("d0d1c8a799996bf0265b98b5d48ab919"),
        ]
        .concat();
        assert_eq!(k.open([0u8; 12], &[], &mut in_out).unwrap(), &[0u8; 16]);
    }

    #[test]
    fn wrap_round_trip_and_binding() {
        let master = SealingKey::new(&[7u8; 32]);
        let data_key = [42u8; 32];
        let aad = wrap_aad(1, 2, 1, 1);
        let wrapped = master.wrap(&aad, &data_key).unwrap();
        assert_eq!(*master.unwrap(&aad, &wrapped).unwrap(), data_key);
        // Another stream, master version, key version or store: refused.
        for other in [
            wrap_aad(1, 3, 1, 1),
            wrap_aad(1, 2, 2, 1),
            wrap_aad(1, 2, 1, 2),
            wrap_aad(9, 2, 1, 1),
        ] {
            assert!(master.unwrap(&other, &wrapped).is_err());
        }
        assert!(SealingKey::new(&[8u8; 32]).unwrap(&aad, &wrapped).is_err());
        assert!(!format!("{master:?}").contains("7"));
    }
}

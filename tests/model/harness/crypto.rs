//! Crypto-shredding and master key rotation (`NotEncrypted` on a plain store).

use varvedb::StreamId;

use super::coverage;
use super::errors::{to_merr, MErr};
use super::ops::Stream;
use super::Harness;

/// The master key in force after `rotations` rotations.
pub(super) fn master_key(rotations: u32) -> [u8; 32] {
    let mut key = [0x3C; 32];
    key[..4].copy_from_slice(&rotations.to_le_bytes());
    key
}

impl Harness {
    fn not_encrypted(&self) -> MErr {
        MErr::NotEncrypted {
            path: self.storage().path().to_path_buf(),
        }
    }

    pub(super) fn shred(&mut self, stream: Stream) {
        let stream = stream.id();
        let got = self
            .storage()
            .shred_stream(StreamId(stream))
            .map_err(to_merr);
        let want = if self.encrypted {
            Ok(self.model.shred(stream))
        } else {
            Err(self.not_encrypted())
        };
        assert_eq!(got, want, "shred_stream({stream})");
        coverage::hit(match got {
            Ok(true) => "shred",
            Ok(false) => "shred_again",
            Err(_) => "not_encrypted",
        });
    }

    pub(super) fn rotate_key(&mut self) {
        let new = master_key(self.model.rotations + 1);
        let got = self.storage().rotate_master_key(new).map_err(to_merr);
        let want = if self.encrypted {
            Ok(self.model.rotate())
        } else {
            Err(self.not_encrypted())
        };
        assert_eq!(got, want, "rotate_master_key");
        coverage::hit(if got.is_ok() {
            "rotate"
        } else {
            "not_encrypted"
        });
    }
}

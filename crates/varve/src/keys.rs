//! Master keys: from a file (32 raw bytes, or 64 hex characters) or from the environment (hex),
//! never from the command line, where other users could read them in the process list.

use std::path::Path;

use crate::error::{CliError, CliResult};

/// Environment variable holding the store's master key, in hex.
pub const MASTER_KEY_VAR: &str = "VARVE_MASTER_KEY";
/// Environment variable holding the new master key for `rotate-key`, in hex.
pub const NEW_MASTER_KEY_VAR: &str = "VARVE_NEW_MASTER_KEY";

/// The key in `file` when given, else in the environment variable `var`, else `None`.
pub fn load(store: &Path, file: Option<&Path>, var: &str) -> CliResult<Option<[u8; 32]>> {
    if let Some(file) = file {
        let bytes = std::fs::read(file).map_err(|e| {
            CliError::new(
                store,
                format!("cannot read key file {}: {e}", file.display()),
            )
        })?;
        if let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(Some(raw));
        }
        let text = std::str::from_utf8(&bytes).unwrap_or("");
        return parse_hex(text.trim()).map(Some).ok_or_else(|| {
            CliError::new(
                store,
                format!(
                    "key file {} holds neither 32 raw bytes nor 64 hex characters",
                    file.display()
                ),
            )
        });
    }
    match std::env::var(var) {
        Ok(text) => parse_hex(text.trim()).map(Some).ok_or_else(|| {
            CliError::new(
                store,
                format!("{var} is not 64 hex characters (a 32-byte key)"),
            )
        }),
        Err(_) => Ok(None),
    }
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_keys_parse_and_bad_ones_do_not() {
        let hex = "00ff".repeat(16);
        let key = super::parse_hex(&hex).unwrap();
        assert_eq!(key[0], 0);
        assert_eq!(key[1], 255);
        assert!(super::parse_hex(&hex[..62]).is_none());
        assert!(super::parse_hex(&"zz".repeat(32)).is_none());
    }
}

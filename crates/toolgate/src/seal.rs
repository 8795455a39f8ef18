//! Tokens the gateway hands to clients and must get back unaltered: pagination
//! cursors, MRTR `requestState`, task ids. Each is `{payload}.{tag}`, the tag an
//! HMAC-SHA256 of the payload under a key the process draws once at start.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Lower-case hex of `bytes`, in one allocation (ids, digests).
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    hex_into(&mut out, bytes);
    out
}

/// Lower-case hex of `bytes`, appended to `out`.
pub fn hex_into(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

pub struct Sealer {
    key: [u8; 32],
}

impl Sealer {
    /// A sealer with a fresh random key (tokens do not survive a restart).
    pub fn new() -> Sealer {
        Sealer {
            key: rand::random(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key size")
    }

    /// `payload` (which must not be trusted to stay secret) with its tag.
    pub fn seal(&self, payload: &str) -> String {
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// The payload of a token this sealer made, if it is unaltered. The tag is
    /// compared in constant time.
    pub fn open<'a>(&self, token: &'a str) -> Option<&'a str> {
        let (payload, tag) = token.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).ok()?;
        Some(payload)
    }
}

impl Default for Sealer {
    fn default() -> Self {
        Sealer::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unaltered_tokens_of_this_key_open() {
        let s = Sealer::new();
        let token = s.seal("0.500");
        assert_eq!(s.open(&token), Some("0.500"));
        assert_eq!(s.open(&token.replacen("0.5", "0.6", 1)), None);
        assert_eq!(s.open("0.500"), None);
        assert_eq!(Sealer::new().open(&token), None, "another key");
    }
}

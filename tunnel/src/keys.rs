//! WireGuard X25519 keys in the base64 text form that `wg genkey` / `wg pubkey` use.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::fmt;
use std::str::FromStr;

/// Why a key text was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not valid base64 ({0}); a WireGuard key is 44 characters of base64 ending in '='")]
    Base64(String),
    #[error("decodes to {0} bytes, a WireGuard key has 32")]
    Length(usize),
}

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| KeyError::Base64(e.to_string()))?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| KeyError::Length(len))
}

/// A node's static private key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct PrivateKey(x25519_dalek::StaticSecret);

impl PrivateKey {
    /// A fresh key from the operating system's random source, clamped as `wg genkey` does.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
        Self::from_bytes(clamp(bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(x25519_dalek::StaticSecret::from(bytes))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// The base64 text for the key file. Handle with care: this is the secret.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    /// The key for the X25519 code (boringtun takes a `StaticSecret`).
    pub fn secret(&self) -> &x25519_dalek::StaticSecret {
        &self.0
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(Self::from_bytes)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// What `wg genkey` does to 32 random bytes so that they form a valid X25519 scalar.
fn clamp(mut b: [u8; 32]) -> [u8; 32] {
    b[0] &= 248;
    b[31] &= 127;
    b[31] |= 64;
    b
}

/// A node's public key; `Display` gives the base64 form.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(Self)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vector produced with wireguard-tools: `echo PRIV | wg pubkey`.
    const PRIV: &str = "8Pne7fuNzfYxCI+nCSLKe9zq+PLNwSC3C+nnQV+5G0A=";
    const PUB: &str = "adTwhzN2MEIFbd0UoTLjAjv5fauncegE7yDvJVSaUhc=";

    #[test]
    fn derives_the_same_public_key_as_wg() {
        let key: PrivateKey = PRIV.parse().unwrap();
        assert_eq!(key.public_key().to_string(), PUB);
        assert_eq!(key.to_base64(), PRIV);
    }

    #[test]
    fn generated_keys_are_clamped_and_round_trip() {
        let key = PrivateKey::generate();
        let bytes = key.secret().to_bytes();
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 0xc0, 0x40);
        let again: PrivateKey = key.to_base64().parse().unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_ne!(PrivateKey::generate().public_key(), key.public_key());
    }

    #[test]
    fn refuses_bad_text() {
        assert!(matches!(
            "not base64!".parse::<PublicKey>(),
            Err(KeyError::Base64(_))
        ));
        assert_eq!("AAAA".parse::<PublicKey>(), Err(KeyError::Length(3)));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key: PrivateKey = PRIV.parse().unwrap();
        assert!(!format!("{key:?}").contains(&PRIV[..10]));
    }
}

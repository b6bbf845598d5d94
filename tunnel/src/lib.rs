//! Userspace WireGuard for orch: keys, and (built on them) the boringtun tunnel.

pub mod device;
pub mod keys;
pub mod link;

pub use keys::{KeyError, PrivateKey, PublicKey};

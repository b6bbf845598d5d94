//! Pure decisions about the pair, with no I/O: who holds a site's role and the rule for a
//! site never written yet ([`roles`]), whether the tunnel and the peer's agent count as up
//! ([`peer`]). The daemon feeds these with what it observed and acts on the answers; the
//! failover state machine belongs here too.

pub mod failover;
pub mod peer;
pub mod roles;

//! Pure decisions about the pair, with no I/O: who holds a site's role and the rule for a
//! site never written yet ([`roles`]), whether the tunnel and the peer's agent count as up
//! ([`peer`]), the failover state machine of a site on its standby ([`failover`]) and
//! what the site's DNS lock record says ([`lock`]), and what a master makes of the peer's
//! and the DNS's word when it may have been replaced ([`recovery`]). The daemon feeds these with what it
//! observed and acts on the answers.

pub mod failover;
pub mod lock;
pub mod peer;
pub mod recovery;
pub mod roles;

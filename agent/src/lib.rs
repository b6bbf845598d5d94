//! The parts that run on one orch host: the sync engine ([`sync`]: planner, sender,
//! confined receiver), database replication checks ([`db`]), peer RPC over the tunnel
//! ([`peer`]), the local control socket ([`control`]), the SQLite state store ([`state`])
//! and the task supervisor ([`supervisor`]). They know nothing of the config file: the
//! `orchestrator` crate builds them from it and makes the cluster's decisions.

pub mod control;
pub mod db;
pub mod peer;
pub mod state;
pub mod supervisor;
pub mod sync;

/// Milliseconds since the Unix epoch: the one clock the state store records in.
pub fn unix_millis(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// An error with all its causes, `outer: inner: innermost`, for log fields (`tracing`
/// shows only the outer message of a `%error`).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

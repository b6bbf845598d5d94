//! The agent's outbox task: sends what is due, hands to the peer's agent what this node
//! cannot send (see `crate::mail`).

use crate::config::Loaded;
use crate::mail::{deliver_due, HandOff, Mailer};
use agent::state::Store;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the agent looks for due messages.
pub const DELIVER_EVERY: Duration = Duration::from_secs(10);

/// The agent's task: sends what is due in the outbox until `stop`.
pub async fn run(
    loaded: Arc<Loaded>,
    store: Store,
    mailer: Arc<Mailer>,
    now_please: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) -> Result<(), Infallible> {
    let peer = loaded.peer();
    let hand_off = HandOff {
        addr: std::net::SocketAddr::new(peer.tunnel_ip, loaded.config.cluster.control_port),
        me: loaded.me.clone(),
        peer: peer.name.clone(),
        after: loaded.config.mail.hand_off_after,
    };
    loop {
        let now = agent::unix_millis(std::time::SystemTime::now());
        if let Err(e) = deliver_due(&store, &mailer, Some(&hand_off), now).await {
            tracing::warn!(error = %e, "Outbox not readable");
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(DELIVER_EVERY) => {}
            () = now_please.notified() => {}
        }
    }
}

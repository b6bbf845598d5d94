//! The agent's side of peer RPC: a heartbeat to the peer every few seconds, answers to
//! the peer's heartbeats, mail and space requests, the peer's pushes (handed to
//! [`Receiver`]), and the shared view of what the peer last said.

use super::receive::Receiver;
use super::roles::Roles;
use crate::cluster::peer::{PeerView, HEARTBEAT_EVERY};
use crate::config::Loaded;
use agent::peer::{self, Heartbeat, PeerHandler, Request, Response};
use agent::state::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tunnel::link::LinkStats;

const CALL_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Clone)]
pub struct Peering {
    pub loaded: Arc<Loaded>,
    pub store: Store,
    pub roles: Roles,
    pub receiver: Arc<Receiver>,
    pub tunnel: watch::Receiver<LinkStats>,
    pub view: watch::Sender<PeerView>,
    /// Wakes the mail task (a mail taken from the peer goes out at once).
    pub mail_now: Arc<tokio::sync::Notify>,
}

impl Peering {
    /// This node's heartbeat: its sites' masters and epochs, and where it sees the peer.
    fn heartbeat(&self) -> Heartbeat {
        crate::cluster::peer::heartbeat(
            &self.loaded.me,
            self.roles.all(),
            self.tunnel.borrow().endpoint,
        )
    }

    fn heard(&self, heartbeat: Heartbeat) {
        self.view.send_modify(|v| {
            v.last_contact = Some(Instant::now());
            v.heartbeat = Some(heartbeat);
            v.last_error = None;
        });
    }

    /// Sends a heartbeat every [`HEARTBEAT_EVERY`] until `stop`.
    pub async fn run_heartbeats(self, stop: CancellationToken) {
        let peer = self.loaded.peer();
        let addr = SocketAddr::new(peer.tunnel_ip, self.loaded.config.cluster.control_port);
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let request = Request::Heartbeat(self.heartbeat());
            let result = tokio::select! {
                () = stop.cancelled() => return,
                r = peer::call(addr, &self.loaded.me, &peer.name, &request, CALL_TIMEOUT) => r,
            };
            match result {
                Ok(Response::Heartbeat(h)) if h.check().is_ok() && h.node == peer.name => {
                    self.heard(h)
                }
                Ok(other) => self.failed(format!("unexpected answer: {other:?}")),
                Err(error) => self.failed(agent::error_chain(&error)),
            }
        }
    }

    fn failed(&self, error: String) {
        tracing::debug!(%error, "Heartbeat to the peer failed");
        self.view.send_modify(|v| v.last_error = Some(error));
    }
}

impl PeerHandler for Peering {
    async fn handle(&self, request: Request) -> Response {
        match request {
            Request::Heartbeat(h) => {
                if let Err(e) = h.check() {
                    return Response::Error(format!("heartbeat refused: {e}"));
                }
                if h.node != self.loaded.peer().name {
                    return Response::Error(format!("heartbeat from `{}`, not the peer", h.node));
                }
                self.heard(h);
                Response::Heartbeat(self.heartbeat())
            }
            Request::Mail(mail) => self.take_mail(mail).await,
            Request::Space { site } => match super::space::target_spaces(&self.loaded, &site) {
                Ok(spaces) => Response::Space(spaces),
                Err(e) => Response::Error(e.to_string()),
            },
            Request::Push(_) => Response::Error("a push is not a request".into()),
        }
    }

    async fn push(&self, open: agent::sync::wire::Open, stream: tokio::net::TcpStream) {
        self.receiver.receive(open, stream).await;
    }
}

impl Peering {
    /// Takes a mail the peer could not send into our outbox; we send it from now on.
    async fn take_mail(&self, mail: peer::HandedMail) -> Response {
        let message = match mail.check() {
            Ok(m) => m,
            Err(e) => return Response::Error(format!("mail refused: {e}")),
        };
        let peer = &self.loaded.peer().name;
        if &mail.origin != peer {
            return Response::Error(format!(
                "mail refused: it says it was written by `{}`, not by {peer}",
                mail.origin
            ));
        }
        let now = agent::unix_millis(std::time::SystemTime::now());
        match crate::mail::queue(
            &self.store,
            &mail.origin,
            mail.site.as_deref(),
            &mail.message_id,
            &mail.subject,
            &message,
            now,
        )
        .await
        {
            Ok(new) => {
                tracing::info!(subject = %mail.subject, from = %peer, new, "Took a mail from the peer to send");
                self.mail_now.notify_one();
                Response::MailAccepted { new }
            }
            Err(e) => Response::Error(format!("mail not queued: {}", agent::error_chain(&e))),
        }
    }
}

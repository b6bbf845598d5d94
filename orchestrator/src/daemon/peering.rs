//! The agent's side of peer RPC: a heartbeat to the peer every few seconds, answers to
//! the peer's heartbeats, mail and space requests, the peer's pushes (handed to
//! [`Receiver`]), and the shared view of what the peer last said.

use super::failover::{Ask, AskRequest};
use super::push::Pusher;
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
    /// A switchover's final push (and its dry run) goes out through it.
    pub pusher: Pusher,
    /// The other switchover steps go to the failover task.
    pub asks: tokio::sync::mpsc::Sender<AskRequest>,
    /// Says once when the peer's relayed mail goes past its caps.
    pub alerter: super::alerts::Alerter,
}

impl Peering {
    /// This node's heartbeat: its sites' masters and epochs, and where it sees the peer.
    fn heartbeat(&self) -> Heartbeat {
        crate::cluster::peer::heartbeat(
            &self.loaded.me,
            self.roles.all(),
            &self.roles.switching(),
            &self.roles.armed(),
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
            Request::Handover(h) => self.handover(h).await,
        }
    }

    async fn push(&self, open: agent::sync::wire::Open, stream: tokio::net::TcpStream) {
        self.receiver.receive(open, stream).await;
    }
}

impl Peering {
    /// A step of a switchover of one of this node's sites to the peer: the pushes here,
    /// the rest in the failover task (which checks that this node is the site's master
    /// at the epoch the peer names).
    async fn handover(&self, h: peer::Handover) -> Response {
        use agent::peer::{HandoverReply, HandoverStep};
        if let Err(e) = h.check() {
            return Response::Error(format!("handover refused: {e}"));
        }
        let ask = |h: peer::Handover| async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.asks
                .send((Ask::Handover(h), tx))
                .await
                .map_err(|_| "the failover task does not run".to_owned())?;
            let text = rx
                .await
                .map_err(|_| "the failover task stopped".to_owned())??;
            serde_json::from_str::<HandoverReply>(&text).map_err(|e| e.to_string())
        };
        let dry_run = match h.step {
            HandoverStep::Check => true,
            HandoverStep::Push => false,
            _ => {
                return match ask(h).await {
                    Ok(r) => Response::Handover(r),
                    Err(e) => Response::Error(e),
                }
            }
        };
        // The master's own checks first (the check step also answers whether it may
        // hand over at all).
        let check = peer::Handover {
            step: HandoverStep::Check,
            ..h.clone()
        };
        let mut reply = match ask(check).await {
            Ok(r) => r,
            Err(e) => return Response::Error(e),
        };
        if !dry_run {
            reply.lines.clear();
        }
        let me = &self.loaded.me;
        match self.pusher.push(&h.site, None, dry_run, false).await {
            Ok(results) => {
                for r in results {
                    use crate::api::PushOutcome;
                    let fine = matches!(r.outcome, PushOutcome::Ok | PushOutcome::DryRun);
                    reply.ok &= fine;
                    let (word, summary) = match r.summary.strip_prefix("dry run: ") {
                        Some(rest) if dry_run => (" (dry run)", rest),
                        _ => ("", r.summary.as_str()),
                    };
                    reply.lines.push(format!(
                        "{me}: final push of {}{word}: {summary}{}",
                        r.job,
                        if fine { "" } else { " — FAILED" }
                    ));
                }
            }
            // A site of databases alone: nothing to push.
            Err(super::push::PushError::NoJob { job: None, .. }) => {
                reply
                    .lines
                    .push(format!("{me}: final push: no sync jobs, nothing to push"));
            }
            Err(e) => {
                reply.ok = false;
                reply
                    .lines
                    .push(format!("{me}: final push: {}", agent::error_chain(&e)));
            }
        }
        Response::Handover(reply)
    }

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
        // A relay for the peer's own reports and alerts, not an open one.
        let from = self
            .loaded
            .config
            .mail
            .from
            .as_deref()
            .unwrap_or("orch@localhost");
        let allowed = match self.store.outbox_from(peer, now - 3_600_000).await {
            Ok((pending, last_hour)) => {
                crate::mail::relay_allowed(&message, from, pending, last_hour)
            }
            Err(e) => Err(format!(
                "the outbox cannot be read: {}",
                agent::error_chain(&e)
            )),
        };
        let key = "mail:relay-refused";
        if let Err(why) = allowed {
            let text = format!("a mail {peer} handed over for sending was refused: {why}");
            tracing::warn!(from = %peer, %why, "Relayed mail refused");
            self.alerter.raise(key, None, &text).await;
            return Response::Error(format!("mail refused: {why}"));
        }
        self.alerter.clear(key).await;
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
                let subject = agent::inert(&mail.subject, 200);
                tracing::info!(%subject, from = %peer, new, "Took a mail from the peer to send");
                self.mail_now.notify_one();
                Response::MailAccepted { new }
            }
            Err(e) => Response::Error(format!("mail not queued: {}", agent::error_chain(&e))),
        }
    }
}

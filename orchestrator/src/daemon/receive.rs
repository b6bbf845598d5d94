//! The receiving end of the peer's pushes: admission (only for a site whose master, by
//! this node's own role owner, is the peer, under the same epoch, into this node's
//! configured path for the job), one session per job, and the session's record.
//!
//! Admission holds for the whole session, not only at its start: a session watches the
//! site's role and stops at its next frame, recording nothing as confirmed, as soon as
//! the role moves on (a failover or switchover while a push was under way).

use super::roles::Roles;
use crate::cluster::roles::SiteRole;
use crate::config::Loaded;
use agent::state::{NewEvent, Outcome, Store};
use agent::sync::recv::{self, Stop};
use agent::sync::wire::{self, Open, ToSender};
use agent::unix_millis;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// A push connection that stays silent this long is given up.
pub const IO_TIMEOUT: Duration = Duration::from_secs(1800);

/// Why a push from the peer was refused before its session started.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "push protocol {offered} offered, this agent speaks {}: upgrade the older one",
        wire::SYNC_PROTOCOL
    )]
    Protocol { offered: u32 },
    #[error("no site `{site}` in {me}'s config")]
    UnknownSite { site: String, me: String },
    #[error("site {site} has no sync job `{job}` in {me}'s config")]
    UnknownJob {
        site: String,
        job: String,
        me: String,
    },
    #[error("{master} is master of {site} here (epoch {epoch}), not {peer}: a push goes from the master only")]
    NotMaster {
        site: String,
        master: String,
        epoch: i64,
        peer: String,
    },
    #[error("{me} is at epoch {mine} of {site} here, the sender at {theirs}: the agents must agree on the master first")]
    Epoch {
        me: String,
        site: String,
        mine: i64,
        theirs: i64,
    },
    #[error("job {job} has no path for {me}")]
    NoPath { job: String, me: String },
    #[error("reading the job's manifest")]
    Store(#[from] agent::state::StoreError),
}

/// The running session of one job.
#[derive(Default)]
struct Slot {
    /// The running session's stop and a handle on its socket.
    current: Option<(Arc<Stop>, std::net::TcpStream)>,
    /// Held while a session runs.
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// Serves the peer's pushes; owned by the peer RPC handler.
pub struct Receiver {
    loaded: Arc<Loaded>,
    store: Store,
    roles: Roles,
    /// Sessions by `site/job`. A std mutex: never held across an `.await`.
    sessions: Mutex<HashMap<String, Slot>>,
}

impl Receiver {
    pub fn new(loaded: Arc<Loaded>, store: Store, roles: Roles) -> Receiver {
        Receiver {
            loaded,
            store,
            roles,
            sessions: Mutex::default(),
        }
    }

    /// Serves one push from the peer on `stream`, whose `open` was read already.
    pub async fn receive(&self, open: Open, stream: tokio::net::TcpStream) {
        let peer = self.loaded.peer().name.clone();
        let mut phases = agent::sync::Phases::default();
        let (target, role) = match self.admit(&open).await {
            Ok(admitted) => admitted,
            Err(refusal) => {
                let message = match &refusal {
                    Refusal::Store(e) => format!("{refusal}: {}", agent::error_chain(e)),
                    other => other.to_string(),
                };
                tracing::warn!(site = %open.site, job = %open.job, %message, "Refused a push from {peer}");
                let mut buf = Vec::new();
                if wire::write_msg(&mut buf, &ToSender::Error { message }).is_ok() {
                    let mut stream = stream;
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, &buf).await;
                }
                return;
            }
        };
        phases.mark("admit, load manifest");
        let Ok(stream) = stream.into_std() else {
            return;
        };
        if agent::sync::tune(&stream, IO_TIMEOUT).is_err() {
            return;
        }
        // One session per job: a newer push supersedes one still running (its sender may
        // have died, taking its end of the tunnel along), which stops before this starts.
        let key = format!("{}/{}", open.site, open.job);
        let lock = {
            let Ok(mut sessions) = self.sessions.lock() else {
                return;
            };
            let slot = sessions.entry(key.clone()).or_default();
            if let Some((stop, old)) = slot.current.take() {
                stop.stop("superseded by a newer push of the same job");
                let _ = old.shutdown(std::net::Shutdown::Both);
            }
            if let Ok(clone) = stream.try_clone() {
                slot.current = Some((Arc::clone(&target.stop), clone));
            }
            Arc::clone(&slot.lock)
        };
        let _turn = lock.lock().await;
        let mine = Arc::clone(&target.stop);
        let fence = match (self.roles.watch(&open.site), stream.try_clone()) {
            (Ok(roles), Ok(socket)) => Some(tokio::spawn(fence(
                roles,
                role,
                Arc::clone(&mine),
                socket,
                open.site.clone(),
            ))),
            _ => None,
        };
        let (site, job, dry_run) = (open.site.clone(), open.job.clone(), open.dry_run);
        let handle = tokio::runtime::Handle::current();
        let keep = self.store.clone();
        let t0 = Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let mut save = |m: agent::sync::Manifest| {
                handle.block_on(keep.keep_manifest(
                    &open.site,
                    &open.job,
                    "receive",
                    Arc::new(m),
                    unix_millis(SystemTime::now()),
                ));
                Ok(())
            };
            recv::receive(stream, &open, &target, &mut save)
        })
        .await;
        if let Some(fence) = fence {
            fence.abort();
        }
        // Done: forget this session's socket (unless a newer one took the slot already).
        if let Ok(mut sessions) = self.sessions.lock() {
            if let Some(slot) = sessions.get_mut(&key) {
                if slot
                    .current
                    .as_ref()
                    .is_some_and(|(stop, _)| Arc::ptr_eq(stop, &mine))
                {
                    slot.current = None;
                }
            }
        }
        if dry_run {
            return;
        }
        if let Ok(Ok(r)) = &done {
            phases.extend(&r.phases);
        }
        let (outcome, summary) = match done {
            Ok(Ok(r)) => {
                let diverged = match &r.diverged_dir {
                    Some(d) if !r.diverged.is_empty() => format!(
                        "; {} diverged entries kept in {}",
                        r.diverged.len(),
                        d.display()
                    ),
                    _ => String::new(),
                };
                (
                    if r.failed.is_empty() {
                        Outcome::Ok
                    } else {
                        Outcome::Warn
                    },
                    format!(
                        "received a push of {site}/{job} from {peer}: {} step(s), {} failed{diverged} in {:.1} s",
                        r.steps,
                        r.failed.len(),
                        t0.elapsed().as_secs_f64()
                    ),
                )
            }
            Ok(Err(e)) => (
                Outcome::Fail,
                format!("a push of {site}/{job} from {peer} stopped: {e}"),
            ),
            Err(e) => (
                Outcome::Fail,
                format!("a push of {site}/{job} from {peer}: the thread failed: {e}"),
            ),
        };
        tracing::info!("{summary}");
        let event = NewEvent {
            at: unix_millis(SystemTime::now()),
            site: Some(&site),
            kind: agent::state::EventKind::Receive,
            outcome,
            summary: &summary,
            detail: None,
        };
        if let Err(e) = self.store.record(&event).await {
            tracing::warn!(
                error = agent::error_chain(&e),
                "Could not record a received push"
            );
        }
        phases.mark("record event");
        agent::memory::release();
        phases.mark("release memory");
        tracing::info!(target: "orch::profile", site = %site, job = %job, "receive: {}", phases.line());
    }

    /// The session's target if the push may start, and the role it was admitted under.
    async fn admit(&self, open: &Open) -> Result<(recv::Target, SiteRole), Refusal> {
        let loaded = &self.loaded;
        let me = loaded.me.clone();
        let peer = &loaded.peer().name;
        if open.protocol != wire::SYNC_PROTOCOL {
            return Err(Refusal::Protocol {
                offered: open.protocol,
            });
        }
        let site = loaded
            .config
            .site(&open.site)
            .ok_or_else(|| Refusal::UnknownSite {
                site: agent::sync::shown(&open.site),
                me: me.clone(),
            })?;
        let job = site
            .sync
            .iter()
            .find(|j| j.name == open.job)
            .ok_or_else(|| Refusal::UnknownJob {
                site: site.name.clone(),
                job: agent::sync::shown(&open.job),
                me: me.clone(),
            })?;
        // Every configured site has a role (the owner loaded them all at start).
        let role = self
            .roles
            .get(&site.name)
            .map_err(|_| Refusal::UnknownSite {
                site: site.name.clone(),
                me: me.clone(),
            })?;
        if role.master != *peer {
            return Err(Refusal::NotMaster {
                site: site.name.clone(),
                master: role.master,
                epoch: role.epoch,
                peer: peer.clone(),
            });
        }
        if role.epoch != open.epoch {
            return Err(Refusal::Epoch {
                me,
                site: site.name.clone(),
                mine: role.epoch,
                theirs: open.epoch,
            });
        }
        let root = job
            .paths
            .get(&loaded.me)
            .ok_or_else(|| Refusal::NoPath {
                job: job.name.clone(),
                me: me.clone(),
            })?
            .clone();
        let manifest = self
            .store
            .manifest(&site.name, &job.name, "receive")
            .await?;
        // The first push after a role change keeps what it would overwrite or delete; so
        // does the first push ever received here (a former master that never received
        // one, or a replica seeded by hand): nothing confirms it holds only copies. A
        // file already equal to what arrives is left in place, so a fresh or identical
        // replica keeps nothing.
        let diverge = match &manifest {
            Some(m) => m.epoch < role.epoch,
            None => true,
        };
        let target = recv::Target {
            root,
            diverged_base: loaded.me().state_dir.join("diverged").join(&site.name),
            manifest,
            epoch: role.epoch,
            diverge,
            keep_setuid: job.keep_setuid,
            max_delete: job.max_delete.limit(),
            exclude: job.exclude.clone(),
            reserve: loaded.me().reserve,
            state_dir: Some(loaded.me().state_dir.clone()),
            idle: IO_TIMEOUT,
            stop: Arc::default(),
        };
        Ok((target, role))
    }
}

/// Stops the session (at its next frame; its socket's read side is shut to wake it) once
/// the site's role is no longer the one it was admitted under.
async fn fence(
    roles: tokio::sync::watch::Receiver<SiteRole>,
    admitted: SiteRole,
    stop: Arc<Stop>,
    socket: std::net::TcpStream,
    site: String,
) {
    let Some(now) = super::roles::moved_on(roles, &admitted).await else {
        return;
    };
    let reason = format!(
        "the role of {site} moved on during the push ({} is master at epoch {} here, the push began at epoch {}): refused",
        now.master, now.epoch, admitted.epoch
    );
    tracing::warn!(%site, epoch = now.epoch, "A push under way is stopped: the site's role changed");
    stop.stop(reason);
    let _ = socket.shutdown(std::net::Shutdown::Read);
}

#[cfg(test)]
mod tests;

//! Wires the config's `[[sites.X.sync]]` jobs to `agent::sync`'s sender: pushes from this
//! node while it is the site's master (on the job's cron schedule, on change with
//! `watch`, or from `orch push`), run records, alerts and the report after each scheduled
//! push. A push runs under the role it started with and stops if that role moves on.
//! The receiving end is `receive.rs`.

use super::alerts::Alerter;
use super::reports;
use super::roles::{RoleError, Roles};
use crate::api::{JobResult, ProgressView, PushOutcome};
use crate::cluster::roles::SiteRole;
use crate::config::{Loaded, Site, SyncJob};
use agent::state::{NewEvent, Outcome, PushRun, Store};
use agent::sync::plan::Step;
use agent::sync::recv::Stop;
use agent::sync::send::Progress;
use agent::sync::wire::{self, Open};
use agent::sync::{send, Excludes};
use agent::unix_millis;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A push connection that stays silent this long is given up (either side); a dead peer
/// is noticed sooner (see `agent::sync::tune`). Long: chunking a big basis file or making
/// a batch durable may keep the receiver quiet for a while.
const IO_TIMEOUT: Duration = super::receive::IO_TIMEOUT;
/// At most this many steps of a dry run are listed.
const DRY_RUN_LIST: usize = 10_000;

#[derive(Clone)]
pub struct Pusher {
    pub loaded: Arc<Loaded>,
    pub store: Store,
    pub roles: Roles,
    pub alerter: Alerter,
    pub reports: reports::Context,
    /// The push under way, for `orch push`'s progress bar.
    pub current: Arc<Mutex<Option<Current>>>,
    /// One push at a time.
    pub one: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Clone)]
pub struct Current {
    pub site: String,
    pub job: String,
    pub started: Instant,
    pub progress: Arc<Progress>,
}

impl Pusher {
    pub fn progress(&self) -> Option<ProgressView> {
        let cur = self.current.lock().ok()?.clone()?;
        let p = &cur.progress;
        Some(ProgressView {
            site: cur.site,
            job: cur.job,
            phase: p.phase.lock().map(|g| g.clone()).unwrap_or_default(),
            steps_done: p.steps_done.load(std::sync::atomic::Ordering::Relaxed),
            steps_total: p.steps_total.load(std::sync::atomic::Ordering::Relaxed),
            bytes_sent: p.bytes_sent.load(std::sync::atomic::Ordering::Relaxed),
            elapsed_ms: cur.started.elapsed().as_millis() as u64,
        })
    }

    /// Pushes `site`'s jobs (or the one named) from this node, which must be its master.
    pub async fn push(
        &self,
        site: &str,
        job: Option<&str>,
        dry_run: bool,
        force: bool,
    ) -> Result<Vec<JobResult>, PushError> {
        let config = &self.loaded.config;
        let site = config
            .site(site)
            .ok_or_else(|| PushError::UnknownSite(site.to_owned()))?;
        let jobs: Vec<&SyncJob> = site
            .sync
            .iter()
            .filter(|j| job.is_none_or(|n| j.name == n))
            .collect();
        if jobs.is_empty() {
            return Err(PushError::NoJob {
                site: site.name.clone(),
                job: job.map(str::to_owned),
            });
        }
        let mut out = Vec::new();
        for job in jobs {
            let _one = self.one.lock().await;
            // Checked per job, under the lock: the role may have moved while we waited.
            let role = self.roles.get(&site.name)?;
            if !role.is_master(&self.loaded.me) {
                return Err(PushError::NotMaster {
                    me: self.loaded.me.clone(),
                    site: site.name.clone(),
                    master: role.master,
                });
            }
            if let Some(why) = self.roles.fenced(&site.name) {
                return Err(PushError::Fenced {
                    site: site.name.clone(),
                    why,
                });
            }
            out.push(self.push_job(site, job, &role, dry_run, force).await);
        }
        Ok(out)
    }

    async fn push_job(
        &self,
        site: &Site,
        job: &SyncJob,
        role: &SiteRole,
        dry_run: bool,
        force: bool,
    ) -> JobResult {
        let started_at = unix_millis(SystemTime::now());
        let t0 = Instant::now();
        let progress = Arc::new(Progress::default());
        if let Ok(mut c) = self.current.lock() {
            *c = Some(Current {
                site: site.name.clone(),
                job: job.name.clone(),
                started: t0,
                progress: Arc::clone(&progress),
            });
        }
        let mut result = self
            .exchange(site, job, role, dry_run, force, &progress)
            .await;
        let mut phases = match &mut result {
            Ok(sent) => std::mem::take(&mut sent.phases),
            Err(_) => agent::sync::Phases::default(),
        };
        if let Ok(mut c) = self.current.lock() {
            *c = None;
        }
        let duration_ms = t0.elapsed().as_millis() as i64;
        let mut run = PushRun {
            site: site.name.clone(),
            job: job.name.clone(),
            started_at,
            duration_ms,
            outcome: Outcome::Fail,
            files_total: 0,
            files_changed: 0,
            bytes_total: 0,
            bytes_sent: 0,
            deletions: 0,
            diverged: 0,
            errors: Vec::new(),
        };
        let mut res = JobResult {
            site: site.name.clone(),
            job: job.name.clone(),
            outcome: PushOutcome::Fail,
            summary: String::new(),
            run: None,
            changes: Vec::new(),
            diverged_dir: None,
        };
        match result {
            Err(e) => {
                run.errors.push(e.clone());
                res.summary = e;
            }
            Ok(mut sent) => {
                run.files_total = sent.files_total as i64;
                run.files_changed = sent.changed as i64;
                run.bytes_total = sent.bytes_total as i64;
                run.bytes_sent = sent.bytes_sent as i64;
                run.deletions = sent.deletions as i64;
                run.diverged = sent.diverged.len() as i64;
                run.errors.extend(sent.errors.iter().take(100).cloned());
                run.errors.extend(
                    sent.failed
                        .iter()
                        .take(100)
                        .map(|(p, e)| format!("{}: {e}", agent::sync::shown(p))),
                );
                if !sent.diverged.is_empty() {
                    run.errors.push(format!(
                        "{} entries that the replica held were moved aside into {} (diverged data, kept)",
                        sent.diverged.len(),
                        sent.diverged_dir.as_deref().unwrap_or("?")
                    ));
                }
                res.diverged_dir = sent.diverged_dir.clone();
                if dry_run && sent.refused.is_none() {
                    res.outcome = PushOutcome::DryRun;
                    res.changes = sent.steps.iter().take(DRY_RUN_LIST).map(describe).collect();
                    // What it would send at most: new and changed files' content (a
                    // delta sends less, a copy of a file the replica has nothing).
                    let content: u64 = sent
                        .steps
                        .iter()
                        .map(|s| match s {
                            Step::File { how, size, .. }
                                if !matches!(how, agent::sync::plan::How::Copy { .. }) =>
                            {
                                *size
                            }
                            _ => 0,
                        })
                        .sum();
                    res.summary = format!(
                        "dry run: {} change(s) of {} entries (up to {} of file content to send), {} deletion(s); nothing was written",
                        sent.steps.len(),
                        sent.files_total,
                        crate::units::bytes(content),
                        sent.deletions
                    );
                    return res;
                }
                if let Some(why) = &sent.refused {
                    run.errors.push(why.clone());
                    res.outcome = PushOutcome::Refused;
                    res.summary = why.clone();
                } else {
                    if let Some(m) = sent.manifest.take() {
                        self.store
                            .keep_manifest(
                                &site.name,
                                &job.name,
                                "send",
                                Arc::new(m),
                                unix_millis(SystemTime::now()),
                            )
                            .await;
                        phases.mark("keep manifest");
                    }
                    let warn = !sent.failed.is_empty() || !sent.errors.is_empty();
                    run.outcome = if warn { Outcome::Warn } else { Outcome::Ok };
                    res.outcome = if warn {
                        PushOutcome::Warn
                    } else {
                        PushOutcome::Ok
                    };
                    res.summary = format!(
                        "{} entries ({}), {} changed, {} sent, {} deletion(s){}{} in {:.1} s",
                        sent.files_total,
                        crate::units::bytes(sent.bytes_total),
                        sent.changed,
                        crate::units::bytes(sent.bytes_sent),
                        sent.deletions,
                        if sent.failed.is_empty() && sent.errors.is_empty() {
                            String::new()
                        } else {
                            format!(", {} not pushed", sent.failed.len() + sent.errors.len())
                        },
                        if sent.diverged.is_empty() {
                            String::new()
                        } else {
                            format!(", {} diverged kept", sent.diverged.len())
                        },
                        duration_ms as f64 / 1000.0
                    );
                }
            }
        }
        if dry_run {
            return res;
        }
        if let Err(e) = self.store.put_push_run(&run).await {
            tracing::warn!(error = agent::error_chain(&e), "Recording a push run");
        }
        phases.mark("record run");
        let summary = format!(
            "push {}/{}: {}: {}",
            site.name,
            job.name,
            res.outcome.as_str(),
            res.summary
        );
        let _ = self
            .store
            .record(&NewEvent {
                at: unix_millis(SystemTime::now()),
                site: Some(&site.name),
                kind: agent::state::EventKind::Push,
                outcome: run.outcome,
                summary: &summary,
                detail: None,
            })
            .await;
        phases.mark("record event");
        // What the push held (walk, plan, manifests) goes back to the system now, not at
        // the next big allocation.
        agent::memory::release();
        phases.mark("release memory");
        tracing::info!(target: "orch::profile", site = %site.name, job = %job.name, "send: {}", phases.line());
        let key = format!("push:{}:{}", site.name, job.name);
        if run.outcome == Outcome::Fail {
            tracing::warn!(site = %site.name, job = %job.name, "{}", res.summary);
            self.alerter.raise(&key, Some(&site.name), &summary).await;
        } else {
            tracing::info!(site = %site.name, job = %job.name, "{}", res.summary);
            self.alerter.clear(&key).await;
        }
        res.run = Some(run);
        res
    }

    async fn exchange(
        &self,
        site: &Site,
        job: &SyncJob,
        role: &SiteRole,
        dry_run: bool,
        force: bool,
        progress: &Arc<Progress>,
    ) -> Result<send::Sent, String> {
        let me = &self.loaded.me;
        let root = job
            .paths
            .get(me)
            .ok_or_else(|| format!("job {} has no path for {me}", job.name))?
            .clone();
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("the source {} is not a directory; nothing pushed", root.display())),
            Err(e) => {
                return Err(format!(
                    "the source {} cannot be read ({e}); nothing pushed (an unmounted disk must never empty the replica)",
                    root.display()
                ))
            }
        }
        let excludes = Excludes::new(&job.exclude)?;
        let mut phases = agent::sync::Phases::default();
        let manifest = self
            .store
            .manifest(&site.name, &job.name, "send")
            .await
            .map_err(|e| e.to_string())?;
        phases.mark("load manifest");
        let open = Open {
            protocol: wire::SYNC_PROTOCOL,
            site: site.name.clone(),
            job: job.name.clone(),
            epoch: role.epoch,
            generation: manifest.as_ref().map(|m| m.generation.clone()),
            dry_run,
            force,
            root_meta: agent::sync::walk::root_meta(&root).ok(),
        };
        let peer = self.loaded.peer();
        let addr =
            std::net::SocketAddr::new(peer.tunnel_ip, self.loaded.config.cluster.control_port);
        let stream = agent::peer::open_push(addr, me, &peer.name, &open, Duration::from_secs(30))
            .await
            .map_err(|e| format!("{}: {}", peer.name, agent::error_chain(&e)))?;
        let stream = stream.into_std().map_err(|e| e.to_string())?;
        agent::sync::tune(&stream, IO_TIMEOUT).map_err(|e| e.to_string())?;
        phases.mark("connect");
        let max_delete = job.max_delete.limit();
        let progress = Arc::clone(progress);
        let stop = Arc::new(Stop::default());
        let fence = match (self.roles.watch(&site.name), stream.try_clone()) {
            (Ok(roles), Ok(socket)) => Some(tokio::spawn(fence(
                roles,
                role.clone(),
                Arc::clone(&stop),
                socket,
                site.name.clone(),
            ))),
            _ => None,
        };
        let sent = tokio::task::spawn_blocking(move || {
            let src = send::Source {
                root: &root,
                excludes: &excludes,
                manifest: manifest.as_deref(),
                max_delete,
                force,
                dry_run,
            };
            send::push(stream, &src, &progress).map_err(|e| e.to_string())
        })
        .await;
        if let Some(fence) = fence {
            fence.abort();
        }
        match (sent, stop.reason()) {
            (Ok(Err(_)), Some(reason)) => Err(reason.to_owned()),
            (Ok(Ok(mut sent)), _) => {
                phases.extend(&sent.phases);
                sent.phases = phases;
                Ok(sent)
            }
            (Ok(result), _) => result,
            (Err(e), _) => Err(format!("the push thread failed: {e}")),
        }
    }
}

/// Ends a push (its socket shut) once this node no longer holds the role it started under.
async fn fence(
    roles: tokio::sync::watch::Receiver<SiteRole>,
    started: SiteRole,
    stop: Arc<Stop>,
    socket: std::net::TcpStream,
    site: String,
) {
    let Some(now) = super::roles::moved_on(roles, &started).await else {
        return;
    };
    stop.stop(format!(
        "stopped: the role of {site} moved on during the push ({} is master at epoch {}, the push began at epoch {})",
        now.master, now.epoch, started.epoch
    ));
    let _ = socket.shutdown(std::net::Shutdown::Both);
}

/// Why a push could not start.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("no site `{0}` in the config")]
    UnknownSite(String),
    #[error("site {site} has {}", match job { Some(n) => format!("no sync job `{n}`"), None => "no sync jobs".to_owned() })]
    NoJob { site: String, job: Option<String> },
    #[error("{site} is fenced on this node: {why}; nothing is pushed until it knows")]
    Fenced { site: String, why: String },
    #[error(
        "{me} is not the master of {site} ({master} is): pushes go from the master; run it there"
    )]
    NotMaster {
        me: String,
        site: String,
        master: String,
    },
    #[error(transparent)]
    Role(#[from] RoleError),
}

/// One line of a dry run's listing.
fn describe(step: &Step) -> String {
    use agent::sync::plan::How;
    let p = agent::sync::shown(step.path());
    match step {
        Step::Delete { .. } => format!("- {p}"),
        Step::Mkdir { .. } => format!("+ {p}/"),
        Step::File { how, size, .. } => match how {
            How::Literal => format!("+ {p} ({})", crate::units::bytes(*size)),
            How::Copy { from } => format!("+ {p} (a copy of {})", agent::sync::shown(from)),
            How::Delta { .. } => {
                format!("+ {p} (changed, {}; a delta)", crate::units::bytes(*size))
            }
        },
        Step::Symlink { target, .. } => format!("+ {p} -> {}", agent::sync::shown(target)),
        Step::Hardlink { to, .. } => format!("+ {p} (hard link to {})", agent::sync::shown(to)),
        Step::Meta { .. } => format!("~ {p}"),
    }
}

/// Runs each job on its cron schedule (local time) while this node is the site's master;
/// after each scheduled push of a site, its report is mailed.
pub async fn run_schedule(p: Pusher, stop: CancellationToken) -> Result<(), RoleError> {
    let jobs: Vec<(String, String, crate::config::CronSchedule)> = p
        .loaded
        .config
        .sites
        .iter()
        .flat_map(|s| {
            s.sync.iter().filter_map(|j| {
                j.schedule
                    .clone()
                    .map(|c| (s.name.clone(), j.name.clone(), c))
            })
        })
        .collect();
    if jobs.is_empty() {
        stop.cancelled().await;
        return Ok(());
    }
    loop {
        let now = chrono::Local::now();
        let next = jobs
            .iter()
            .filter_map(|(s, j, c)| c.next_after(&now).map(|t| (t, s.clone(), j.clone())))
            .min_by_key(|(t, _, _)| *t);
        let Some((at, site, job)) = next else {
            stop.cancelled().await;
            return Ok(());
        };
        let wait = (at - now).to_std().unwrap_or_default();
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
        let Some(s) = p.loaded.config.site(&site) else {
            continue;
        };
        if !p.roles.get(&site)?.is_master(&p.loaded.me) {
            tracing::debug!(%site, %job, "Scheduled push skipped: this node is the standby");
            continue;
        }
        tracing::info!(%site, %job, "Scheduled push");
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            r = p.push(&site, Some(&job), false, false) => if let Err(e) = r {
                tracing::warn!(%site, %job, error = %e, "Scheduled push");
            },
        }
        if let Err(e) = reports::make(&p.reports, s, true).await {
            tracing::warn!(%site, error = %e, "The report after a scheduled push");
        }
    }
}

/// Pushes a `watch = true` job when its source changes: after 1 s without events, or 2 s
/// after the first (a steady trickle still pushes); a queue overflow pushes too (every
/// push walks the whole tree anyway).
pub async fn run_watch(
    p: Pusher,
    site: String,
    job: String,
    root: std::path::PathBuf,
    stop: CancellationToken,
) -> Result<(), RoleError> {
    use notify::Watcher as _;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = loop {
        let tx = tx.clone();
        let made = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
            // Reads (ours included) are not changes.
            if e.as_ref()
                .is_ok_and(|e| matches!(e.kind, notify::EventKind::Access(_)))
            {
                return;
            }
            let _ = tx.send(());
        })
        .and_then(|mut w| w.watch(&root, notify::RecursiveMode::Recursive).map(|()| w));
        match made {
            Ok(w) => break w,
            Err(e) => {
                tracing::warn!(%site, %job, path = %root.display(), error = %e, "Cannot watch the source yet; retrying in 30 s");
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(30)) => continue,
                }
            }
        }
    };
    tracing::info!(%site, %job, path = %root.display(), "Watching for changes");
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            got = rx.recv() => if got.is_none() { break },
        }
        let first = Instant::now();
        loop {
            let quiet = tokio::time::sleep(Duration::from_secs(1));
            let cap = tokio::time::sleep(Duration::from_secs(2).saturating_sub(first.elapsed()));
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = quiet => break,
                () = cap => break,
                _ = rx.recv() => {}
            }
        }
        if !p.roles.get(&site)?.is_master(&p.loaded.me) {
            continue;
        }
        while rx.try_recv().is_ok() {}
        tokio::select! {
            () = stop.cancelled() => break,
            r = p.push(&site, Some(&job), false, false) => if let Err(e) = r {
                tracing::warn!(%site, %job, error = %e, "Push on change");
            },
        }
    }
    let _ = watcher.unwatch(&root);
    Ok(())
}

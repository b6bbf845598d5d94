//! Wires the config's `[[sites.X.sync]]` jobs to `agent::sync`: pushes from this node when
//! it is the site's master (on the job's cron schedule, on change with `watch`, or from
//! `orch push`), the receiving end for the peer's pushes, run records, alerts and the
//! report after each scheduled push.

use crate::alerts::Alerter;
use crate::config::{Loaded, MaxDelete, Site, SyncJob};
use agent::state::{NewEvent, Outcome, PushRun, Store};
use agent::sync::plan::{Limit, Step};
use agent::sync::send::Progress;
use agent::sync::wire::{self, Open, ToSender};
use agent::sync::{recv, send, Excludes};
use agent::unix_millis;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// A push connection that stays silent this long is given up (either side); a dead peer
/// is noticed sooner (see `agent::sync::tune`). Long: chunking a big basis file or making
/// a batch durable may keep the receiver quiet for a while.
const IO_TIMEOUT: Duration = Duration::from_secs(1800);
/// At most this many steps of a dry run are listed.
const DRY_RUN_LIST: usize = 10_000;

#[derive(Clone)]
pub struct Pusher {
    pub loaded: Arc<Loaded>,
    pub store: Store,
    pub alerter: Alerter,
    pub reports: crate::reports::Context,
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

/// What `orch push` shows while it waits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgressView {
    pub site: String,
    pub job: String,
    pub phase: String,
    pub steps_done: u64,
    pub steps_total: u64,
    pub bytes_sent: u64,
    pub elapsed_ms: u64,
}

/// The result of one job's push.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub site: String,
    pub job: String,
    /// "ok", "warn" (some entries failed), "fail", "refused" or "dry-run".
    pub outcome: String,
    pub summary: String,
    pub run: Option<PushRun>,
    /// A dry run: what would change (`+` create or overwrite, `~` metadata, `-` delete).
    #[serde(default)]
    pub changes: Vec<String>,
    #[serde(default)]
    pub diverged_dir: Option<String>,
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
    ) -> Result<Vec<JobResult>, String> {
        let config = &self.loaded.config;
        let site = config
            .site(site)
            .ok_or_else(|| format!("no site `{site}` in the config"))?;
        let jobs: Vec<&SyncJob> = site
            .sync
            .iter()
            .filter(|j| job.is_none_or(|n| j.name == n))
            .collect();
        if jobs.is_empty() {
            return Err(match job {
                Some(n) => format!("site {} has no sync job `{n}`", site.name),
                None => format!("site {} has no sync jobs", site.name),
            });
        }
        let (master, _) = crate::dbcheck::roles(config, site, Some(&self.store)).await;
        if master != self.loaded.me {
            return Err(format!(
                "{} is not the master of {} ({master} is): pushes go from the master; run it there",
                self.loaded.me, site.name
            ));
        }
        let mut out = Vec::new();
        for job in jobs {
            let _one = self.one.lock().await;
            out.push(self.push_job(site, job, dry_run, force).await);
        }
        Ok(out)
    }

    async fn push_job(&self, site: &Site, job: &SyncJob, dry_run: bool, force: bool) -> JobResult {
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
        let result = self.exchange(site, job, dry_run, force, &progress).await;
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
            outcome: "fail".into(),
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
            Ok(sent) => {
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
                    res.outcome = "dry-run".into();
                    res.changes = sent.steps.iter().take(DRY_RUN_LIST).map(describe).collect();
                    res.summary = format!(
                        "dry run: {} change(s) of {} entries, {} deletion(s); nothing was written",
                        sent.steps.len(),
                        sent.files_total,
                        sent.deletions
                    );
                    return res;
                }
                if let Some(why) = &sent.refused {
                    run.errors.push(why.clone());
                    res.outcome = "refused".into();
                    res.summary = why.clone();
                } else {
                    if let Some(m) = &sent.manifest {
                        if let Err(e) = self
                            .store
                            .put_manifest(
                                &site.name,
                                &job.name,
                                "send",
                                m,
                                unix_millis(SystemTime::now()),
                            )
                            .await
                        {
                            run.errors.push(format!("keeping the manifest: {e}"));
                        }
                    }
                    let warn = !sent.failed.is_empty() || !sent.errors.is_empty();
                    run.outcome = if warn { Outcome::Warn } else { Outcome::Ok };
                    res.outcome = if warn { "warn" } else { "ok" }.into();
                    res.summary = format!(
                        "{} entries ({}), {} changed, {} sent, {} deletion(s){}{} in {:.1} s",
                        sent.files_total,
                        crate::report::bytes(sent.bytes_total),
                        sent.changed,
                        crate::report::bytes(sent.bytes_sent),
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
        let summary = format!(
            "push {}/{}: {}: {}",
            site.name, job.name, res.outcome, res.summary
        );
        let _ = self
            .store
            .record(&NewEvent {
                at: unix_millis(SystemTime::now()),
                site: Some(&site.name),
                kind: "push",
                outcome: run.outcome,
                summary: &summary,
                detail: None,
            })
            .await;
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
        let manifest = self
            .store
            .manifest(&site.name, &job.name, "send")
            .await
            .map_err(|e| e.to_string())?;
        let epoch = self
            .store
            .site_state(&site.name)
            .await
            .map_err(|e| e.to_string())?
            .map_or(1, |s| s.epoch);
        let open = Open {
            protocol: wire::SYNC_PROTOCOL,
            site: site.name.clone(),
            job: job.name.clone(),
            epoch,
            generation: manifest.as_ref().map(|m| m.generation.clone()),
            dry_run,
        };
        let peer = self.loaded.peer();
        let addr =
            std::net::SocketAddr::new(peer.tunnel_ip, self.loaded.config.cluster.control_port);
        let stream = agent::peer::open_push(addr, me, &peer.name, &open, Duration::from_secs(30))
            .await
            .map_err(|e| format!("{}: {}", peer.name, agent::error_chain(&e)))?;
        let stream = stream.into_std().map_err(|e| e.to_string())?;
        agent::sync::tune(&stream, IO_TIMEOUT).map_err(|e| e.to_string())?;
        let max_delete = match job.max_delete {
            MaxDelete::Percent(p) => Limit::Percent(p),
            MaxDelete::Count(n) => Limit::Count(n),
        };
        let progress = Arc::clone(progress);
        tokio::task::spawn_blocking(move || {
            let src = send::Source {
                root: &root,
                excludes: &excludes,
                manifest: manifest.as_ref(),
                max_delete,
                force,
                dry_run,
            };
            send::push(stream, &src, &progress).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("the push thread failed: {e}"))?
    }
}

/// One line of a dry run's listing.
fn describe(step: &Step) -> String {
    use agent::sync::plan::How;
    let p = agent::sync::shown(step.path());
    match step {
        Step::Delete { .. } => format!("- {p}"),
        Step::Mkdir { .. } => format!("+ {p}/"),
        Step::File { how, size, .. } => match how {
            How::Literal => format!("+ {p} ({})", crate::report::bytes(*size)),
            How::Copy { from } => format!("+ {p} (a copy of {})", agent::sync::shown(from)),
            How::Delta { .. } => {
                format!("+ {p} (changed, {}; a delta)", crate::report::bytes(*size))
            }
        },
        Step::Symlink { target, .. } => format!("+ {p} -> {}", agent::sync::shown(target)),
        Step::Hardlink { to, .. } => format!("+ {p} (hard link to {})", agent::sync::shown(to)),
        Step::Meta { .. } => format!("~ {p}"),
    }
}

#[derive(Default)]
struct Receiving {
    /// The running session's stop flag and socket.
    current: Option<(Arc<std::sync::atomic::AtomicBool>, std::net::TcpStream)>,
    /// Held while a session runs.
    lock: Arc<tokio::sync::Mutex<()>>,
}

static RECEIVING: std::sync::LazyLock<Mutex<std::collections::HashMap<String, Receiving>>> =
    std::sync::LazyLock::new(Mutex::default);

/// Serves a push from the peer: only for a site whose master (by this node's own state
/// store) is the peer, under the same epoch, into this node's configured path for the job.
pub async fn receive(loaded: Arc<Loaded>, store: Store, open: Open, stream: tokio::net::TcpStream) {
    let peer = loaded.peer().name.clone();
    let target = match admit(&loaded, &store, &open).await {
        Ok(t) => t,
        Err(message) => {
            tracing::warn!(site = %open.site, job = %open.job, %message, "Refused a push from {peer}");
            let mut buf = Vec::new();
            if wire::write_msg(&mut buf, &ToSender::Error { message }).is_ok() {
                let mut stream = stream;
                let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, &buf).await;
            }
            return;
        }
    };
    let Ok(stream) = stream.into_std() else {
        return;
    };
    if agent::sync::tune(&stream, IO_TIMEOUT).is_err() {
        return;
    }
    // One session per job: a newer push supersedes one still running (its sender may have
    // died, taking its end of the tunnel along), which stops before this one starts.
    let key = format!("{}/{}", open.site, open.job);
    let lock = {
        let Ok(mut active) = RECEIVING.lock() else {
            return;
        };
        let slot = active.entry(key.clone()).or_default();
        if let Some((stop, old)) = slot.current.take() {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = old.shutdown(std::net::Shutdown::Both);
        }
        if let Ok(clone) = stream.try_clone() {
            slot.current = Some((Arc::clone(&target.stop), clone));
        }
        Arc::clone(&slot.lock)
    };
    let _turn = lock.lock().await;
    let mine = Arc::clone(&target.stop);
    let (site, job, dry_run) = (open.site.clone(), open.job.clone(), open.dry_run);
    let handle = tokio::runtime::Handle::current();
    let keep = store.clone();
    let t0 = Instant::now();
    let done = tokio::task::spawn_blocking(move || {
        let mut save = |m: &agent::sync::Manifest| {
            handle
                .block_on(keep.put_manifest(
                    &open.site,
                    &open.job,
                    "receive",
                    m,
                    unix_millis(SystemTime::now()),
                ))
                .map_err(|e| e.to_string())
        };
        recv::receive(stream, &open, &target, &mut save)
    })
    .await;
    // Done: forget this session's socket (unless a newer one took the slot already).
    if let Ok(mut active) = RECEIVING.lock() {
        if let Some(slot) = active.get_mut(&key) {
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
                if r.failed.is_empty() { Outcome::Ok } else { Outcome::Warn },
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
    let _ = store
        .record(&NewEvent {
            at: unix_millis(SystemTime::now()),
            site: Some(&site),
            kind: "receive",
            outcome,
            summary: &summary,
            detail: None,
        })
        .await;
}

async fn admit(loaded: &Loaded, store: &Store, open: &Open) -> Result<recv::Target, String> {
    let peer = &loaded.peer().name;
    if open.protocol != wire::SYNC_PROTOCOL {
        return Err(format!(
            "push protocol {} offered, this agent speaks {}: upgrade the older one",
            open.protocol,
            wire::SYNC_PROTOCOL
        ));
    }
    let site = loaded.config.site(&open.site).ok_or_else(|| {
        format!(
            "no site `{}` in {}'s config",
            agent::sync::shown(&open.site),
            loaded.me
        )
    })?;
    let job = site
        .sync
        .iter()
        .find(|j| j.name == open.job)
        .ok_or_else(|| {
            format!(
                "site {} has no sync job `{}` in {}'s config",
                site.name,
                agent::sync::shown(&open.job),
                loaded.me
            )
        })?;
    let state = store
        .site_state(&site.name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} has no state for site {} yet", loaded.me, site.name))?;
    if &state.master != peer {
        return Err(format!(
            "{} is master of {} here (epoch {}), not {peer}: a push goes from the master only",
            state.master, site.name, state.epoch
        ));
    }
    if state.epoch != open.epoch {
        return Err(format!(
            "{} is at epoch {} of {} here, the sender at {}: the agents must agree on the master first",
            loaded.me, state.epoch, site.name, open.epoch
        ));
    }
    let root = job
        .paths
        .get(&loaded.me)
        .ok_or_else(|| format!("job {} has no path for {}", job.name, loaded.me))?
        .clone();
    let manifest = store
        .manifest(&site.name, &job.name, "receive")
        .await
        .map_err(|e| e.to_string())?;
    let pushed_before = store
        .manifest(&site.name, &job.name, "send")
        .await
        .map_err(|e| e.to_string())?
        .is_some();
    // The first push after a role change keeps what it would overwrite or delete.
    let diverge = match &manifest {
        Some(m) => m.epoch < state.epoch,
        None => pushed_before,
    };
    Ok(recv::Target {
        root,
        diverged_base: loaded.me().state_dir.join("diverged").join(&site.name),
        manifest,
        epoch: state.epoch,
        diverge,
        stop: Arc::default(),
    })
}

/// Runs each job on its cron schedule (local time) while this node is the site's master;
/// after each scheduled push of a site, its report is mailed.
pub async fn run_schedule(p: Pusher, stop: CancellationToken) -> Result<(), String> {
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
        let (master, _) = crate::dbcheck::roles(&p.loaded.config, s, Some(&p.store)).await;
        if master != p.loaded.me {
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
        if let Err(e) = crate::reports::make(&p.reports, s, true).await {
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
) -> Result<(), String> {
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
        let Some(s) = p.loaded.config.site(&site) else {
            break;
        };
        let (master, _) = crate::dbcheck::roles(&p.loaded.config, s, Some(&p.store)).await;
        if master != p.loaded.me {
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

//! Failover and recovery on a node, for every site (DESIGN §6): the I/O around
//! `cluster::failover`, `cluster::lock` and `cluster::recovery`.
//!
//! - **On a site's standby**, every tick (a tenth of `after`, 1–5 s) it asks the master's
//!   agent over the tunnel, the site's `health` URLs at the addresses the site's records
//!   hold at the authoritative server, its own witnesses, and reads its last database
//!   checks, and feeds [`Failover`] with what it saw. When that says take over, the
//!   takeover is journaled in the state store **before** the DNS lock is asked for, then
//!   the lock record and the site's records are swapped in one compare-and-swap, the new
//!   epoch recorded (through the role owner), the promote playbooks run, and an alert
//!   mailed. A kill at any moment resumes at the next start from the journal and what the
//!   lock record says ([`lock::resume`]): the lock is taken once, the epoch moves once,
//!   each playbook that finished is not run again.
//! - **On a site's master**, every tick it asks the peer's agent and (every
//!   [`MASTER_EVERY`], every tick while in doubt) the lock record, and
//!   `cluster::recovery` decides: still master → the site's records kept at its public
//!   address with the same compare-and-swap, the lock record as prerequisite; **fenced**
//!   while it can ask neither (no pushes, no record changes, its services left alone);
//!   **replaced** (a later epoch names the peer) → the new master recorded at once, its
//!   own name and the tunnel re-pointed, then the demote and rejoin playbooks, journaled
//!   like a takeover, and an alert.
//! - `orch ack`, `orch promote` (the planned switchover, in `switchover`, or `--force`)
//!   and the peer's switchover steps (this node its master) reach the site's task through
//!   [`Ask`].
//!
//! Each site has a task of its own: one site's long step (a rejoin's playbooks, a
//! switchover's final push) never holds another site's watch or switchover steps up.
//!
//! What it sees and why it acts or not is published for `orch status`, recorded in the
//! history when it changes, and alerted (holds that need a person, the takeover).

mod switchover;

use super::alerts::Alerter;
use super::probes;
use super::roles::Roles;
use super::space;
use crate::api::{FailoverStatus, Probe};
use crate::cluster::failover::{
    data_guard, DataGuard, Decision, Event, Failover, Hold, Observation,
};
use crate::cluster::lock::{self, Holder, Lock, MasterView, Resume};
use crate::cluster::peer::PeerView;
use crate::cluster::recovery::{DnsSeen, Recovery, Verdict};
use crate::cluster::roles::SiteRole;
use crate::config::{FailoverMode, Loaded, PublicIp, Site};
use crate::dns::{self, AnyProvider, Change, Kind, Swap};
use crate::notify::rfc3339;
use agent::peer::Heartbeat;
use agent::peer::{Request, Response};
use agent::state::{EventKind, NewEvent, Outcome, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tunnel::device::{Command as TunnelCommand, TunnelHandle};

/// How long one probe (agent, health URL, witness) may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long reading the site's records at the authoritative server may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(4);
/// How long one probe of the peer's agent answers for every site (their ticks, which
/// come together, ask it once).
const PROBE_SHARED: Duration = Duration::from_millis(500);
/// How often the master checks its site's records against its public address.
pub const MASTER_EVERY: Duration = Duration::from_secs(10);

/// The failover tick of a site: a tenth of `after`, between 1 and 5 seconds.
pub fn tick_for(after: Duration) -> Duration {
    (after / 10).clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// A takeover under way, kept in the state store from before the lock is asked for
/// until the takeover has ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Intent {
    pub from_master: String,
    pub from_epoch: i64,
    pub to_epoch: i64,
    /// This node's public address, which the records get.
    pub ip: IpAddr,
    /// Unix ms: since when the master looked lost, and when the takeover started.
    pub lost_since: i64,
    pub started: i64,
    /// What the probes saw, in words (for the alert).
    pub seen: String,
    pub stage: Stage,
    /// Promote playbooks that finished.
    pub promoted: Vec<String>,
    /// Asked by `orch promote --force` (an operator's decision), not decided by the
    /// failover logic.
    #[serde(default)]
    pub forced: bool,
    /// The lock taken by a planned switchover (`orch promote` without `--force`): the
    /// promote playbooks ran before the swap; the switchover itself reports.
    #[serde(default)]
    pub switchover: bool,
}

/// This node, master of a site, handing it over to its peer in a planned switchover:
/// kept from the peer's demote request until the peer takes the lock (then this node
/// rejoins), the peer asks to undo, or [`HANDOVER_EXPIRES`] passes without either
/// (then it serves again on its own).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Handing {
    pub to: String,
    /// The epoch this node is master at; the peer's lock will be one more.
    pub epoch: i64,
    /// Unix ms of the demote request.
    pub started: i64,
    /// Demote playbooks that finished.
    pub demoted: Vec<String>,
}

/// A planned switchover to this node (`orch promote` on the standby), kept in the state
/// store from just before the master is asked to demote until the DNS swap is journaled
/// (an [`Intent`] from then on) or the switchover has stopped and been undone. An agent
/// that starts with one was stopped in between: the switchover is undone (the master
/// serves again; this node follows it again when its promote playbooks had started),
/// never finished (the master waits at most [`HANDOVER_SWAP_BY`] for the swap).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Switching {
    pub from_master: String,
    pub from_epoch: i64,
    pub to_epoch: i64,
    /// Unix ms of the demote request.
    pub started: i64,
    /// The promote playbooks here had started.
    pub promoting: bool,
}

/// How long a demoted master waits for its peer to take the lock or undo before it
/// serves again on its own (the peer dead in the middle of a switchover). The peer does
/// not swap the DNS later than [`HANDOVER_SWAP_BY`] after the demote.
pub const HANDOVER_EXPIRES: Duration = Duration::from_secs(20 * 60);
pub const HANDOVER_SWAP_BY: Duration = Duration::from_secs(15 * 60);
/// How long after its demote a master handing over waits at least before it believes a
/// peer that says it is not switching over (a heartbeat the peer made before it asked
/// for the demote says so too; heartbeats are at most seconds old).
pub const HANDOVER_QUIET: Duration = Duration::from_secs(30);

/// The old master's way back, kept in the state store from the moment it learns it was
/// replaced until it is a standby again: the new role is recorded first (it never acts as
/// master again), then the demote and rejoin playbooks, each noted once it finished.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rejoin {
    pub to_master: String,
    pub to_epoch: i64,
    /// Who told: "the lock record" or the peer's agent.
    pub learned_from: String,
    pub started: i64,
    /// `demote:NAME` and `rejoin:NAME` that finished.
    pub done: Vec<String>,
    /// The step that failed, with its output: the site stays fenced until `orch ack`.
    pub failed: Option<String>,
    /// Replaced by a planned switchover it took part in (an operator's decision:
    /// automatic failover stays armed).
    #[serde(default)]
    pub switchover: bool,
}

/// What the state store keeps of a site's change of hands under way.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Journal {
    Takeover(Intent),
    Rejoin(Rejoin),
    Handing(Handing),
    Switching(Switching),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The lock is being asked for (or was, with no answer yet).
    Locking,
    /// The lock is this node's: the epoch and the promote playbooks follow.
    Locked,
}

/// What the control socket asks of the failover task.
#[derive(Debug, Clone)]
pub enum Ask {
    /// `orch ack SITE`.
    Ack(String),
    /// `orch promote SITE [--dry-run] [--force]`: a planned switchover to this node;
    /// with `force`, take the site over now, the old master taken to be dead: the
    /// guards skipped, the DNS lock still required. `run`: the caller's number, under
    /// which the switchover's lines are published.
    Promote {
        site: String,
        dry_run: bool,
        force: bool,
        run: u64,
    },
    /// A step of a planned switchover, asked by the peer (this node is the site's
    /// master); answered with a [`agent::peer::HandoverReply`] as JSON.
    Handover(agent::peer::Handover),
}

impl Ask {
    /// The site it is about.
    pub fn site(&self) -> &str {
        match self {
            Ask::Ack(site) | Ask::Promote { site, .. } => site,
            Ask::Handover(h) => &h.site,
        }
    }
}

/// A control request and where its answer goes: a text, or an error.
pub type AskRequest = (Ask, oneshot::Sender<Result<String, String>>);

/// What the task needs from the rest of the agent.
pub struct Task {
    pub loaded: Arc<Loaded>,
    pub store: Store,
    pub roles: Roles,
    pub alerter: Alerter,
    pub peer_view: watch::Receiver<PeerView>,
    pub tunnel: TunnelHandle,
    /// Each site's failover state, for `orch status`.
    pub status: watch::Sender<BTreeMap<String, FailoverStatus>>,
    /// Asks the dynamic DNS task to check this node's own name now.
    pub ddns_now: Arc<tokio::sync::Notify>,
    /// The lines of the switchover under way and its caller's number, for `orch promote`
    /// to print as they come.
    pub progress: watch::Sender<(u64, Vec<String>)>,
    /// Held by the switchover under way on this node (one at a time).
    pub switchovers: tokio::sync::Mutex<()>,
    /// The last probe of the peer's agent and when it ended: shared by the sites' ticks.
    pub agent_probe: tokio::sync::Mutex<Option<(Instant, Probe, Option<Heartbeat>)>>,
}

/// One site's failover on this node.
struct SiteRun {
    machine: Failover,
    armed: bool,
    dns: Option<AnyProvider>,
    /// The last data guard of each database taken while its check reached the master.
    guards: BTreeMap<String, DataGuard>,
    /// The addresses the records held at the last read.
    addresses: Vec<IpAddr>,
    /// The addresses the records held while the master's agent last answered: where the
    /// master served the site. A takeover finding others there stops (someone else
    /// moved the site).
    master_addresses: Vec<IpAddr>,
    /// The last state recorded in the history.
    recorded: String,
    next_master_check: Instant,
    intent: Option<Intent>,
    /// When this node took the site over (unix ms), since this agent started.
    failed_over_at: Option<i64>,
    /// The old master's way back, under way.
    rejoin: Option<Rejoin>,
    /// A planned switchover to the peer, under way on the master's side.
    handing: Option<Handing>,
    /// A planned switchover to this node, under way before its DNS swap.
    switching: Option<Switching>,
    /// The master side: replaced, fenced or still master.
    recovery: Recovery,
    /// A failed rejoin was alerted (cleared once the rejoin succeeds).
    rejoin_alerted: bool,
    /// Why a takeover stopped because someone else moved the site's records (shown while
    /// the machine holds for it, until `orch ack`).
    moved: Option<String>,
    /// The intent was made in this tick: its swap may be sent (a later tick that finds
    /// the lock not taken decides again instead).
    fresh: bool,
    probes: Vec<Probe>,
}

/// What the standby's probes saw in one tick, but the master's agent.
struct Gathered {
    read: Result<DnsRead, String>,
    health: Vec<Probe>,
    witnesses: Vec<bool>,
    data: DataGuard,
}

/// The lock record and the site's address records as the authoritative server has them.
struct DnsRead {
    lock_name: String,
    holder: Holder,
    lock_values: Vec<String>,
    records: BTreeMap<(String, Kind), Vec<String>>,
}

impl DnsRead {
    fn addresses(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .records
            .values()
            .flatten()
            .filter_map(|v| v.parse().ok())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The change of the lock record from what it holds now to `lock` (a prerequisite on
    /// its current value, or on its absence).
    fn lock_to(&self, lock: &Lock) -> Change {
        Change {
            name: self.lock_name.clone(),
            kind: Kind::Txt,
            expected: self.lock_values.clone(),
            new: vec![lock.to_string()],
        }
    }

    /// The changes that point every record at `ip` alone (the other address family's
    /// record removed), from what each holds now; unchanged records are left out.
    fn point_at(&self, records: &[String], ip: IpAddr) -> Vec<Change> {
        let kind = Kind::for_ip(ip);
        let other = if kind == Kind::A { Kind::Aaaa } else { Kind::A };
        let mut out = Vec::new();
        for name in records {
            let now = |k: Kind| {
                self.records
                    .get(&(name.clone(), k))
                    .cloned()
                    .unwrap_or_default()
            };
            let want = vec![ip.to_string()];
            if !dns::same_values(&now(kind), &want) {
                out.push(Change {
                    name: name.clone(),
                    kind,
                    expected: now(kind),
                    new: want,
                });
            }
            if !now(other).is_empty() {
                out.push(Change {
                    name: name.clone(),
                    kind: other,
                    expected: now(other),
                    new: Vec::new(),
                });
            }
        }
        out
    }
}

fn now_ms() -> i64 {
    agent::unix_millis(SystemTime::now())
}

/// Whether the heartbeat says the site is armed here: not while an automatic takeover is
/// under way (it ends disarmed, and a standby back meanwhile must not take the flag for an
/// `orch ack` given after it).
fn said_armed(armed: bool, intent: Option<&Intent>) -> bool {
    armed && !intent.is_some_and(|i| !i.forced && !i.switchover)
}

/// Whether this node is taking a site over in a planned switchover: from just before it
/// asks the master to demote until the switchover (and the takeover it journals for its
/// DNS swap) has ended. Said in the heartbeats: a master handing over waits while it is.
fn switching_over(switching: Option<&Switching>, intent: Option<&Intent>) -> bool {
    switching.is_some() || intent.is_some_and(|i| i.switchover)
}

/// Local wall-clock time of a unix-ms instant, for sentences.
fn clock(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// Unix ms of a tokio instant in the past.
fn wall(at: Instant) -> i64 {
    now_ms() - Instant::now().saturating_duration_since(at).as_millis() as i64
}

/// Runs `futures` at once; their outputs in order.
async fn all<T: Send + 'static>(futures: Vec<impl Future<Output = T> + Send + 'static>) -> Vec<T> {
    let mut set = tokio::task::JoinSet::new();
    let n = futures.len();
    for (i, f) in futures.into_iter().enumerate() {
        set.spawn(async move { (i, f.await) });
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(Ok((i, v))) = set.join_next().await {
        out[i] = Some(v);
    }
    out.into_iter().flatten().collect()
}

/// The agent's task: every site's failover, until `stop`. Each site has a task of its
/// own, so that one site's long step (a rejoin copying a database, a switchover's final
/// push, a held playbook) does not hold another site's watch up; this one hands each
/// control request to its site's task.
pub async fn run(
    task: Task,
    mut asks: mpsc::Receiver<AskRequest>,
    stop: CancellationToken,
) -> Result<(), std::io::Error> {
    let task = Arc::new(task);
    let mut sites = BTreeMap::new();
    let mut set = tokio::task::JoinSet::new();
    for site in &task.loaded.config.sites {
        let run = task.site_run(site).await;
        let (tx, rx) = mpsc::channel(4);
        sites.insert(site.name.clone(), tx);
        let (task, stop, name) = (Arc::clone(&task), stop.clone(), site.name.clone());
        set.spawn(async move {
            task.site_loop(&name, run, rx, stop).await;
            name
        });
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(ended) = set.join_next() => {
                // A site's task ends only when stopped: a panic. An agent that no longer
                // watches a site would promise what it does not do; its restart does.
                let what = match ended {
                    Ok(name) => format!("the failover task of {name} ended"),
                    Err(e) => format!("a site's failover task failed: {e}"),
                };
                return Err(std::io::Error::other(what));
            }
            Some((ask, reply)) = asks.recv() => {
                let name = ask.site().to_owned();
                let Some(tx) = sites.get(&name) else {
                    let _ = reply.send(Err(format!("no site `{name}` in {}'s config", task.me())));
                    continue;
                };
                if let Err(e) = tx.try_send((ask, reply)) {
                    let (why, (_, reply)) = match e {
                        mpsc::error::TrySendError::Full(r) => ("has requests waiting already", r),
                        mpsc::error::TrySendError::Closed(r) => ("has stopped", r),
                    };
                    let _ = reply.send(Err(format!(
                        "the failover task of {name} {why}; try again when `orch status` shows it idle"
                    )));
                }
            }
        }
    }
    while set.join_next().await.is_some() {}
    Ok(())
}

impl Task {
    /// A site's failover state at the agent's start, from the state store.
    async fn site_run(&self, site: &Site) -> SiteRun {
        let (armed, intent) = match self.store.failover(&site.name).await {
            Ok(kept) => kept,
            Err(e) => {
                // Not knowing whether it already failed over once, it does not do it again.
                tracing::error!(site = %site.name, error = agent::error_chain(&e), "Failover state unreadable; automatic failover disarmed");
                (false, None)
            }
        };
        let journal = intent.and_then(|text| match serde_json::from_str::<Journal>(&text) {
            Ok(j) => Some(j),
            Err(e) => {
                tracing::error!(site = %site.name, error = %e, "A takeover journal that does not parse; dropped");
                None
            }
        });
        let (mut intent, mut rejoin, mut handing, mut switching) = (None, None, None, None);
        match journal {
            Some(Journal::Takeover(i)) => intent = Some(i),
            Some(Journal::Rejoin(r)) => rejoin = Some(r),
            Some(Journal::Handing(h)) => handing = Some(h),
            Some(Journal::Switching(s)) => switching = Some(s),
            None => {}
        }
        self.roles.set_switching(
            &site.name,
            switching_over(switching.as_ref(), intent.as_ref()),
        );
        self.roles
            .set_armed(&site.name, said_armed(armed, intent.as_ref()));
        if let Some(s) = &switching {
            tracing::warn!(site = %site.name, from = %s.from_master, to_epoch = s.to_epoch, promoting = s.promoting, "A switchover to this node was cut off before its DNS swap: undoing it");
        }
        if let Some(h) = &handing {
            tracing::warn!(site = %site.name, to = %h.to, "Resuming a handover to the peer that was under way");
            self.roles
                .fence(&site.name, Some(format!("handing over to {}", h.to)));
        }
        if let Some(r) = &rejoin {
            tracing::warn!(site = %site.name, to_master = %r.to_master, to_epoch = r.to_epoch, "Resuming a rejoin that was under way");
            // Until it is done, nothing is pushed from here.
            self.roles.fence(
                &site.name,
                Some(format!("rejoining as the standby of {}", r.to_master)),
            );
        }
        if let Some(i) = &intent {
            tracing::warn!(site = %site.name, stage = ?i.stage, to_epoch = i.to_epoch, "Resuming a takeover that was under way");
        }
        SiteRun {
            machine: Failover::new(site.after, site.failover, armed),
            armed,
            dns: None,
            guards: BTreeMap::new(),
            addresses: Vec::new(),
            master_addresses: Vec::new(),
            recorded: String::new(),
            next_master_check: Instant::now(),
            intent,
            rejoin,
            handing,
            switching,
            recovery: Recovery::new(site.after),
            rejoin_alerted: false,
            failed_over_at: None,
            moved: None,
            fresh: false,
            probes: Vec::new(),
        }
    }

    /// One site's failover: a tick every tenth of its `after` (1–5 s), and the control
    /// requests about it in between, until `stop`.
    async fn site_loop(
        &self,
        name: &str,
        mut run: SiteRun,
        mut asks: mpsc::Receiver<AskRequest>,
        stop: CancellationToken,
    ) {
        let Some(site) = self.loaded.config.site(name) else {
            return;
        };
        let mut interval = tokio::time::interval(tick_for(site.after));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                Some((ask, reply)) = asks.recv() => {
                    let answer = self.answer(site, &mut run, ask).await;
                    let _ = reply.send(answer);
                    continue;
                }
                _ = interval.tick() => {}
            }
            // Stopping mid-takeover is safe: the journal resumes it at the next start.
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.tick(site, &mut run) => {}
            }
        }
    }

    /// A control request about `site`.
    async fn answer(&self, site: &Site, run: &mut SiteRun, ask: Ask) -> Result<String, String> {
        match ask {
            Ask::Ack(_) => self.ack(site, run).await,
            Ask::Promote {
                dry_run,
                force: true,
                ..
            } => self.force_promote(site, run, dry_run).await,
            Ask::Promote {
                dry_run,
                force: false,
                run: caller,
                ..
            } => {
                // One switchover at a time on this node: `orch promote` prints the
                // lines of the one under way.
                let Ok(_one) = self.switchovers.try_lock() else {
                    return Err(format!(
                        "another switchover is under way on {} (see `orch status`); one at a time — nothing was changed",
                        self.me()
                    ));
                };
                self.progress.send_replace((caller, Vec::new()));
                let answer = self.switchover(site, run, dry_run).await;
                // `orch promote` prints the rest from the answer.
                self.progress.send_replace((0, Vec::new()));
                answer
            }
            Ask::Handover(h) => self.handover(site, run, h).await,
        }
    }

    fn me(&self) -> &str {
        &self.loaded.me
    }

    async fn tick(&self, site: &Site, run: &mut SiteRun) {
        // The standby's probes run while the master's agent is asked: one tick costs one
        // probe timeout at most.
        let gather = async {
            let standby = self
                .roles
                .get(&site.name)
                .is_ok_and(|r| !r.is_master(self.me()));
            if run.intent.is_some() || run.rejoin.is_some() || run.switching.is_some() || !standby {
                return None;
            }
            let zone = self.provider(site, run).await?;
            let seen = self.gather(site, run, &zone).await;
            Some((zone, seen))
        };
        let ((agent, beat), seen) = tokio::join!(self.probe_agent(), gather);
        self.site_tick(site, run, &agent, beat.as_ref(), seen).await;
    }

    fn peer(&self) -> &str {
        &self.loaded.peer().name
    }

    /// One heartbeat to the peer's agent, answered or not within [`PROBE_TIMEOUT`].
    async fn probe_agent(&self) -> (Probe, Option<Heartbeat>) {
        // The sites' ticks come together: one heartbeat answers them all (each its own
        // would take as many of the peer's connection slots).
        let mut last = self.agent_probe.lock().await;
        if let Some((at, probe, beat)) = last.as_ref() {
            if at.elapsed() < PROBE_SHARED {
                return (probe.clone(), beat.clone());
            }
        }
        let (probe, beat) = self.probe_agent_now().await;
        *last = Some((Instant::now(), probe.clone(), beat.clone()));
        (probe, beat)
    }

    async fn probe_agent_now(&self) -> (Probe, Option<Heartbeat>) {
        let peer = self.loaded.peer();
        let addr = SocketAddr::new(peer.tunnel_ip, self.loaded.config.cluster.control_port);
        let beat = crate::cluster::peer::heartbeat(
            self.me(),
            self.roles.all(),
            &self.roles.switching(),
            &self.roles.armed(),
            self.tunnel.stats().endpoint,
        );
        let request = Request::Heartbeat(beat);
        let call = agent::peer::call(addr, self.me(), &peer.name, &request, PROBE_TIMEOUT);
        let (beat, detail) = match tokio::time::timeout(PROBE_TIMEOUT, call).await {
            Ok(Ok(Response::Heartbeat(h))) if h.check().is_ok() && h.node == peer.name => {
                (Some(h), "answered".to_owned())
            }
            Ok(Ok(other)) => (None, format!("unexpected answer: {other:?}")),
            Ok(Err(e)) => (None, agent::error_chain(&e)),
            Err(_) => (
                None,
                format!(
                    "no answer within {}",
                    humantime::format_duration(PROBE_TIMEOUT)
                ),
            ),
        };
        // A heartbeat the peer sent us lately counts too.
        let heard = {
            let view = self.peer_view.borrow();
            view.last_contact
                .is_some_and(|t| t.elapsed() < PROBE_TIMEOUT)
                .then(|| view.heartbeat.clone())
                .flatten()
        };
        let probe = Probe {
            kind: "agent".into(),
            target: format!("{} at {addr}", peer.name),
            ok: beat.is_some() || heard.is_some(),
            detail,
            at: rfc3339(now_ms()),
        };
        (probe, beat.or(heard))
    }

    async fn site_tick(
        &self,
        site: &Site,
        run: &mut SiteRun,
        agent: &Probe,
        beat: Option<&Heartbeat>,
        seen: Option<(String, Gathered)>,
    ) {
        let role = match self.roles.get(&site.name) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(site = %site.name, error = agent::error_chain(&e), "No role for the site");
                return;
            }
        };
        if run.switching.is_some() && run.intent.is_none() {
            self.undo_cut_switchover(site, run, &role, agent).await;
            return;
        }
        self.follow_ack(site, run, &role, beat).await;
        if let Some((zone, seen)) = seen {
            self.watch_master(site, run, &role, agent, &zone, seen)
                .await;
            return;
        }
        if run.rejoin.is_some() {
            self.rejoin(site, run).await;
            return;
        }
        if run.intent.is_none() && role.is_master(self.me()) {
            self.master_tick(site, run, &role, beat).await;
            return;
        }
        let Some(zone) = self.provider(site, run).await else {
            return;
        };
        if run.intent.is_some() {
            let read = self.read_dns(site, run, &zone).await;
            self.continue_takeover(site, run, read).await;
        }
    }

    /// Disarmed by the last failover, on either node: once the peer says the site is
    /// armed there under the master and epoch both hold (its operator ran `orch ack`
    /// there, after the failover), automatic failover is armed here too. So `orch ack`
    /// works on either node, an ack given while this node was down holds when it is back,
    /// and the master's report tells what its standby would do.
    async fn follow_ack(
        &self,
        site: &Site,
        run: &mut SiteRun,
        role: &SiteRole,
        beat: Option<&Heartbeat>,
    ) {
        let busy = run.intent.is_some()
            || run.rejoin.is_some()
            || run.handing.is_some()
            || run.switching.is_some();
        if run.armed || busy {
            return;
        }
        let Some(beat) = beat else {
            return;
        };
        let peer_armed = beat
            .sites
            .get(&site.name)
            .is_some_and(|c| c.armed && c.master == role.master && c.epoch == role.epoch);
        if !peer_armed {
            return;
        }
        let text = format!(
            "automatic failover of {} re-armed: it is armed on {}, under the same master and epoch (`orch ack` there)",
            site.name, beat.node
        );
        self.rearm(site, run, false, &text).await;
    }

    /// Arms automatic failover of `site` here (`orch ack` also lifts a "records moved by
    /// someone else" hold: `lift_moved`), records it, clears the alerts it ends and says
    /// `text` in the history; `false`, nothing changed, when the store could not record it.
    async fn rearm(&self, site: &Site, run: &mut SiteRun, lift_moved: bool, text: &str) -> bool {
        let before = (run.armed, run.failed_over_at, run.moved.clone());
        run.armed = true;
        run.failed_over_at = None;
        if lift_moved {
            run.moved = None;
            run.machine.ack();
        } else {
            run.machine.arm();
        }
        if !self.journal(site, run).await {
            (run.armed, run.failed_over_at, run.moved) = before;
            if !run.armed {
                run.machine.disarm();
            }
            return false;
        }
        let holds: &[&str] = if lift_moved {
            &["disarmed", "records-moved"]
        } else {
            &["disarmed"]
        };
        for hold in holds {
            self.alerter
                .clear(&format!("failover:{}:{hold}", site.name))
                .await;
        }
        self.history(&site.name, Outcome::Info, text, None).await;
        run.recorded.clear();
        true
    }

    // ---- the master, and the old master's way back ---------------------------------

    /// On a site this node masters: was it replaced (the peer's word, or the lock
    /// record)? Fenced while it can ask neither; else its records kept current
    /// (`cluster::recovery` decides).
    async fn master_tick(
        &self,
        site: &Site,
        run: &mut SiteRun,
        role: &SiteRole,
        beat: Option<&Heartbeat>,
    ) {
        let theirs = beat.and_then(|h| h.sites.get(&site.name)).map(|c| Lock {
            master: c.master.clone(),
            epoch: c.epoch,
        });
        // Without a DNS provider nobody can take the site over behind this node's back
        // (a takeover needs the lock record): the DNS is never asked, never fences.
        let zone = self.provider(site, run).await;
        let mut read = None;
        let mut dns_error = String::new();
        let dns = match &zone {
            Some(zone) if run.recovery.fenced() || Instant::now() >= run.next_master_check => {
                run.next_master_check = Instant::now() + MASTER_EVERY;
                match self.read_dns(site, run, zone).await {
                    Ok(r) => {
                        let holder = r.holder.clone();
                        read = Some(r);
                        DnsSeen::Read(holder)
                    }
                    Err(e) => {
                        dns_error = e;
                        DnsSeen::Unreadable
                    }
                }
            }
            _ => DnsSeen::NotAsked,
        };
        match run
            .recovery
            .observe(Instant::now(), theirs.as_ref(), &dns, role)
        {
            Verdict::Replaced { lock, learned_from } => {
                self.replaced(site, run, &lock, learned_from.words()).await;
            }
            Verdict::Split { theirs, alert } => {
                // Orch never records two masters under one epoch (an epoch moves only
                // through the lock record's compare-and-swap, or a switchover both nodes
                // take part in); a restored backup can.
                let text = format!(
                    "fenced: {} and {} both hold {} at epoch {} (a restored backup?); nothing is guessed: fix the state by hand",
                    self.me(),
                    theirs.master,
                    site.name,
                    theirs.epoch
                );
                self.fence(site, run, text, alert).await;
            }
            Verdict::Fenced { since, alert } => {
                let text = format!(
                    "fenced: cannot tell whether {} was failed over (peer and DNS unreachable since {}); not pushing, not touching the records",
                    site.name,
                    clock(wall(since))
                );
                self.fence(site, run, text, alert).await;
            }
            Verdict::Master { fence_lifted } => {
                if fence_lifted {
                    self.unfence(site, run).await;
                }
                if run.handing.is_some() {
                    let dns_says = read.as_ref().map(|r| &r.holder);
                    let switching = beat
                        .and_then(|h| h.sites.get(&site.name))
                        .is_some_and(|c| c.switching);
                    self.still_handing(site, run, theirs.as_ref(), switching, dns_says)
                        .await;
                    return;
                }
                match read {
                    Some(read) => self.keep_records(site, run, role, read).await,
                    None if dns == DnsSeen::Unreadable => {
                        let text = format!(
                            "master; the authoritative DNS does not answer ({dns_error}); the peer agrees this node is master"
                        );
                        self.publish(site, run, "master", text, None, None);
                    }
                    None => {}
                }
            }
        }
    }

    /// Fences the site (no pushes) and says why; alerts when `alert` (once per fence).
    async fn fence(&self, site: &Site, run: &mut SiteRun, text: String, alert: bool) {
        self.roles.fence(&site.name, Some(text.clone()));
        if alert {
            self.alerter.fenced(&site.name, true, &text).await;
        }
        self.publish(site, run, "fenced", text, None, None);
    }

    async fn unfence(&self, site: &Site, run: &mut SiteRun) {
        self.roles.fence(&site.name, None);
        if run.recovery.alerted() {
            run.recovery.forget_alert();
            self.alerter.fenced(&site.name, false, "").await;
        }
        let text = format!(
            "{} is no longer fenced: the peer or the DNS answers",
            site.name
        );
        self.history(&site.name, Outcome::Info, &text, None).await;
    }

    /// This node, master of `site` by its own store, learns that `l` replaced it: it
    /// records the new master at once (it never acts as master again), re-points its
    /// name and the tunnel, then demotes and rejoins.
    async fn replaced(&self, site: &Site, run: &mut SiteRun, l: &Lock, learned_from: &str) {
        tracing::warn!(site = %site.name, lock = %l, %learned_from, "Replaced as master: demoting and rejoining");
        // A switchover's demote ran already: not again.
        let handing = run.handing.take();
        let switchover = handing.is_some();
        let done = handing
            .map(|h| h.demoted.iter().map(|n| format!("demote:{n}")).collect())
            .unwrap_or_default();
        run.rejoin = Some(Rejoin {
            to_master: l.master.clone(),
            to_epoch: l.epoch,
            learned_from: learned_from.to_owned(),
            started: now_ms(),
            done,
            failed: None,
            switchover,
        });
        self.roles.fence(
            &site.name,
            Some(format!("rejoining as the standby of {}", l.master)),
        );
        self.journal(site, run).await;
        let text = format!(
            "{} was failed over to {} at epoch {} ({learned_from} says \"{l}\"): {} steps down",
            site.name,
            l.master,
            l.epoch,
            self.me()
        );
        self.history(&site.name, Outcome::Warn, &text, None).await;
        // Its address has often changed: its name and the tunnel follow now.
        self.ddns_now.notify_one();
        self.tunnel.command(TunnelCommand::Reresolve);
        self.tunnel.command(TunnelCommand::Handshake);
        self.rejoin(site, run).await;
    }

    /// Runs the playbook `name` for the site (each step recorded in the history): the
    /// seconds it took, and its failure (the failing step with its output), if any.
    async fn run_playbook(
        &self,
        ctx: &crate::playbook::Context<'_>,
        name: &str,
    ) -> (f64, Option<String>) {
        let t0 = Instant::now();
        let mut quiet =
            |_: &crate::config::playbook::Step, _: Option<&crate::playbook::StepRecord>| {};
        let outcome = crate::playbook::run(ctx, name, Some(&self.store), &mut quiet).await;
        let failure = match outcome {
            Ok(report) if report.ok => None,
            Ok(report) => Some(report.failure().unwrap_or_else(|| format!("{name} failed"))),
            Err(e) => Some(format!("playbook {name}: {e}")),
        };
        (t0.elapsed().as_secs_f64(), failure)
    }

    /// The way back: the new role recorded, the demote then rejoin playbooks, an alert.
    async fn rejoin(&self, site: &Site, run: &mut SiteRun) {
        let Some(mut r) = run.rejoin.clone() else {
            return;
        };
        if let Some(failed) = &r.failed {
            let text = format!(
                "fenced: rejoining {} as the standby of {} failed: {}; fix it, then `orch ack {}` retries",
                site.name,
                r.to_master,
                failed.lines().next().unwrap_or_default(),
                site.name
            );
            self.publish(site, run, "fenced", text, None, None);
            return;
        }
        if let Err(e) = self
            .roles
            .advance(&site.name, &r.to_master, r.to_epoch)
            .await
        {
            let text = format!(
                "fenced: replaced by {} but the new role cannot be recorded: {}; retrying",
                r.to_master,
                agent::error_chain(&e)
            );
            self.publish(site, run, "fenced", text, None, None);
            return;
        }
        if r.switchover {
            // An operator's decision, which this node took part in: automatic failover
            // stays (or is again) armed.
            run.armed = true;
            run.machine.ack();
        } else {
            // The peer took the site over without this node: the pair had its automatic
            // failover.
            run.armed = false;
            run.machine.disarm();
        }
        let self_ip = self.public_ip().await;
        let ctx = crate::playbook::Context {
            loaded: &self.loaded,
            site,
            epoch: Ok(r.to_epoch),
            self_public_ip: self_ip,
            peer_public_ip: Err(format!(
                "{}'s address is in the site's records",
                r.to_master
            )),
        };
        let steps = site
            .demote
            .iter()
            .map(|n| ("demote", n))
            .chain(site.rejoin.iter().map(|n| ("rejoin", n)));
        let mut ran = Vec::new();
        for (list, name) in steps {
            let key = format!("{list}:{name}");
            if r.done.contains(&key) {
                ran.push(format!("{name} ok (before a restart)"));
                continue;
            }
            let text = format!(
                "replaced by {} at epoch {}: {list} playbook {name} running",
                r.to_master, r.to_epoch
            );
            self.publish(site, run, "rejoining", text, None, None);
            let (took, failure) = self.run_playbook(&ctx, name).await;
            if let Some(f) = failure {
                r.failed = Some(f.clone());
                run.rejoin = Some(r.clone());
                self.journal(site, run).await;
                let text = format!(
                    "{} was failed over to {}, but {list} playbook {name} failed on {}: the site stays fenced here until it is fixed and `orch ack {}` retries\n\n{f}",
                    site.name,
                    r.to_master,
                    self.me(),
                    site.name
                );
                let first = text.lines().next().unwrap_or_default().to_owned();
                self.history(&site.name, Outcome::Fail, &first, None).await;
                run.rejoin_alerted = true;
                self.alerter.fenced(&site.name, true, &text).await;
                self.publish(site, run, "fenced", format!("fenced: {first}"), None, None);
                return;
            }
            ran.push(format!("{name} ok ({took:.1} s)"));
            r.done.push(key);
            run.rejoin = Some(r.clone());
            self.journal(site, run).await;
        }
        run.rejoin = None;
        self.journal(site, run).await;
        self.roles.fence(&site.name, None);
        if std::mem::take(&mut run.rejoin_alerted) || run.recovery.alerted() {
            run.recovery.forget_alert();
            self.alerter.fenced(&site.name, false, "").await;
        }
        let playbooks = if ran.is_empty() {
            "none configured".to_owned()
        } else {
            ran.join(", ")
        };
        let detail = format!(
            "{} rejoined {} as standby of {} at epoch {} (learned from {}); demote and rejoin playbooks: {playbooks}.\n\nWhat was written on {} since the failover is kept in {}/diverged/{}/ by the first push from {}, and its report lists it. Automatic failover back to {} is disarmed until `orch ack {}`.",
            self.me(),
            site.name,
            r.to_master,
            r.to_epoch,
            r.learned_from,
            self.me(),
            self.loaded.me().state_dir.display(),
            site.name,
            r.to_master,
            self.me(),
            site.name
        );
        tracing::warn!(site = %site.name, master = %r.to_master, epoch = r.to_epoch, "Rejoined as standby");
        if r.switchover {
            // The switchover's own report tells; automatic failover stays armed.
            let text = format!(
                "{} handed {} over to {} (switchover, epoch {}) and follows it; rejoin playbooks: {playbooks}",
                self.me(),
                site.name,
                r.to_master,
                r.to_epoch
            );
            self.history(&site.name, Outcome::Info, &text, None).await;
            let text = format!(
                "standby of {} since a switchover at {} (epoch {})",
                r.to_master,
                clock(now_ms()),
                r.to_epoch
            );
            self.publish(site, run, "standby", text, None, None);
            return;
        }
        let first = detail.lines().next().unwrap_or_default().to_owned();
        self.history(&site.name, Outcome::Warn, &first, None).await;
        self.alerter.recovered(&site.name, &detail).await;
        let text = format!(
            "rejoined as standby of {} at epoch {} at {}; automatic failover disarmed until `orch ack {}`",
            r.to_master,
            r.to_epoch,
            clock(now_ms()),
            site.name
        );
        self.publish(site, run, "rejoined", text, None, None);
    }

    /// The standby's probes of one tick but the master's agent: the DNS, the health URLs
    /// at the records' addresses, the witnesses (those two at once), the data guard.
    async fn gather(&self, site: &Site, run: &mut SiteRun, zone: &str) -> Gathered {
        let read = self.read_dns(site, run, zone).await;
        if let Ok(r) = &read {
            let addrs = r.addresses();
            if !addrs.is_empty() {
                run.addresses = addrs;
            }
        }
        let witnesses = all(site
            .witnesses
            .iter()
            .map(|w| {
                let w = w.clone();
                async move { probes::witness(&w, PROBE_TIMEOUT).await }
            })
            .collect::<Vec<_>>());
        let (health, witnesses) = tokio::join!(self.probe_health(site, &run.addresses), witnesses);
        let data = self.data_guard(site, run).await;
        Gathered {
            read,
            health,
            witnesses,
            data,
        }
    }

    /// The site's DNS provider (made once) and its zone; `None`, said in the status, when
    /// the site has none or it cannot be made now.
    async fn provider(&self, site: &Site, run: &mut SiteRun) -> Option<String> {
        let configured = site
            .dns
            .as_ref()
            .and_then(|d| self.loaded.config.dns.get(d));
        let Some(configured) = configured.filter(|_| !site.records.is_empty()) else {
            self.publish(
                site,
                run,
                "off",
                format!(
                    "no DNS provider or records for {}: no automatic failover (set dns and records)",
                    site.name
                ),
                None,
                None,
            );
            return None;
        };
        if run.dns.is_none() {
            match dns::provider(configured).await {
                Ok(p) => run.dns = Some(p),
                Err(e) => {
                    let why = format!("the DNS provider cannot be used now: {e}");
                    self.publish(site, run, "holding", why, None, None);
                    return None;
                }
            }
        }
        Some(configured.zone.clone().unwrap_or_default())
    }

    /// The lock record and the address records at the authoritative server, within
    /// [`READ_TIMEOUT`].
    async fn read_dns(&self, site: &Site, run: &SiteRun, zone: &str) -> Result<DnsRead, String> {
        tokio::time::timeout(READ_TIMEOUT, self.read_dns_now(site, run, zone))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer within {}",
                    humantime::format_duration(READ_TIMEOUT)
                ))
            })
    }

    async fn read_dns_now(
        &self,
        site: &Site,
        run: &SiteRun,
        zone: &str,
    ) -> Result<DnsRead, String> {
        let dns = run.dns.as_ref().ok_or("no DNS provider")?;
        let lock_name = dns::orch_record(&site.name, zone);
        let lock_values = dns
            .published(&lock_name, Kind::Txt)
            .await
            .map_err(|e| agent::error_chain(&e))?;
        let mut records = BTreeMap::new();
        for name in &site.records {
            for kind in [Kind::A, Kind::Aaaa] {
                let values = dns
                    .published(name, kind)
                    .await
                    .map_err(|e| agent::error_chain(&e))?;
                records.insert((name.clone(), kind), values);
            }
        }
        Ok(DnsRead {
            lock_name,
            holder: Holder::read(&lock_values),
            lock_values,
            records,
        })
    }

    /// This node's public address, as `public_ip` says.
    async fn public_ip(&self) -> Result<IpAddr, String> {
        let source = &self.loaded.me().public_ip;
        if let PublicIp::Url(url) = source {
            let client = reqwest::Client::builder()
                .timeout(PROBE_TIMEOUT * 2)
                .build()
                .map_err(|e| e.to_string())?;
            return super::ddns::fetch_address(&client, url).await;
        }
        super::ddns::public_ip(source, &self.peer_view.borrow())
    }

    // ---- the standby ---------------------------------------------------------------

    async fn watch_master(
        &self,
        site: &Site,
        run: &mut SiteRun,
        role: &SiteRole,
        agent: &Probe,
        zone: &str,
        gathered: Gathered,
    ) {
        let Gathered {
            read,
            health,
            witnesses,
            data,
        } = gathered;
        if let Ok(r) = &read {
            // The highest epoch wins: a later lock naming the peer is the site's truth.
            if let Some(l) = r.holder.lock() {
                if l.epoch > role.epoch && l.master == self.peer() {
                    let l = l.clone();
                    self.learn(site, run, &l).await;
                    return;
                }
            }
            let addrs = r.addresses();
            if agent.ok && !addrs.is_empty() {
                run.master_addresses = addrs;
            }
        }
        let at = rfc3339(now_ms());
        let mut probes = vec![agent.clone()];
        probes.push(Probe {
            kind: "dns".into(),
            target: dns::orch_record(&site.name, zone),
            ok: read.is_ok(),
            detail: match &read {
                Ok(r) => format!("{}; records at {:?}", r.holder, r.addresses()),
                Err(e) => e.clone(),
            },
            at: at.clone(),
        });
        probes.extend(health.iter().cloned());
        for (w, ok) in site.witnesses.iter().zip(&witnesses) {
            probes.push(Probe {
                kind: "witness".into(),
                target: w.to_string(),
                ok: *ok,
                detail: if *ok { "answered" } else { "no answer" }.into(),
                at: at.clone(),
            });
        }
        probes.push(Probe {
            kind: "data".into(),
            target: format!("{} database(s)", site.databases.len()),
            ok: data == DataGuard::Ok,
            detail: data.problem().unwrap_or_else(|| "safe to take over".into()),
            at,
        });
        run.probes = probes;
        let observation = Observation {
            agent: agent.ok,
            health: health.iter().map(|p| p.ok).collect(),
            witnesses,
            dns_readable: read.is_ok(),
            data,
        };
        let decision = run.machine.observe(Instant::now(), &observation);
        self.alert_events(site, run, &role.master).await;
        let seen = seen(&observation);
        match decision {
            Decision::Watching => {
                let manual = if site.failover == FailoverMode::Manual {
                    " (failover = \"manual\")"
                } else {
                    ""
                };
                let disarmed = if run.armed {
                    String::new()
                } else {
                    format!(
                        "; automatic failover disarmed until `orch ack {}`",
                        site.name
                    )
                };
                let text = format!(
                    "watching {}: it answers ({seen}){manual}{disarmed}",
                    role.master
                );
                self.publish(site, run, "watching", text, None, None);
            }
            Decision::Counting { since, left } => {
                let text = format!(
                    "{} unreachable since {} ({seen}) → failing over in {} s",
                    role.master,
                    clock(wall(since)),
                    left.as_secs()
                );
                self.publish(site, run, "counting", text, Some(wall(since)), Some(left));
            }
            Decision::Holding { hold, lost_since } => {
                let explained = match (&hold, &run.moved) {
                    (Hold::RecordsMoved, Some(why)) => why.clone(),
                    _ => hold.explain(&site.name, &role.master),
                };
                let text = format!("{explained} ({seen})");
                let state = format!("holding:{}", hold.key());
                self.publish(site, run, &state, text, lost_since.map(wall), None);
            }
            Decision::TakenOver => {
                let text = format!(
                    "failed over to {} (epoch {}): automatic failover disarmed until `orch ack {}`",
                    role.master, role.epoch, site.name
                );
                self.publish(site, run, "failed-over", text, None, None);
            }
            Decision::FailOver { lost_since } => {
                let Ok(read) = read else {
                    // The machine takes over only while the DNS answers.
                    run.machine.lock_lost(true);
                    return;
                };
                let ip = match self.public_ip().await {
                    Ok(ip) => ip,
                    Err(e) => {
                        run.machine.lock_lost(true);
                        let text = format!(
                            "{} looks lost, but this node's public address is unknown ({e}): not failing over; retrying",
                            role.master
                        );
                        self.publish(
                            site,
                            run,
                            "holding:public-ip",
                            text,
                            Some(wall(lost_since)),
                            None,
                        );
                        return;
                    }
                };
                let intent = Intent {
                    from_master: role.master.clone(),
                    from_epoch: role.epoch,
                    to_epoch: role.epoch + 1,
                    ip,
                    lost_since: wall(lost_since),
                    started: now_ms(),
                    seen,
                    stage: Stage::Locking,
                    promoted: Vec::new(),
                    forced: false,
                    switchover: false,
                };
                run.intent = Some(intent);
                if !self.journal(site, run).await {
                    run.intent = None;
                    run.machine.lock_lost(true);
                    return;
                }
                run.fresh = true;
                self.continue_takeover(site, run, Ok(read)).await;
            }
        }
    }

    /// Each health URL asked at the addresses the records hold; healthy when one answers.
    async fn probe_health(&self, site: &Site, addresses: &[IpAddr]) -> Vec<Probe> {
        let checks = site
            .health
            .iter()
            .map(|url| {
                let (url, addrs) = (url.clone(), addresses.to_vec());
                async move {
                    let mut last = "no address in the site's records".to_owned();
                    for addr in &addrs {
                        match probes::health_at(&url, *addr, PROBE_TIMEOUT).await {
                            Ok(status) => {
                                return Probe {
                                    kind: "health".into(),
                                    target: format!("{url} at {addr}"),
                                    ok: true,
                                    detail: format!("HTTP {status}"),
                                    at: rfc3339(now_ms()),
                                }
                            }
                            Err(e) => last = e,
                        }
                    }
                    let at_addrs = addrs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ");
                    Probe {
                        kind: "health".into(),
                        target: format!("{url} at {at_addrs}"),
                        ok: false,
                        detail: last,
                        at: rfc3339(now_ms()),
                    }
                }
            })
            .collect::<Vec<_>>();
        all(checks).await
    }

    /// The worst of the site's databases' guards, each from its last check that reached
    /// the master.
    async fn data_guard(&self, site: &Site, run: &mut SiteRun) -> DataGuard {
        if site.databases.is_empty() {
            return DataGuard::Ok;
        }
        match self.store.db_checks().await {
            Ok(checks) => {
                for report in checks.iter().filter(|r| r.site == site.name) {
                    if let Some(g) = data_guard(report, site.max_lag_on_failover) {
                        run.guards.insert(report.name.clone(), g);
                    }
                }
            }
            Err(e) => tracing::warn!(error = agent::error_chain(&e), "DB checks unreadable"),
        }
        DataGuard::worst(site.databases.iter().map(|db| {
            run.guards
                .get(&db.name)
                .cloned()
                .unwrap_or_else(|| DataGuard::Broken {
                    why: format!(
                        "{}: no check has reached the master since this agent started",
                        db.name
                    ),
                })
        }))
    }

    /// Turns the machine's alert events into alerts.
    async fn alert_events(&self, site: &Site, run: &mut SiteRun, master: &str) {
        while let Some(event) = run.machine.poll_event() {
            match event {
                Event::Raise { hold } => {
                    let key = format!("failover:{}:{}", site.name, hold.key());
                    let text = hold.explain(&site.name, master);
                    self.alerter.raise(&key, Some(&site.name), &text).await;
                }
                Event::Clear { hold } => {
                    let key = format!("failover:{}:{}", site.name, hold.key());
                    self.alerter.clear(&key).await;
                }
            }
        }
    }

    /// The lock names the peer at a later epoch: record it as the site's master. The
    /// peer took the site over without this node, so the pair had its automatic failover:
    /// this node does not fail it back on its own until `orch ack`.
    async fn learn(&self, site: &Site, run: &mut SiteRun, l: &Lock) {
        match self.roles.advance(&site.name, &l.master, l.epoch).await {
            Ok(true) => {
                run.armed = false;
                run.machine.disarm();
                self.journal(site, run).await;
                let text = format!(
                    "the lock record says \"{l}\": {} is master of {} at epoch {}; automatic failover back to {} is disarmed until `orch ack {}`",
                    l.master, site.name, l.epoch, self.me(), site.name
                );
                self.history(&site.name, Outcome::Warn, &text, None).await;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(site = %site.name, error = agent::error_chain(&e), "Role not recorded")
            }
        }
    }

    // ---- the takeover --------------------------------------------------------------

    /// Writes the site's change of hands under way (or its absence) and the armed flag;
    /// false if the store failed. Says in the heartbeats whether it is a switchover to
    /// this node.
    async fn journal(&self, site: &Site, run: &SiteRun) -> bool {
        self.roles.set_switching(
            &site.name,
            switching_over(run.switching.as_ref(), run.intent.as_ref()),
        );
        let journal = match (&run.intent, &run.rejoin, &run.handing, &run.switching) {
            (Some(i), _, _, _) => Some(Journal::Takeover(i.clone())),
            (None, Some(r), _, _) => Some(Journal::Rejoin(r.clone())),
            (None, None, Some(h), _) => Some(Journal::Handing(h.clone())),
            (None, None, None, Some(s)) => Some(Journal::Switching(s.clone())),
            (None, None, None, None) => None,
        };
        let text = journal.and_then(|j| serde_json::to_string(&j).ok());
        match self
            .store
            .put_failover(&site.name, run.armed, text.as_deref(), now_ms())
            .await
        {
            Ok(()) => {
                // The heartbeat says it only once the store holds it.
                self.roles
                    .set_armed(&site.name, said_armed(run.armed, run.intent.as_ref()));
                true
            }
            Err(e) => {
                tracing::error!(site = %site.name, error = agent::error_chain(&e), "Takeover journal not written");
                false
            }
        }
    }

    async fn continue_takeover(
        &self,
        site: &Site,
        run: &mut SiteRun,
        read: Result<DnsRead, String>,
    ) {
        let Some(mut intent) = run.intent.clone() else {
            return;
        };
        let from = SiteRole {
            master: intent.from_master.clone(),
            epoch: intent.from_epoch,
        };
        if intent.stage == Stage::Locking {
            let read = match read {
                Ok(r) => r,
                Err(e) => {
                    let text = format!(
                        "taking over from {}: waiting for the authoritative DNS to answer ({e})",
                        from.master
                    );
                    self.publish(
                        site,
                        run,
                        "taking-over",
                        text,
                        Some(intent.lost_since),
                        None,
                    );
                    return;
                }
            };
            match lock::resume(&read.holder, self.me(), &from, intent.to_epoch) {
                Resume::Taken => {}
                Resume::NotTaken if run.fresh => {
                    run.fresh = false;
                    let now = read.addresses();
                    if !run.master_addresses.is_empty() && now != run.master_addresses {
                        let list = |a: &[IpAddr]| {
                            a.iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        let why = format!(
                            "the site's records hold {}, not {} where {} served it: someone else moved them",
                            list(&now),
                            list(&run.master_addresses),
                            from.master
                        );
                        self.abort(site, run, &from, false, &why).await;
                        return;
                    }
                    let new_lock = Lock {
                        master: self.me().to_owned(),
                        epoch: intent.to_epoch,
                    };
                    let mut changes = vec![read.lock_to(&new_lock)];
                    changes.extend(read.point_at(&site.records, intent.ip));
                    let result = match run.dns.as_ref() {
                        Some(d) => d.swap_all(&changes, site.ttl).await,
                        None => return,
                    };
                    match result {
                        Ok(Swap::Swapped) => {}
                        Ok(Swap::Conflict { current }) => {
                            let what = if current.is_empty() {
                                "nothing".to_owned()
                            } else {
                                current.join(", ")
                            };
                            self.abort(
                                site,
                                run,
                                &from,
                                false,
                                &format!("the records changed under this node: they hold {what}"),
                            )
                            .await;
                            return;
                        }
                        Err(e) => {
                            // It may or may not have been applied: the next tick reads the
                            // lock and tells.
                            let text = format!(
                                "taking over from {}: the DNS update failed ({}); checking what the lock record holds",
                                from.master,
                                agent::error_chain(&e)
                            );
                            self.history(&site.name, Outcome::Warn, &text, None).await;
                            self.publish(
                                site,
                                run,
                                "taking-over",
                                text,
                                Some(intent.lost_since),
                                None,
                            );
                            return;
                        }
                    }
                }
                Resume::NotTaken => {
                    self.abort(site, run, &from, true, "the DNS update did not happen")
                        .await;
                    return;
                }
                Resume::Moved(what) => {
                    self.abort(
                        site,
                        run,
                        &from,
                        false,
                        &format!("the lock record holds {what}"),
                    )
                    .await;
                    return;
                }
            }
            intent.stage = Stage::Locked;
            run.intent = Some(intent.clone());
            self.journal(site, run).await;
            let text = format!(
                "took the DNS lock of {}: \"master={} epoch={}\", records → {}",
                site.name,
                self.me(),
                intent.to_epoch,
                intent.ip
            );
            tracing::warn!(site = %site.name, epoch = intent.to_epoch, ip = %intent.ip, "Took the DNS lock");
            self.history(&site.name, Outcome::Warn, &text, None).await;
        }
        self.promote(site, run, intent).await;
    }

    /// The lock is ours: the new epoch, then the promote playbooks, then the alert.
    async fn promote(&self, site: &Site, run: &mut SiteRun, mut intent: Intent) {
        if let Err(e) = self
            .roles
            .advance(&site.name, self.me(), intent.to_epoch)
            .await
        {
            let text = format!(
                "holding the DNS lock of {}, but the new epoch cannot be recorded: {}; retrying",
                site.name,
                agent::error_chain(&e)
            );
            self.publish(
                site,
                run,
                "taking-over",
                text,
                Some(intent.lost_since),
                None,
            );
            return;
        }
        let peer_ip = Err(format!("{} is lost", intent.from_master));
        let ctx = crate::playbook::Context {
            loaded: &self.loaded,
            site,
            epoch: Ok(intent.to_epoch),
            self_public_ip: Ok(intent.ip),
            peer_public_ip: peer_ip,
        };
        let mut done = Vec::new();
        let mut failure = None;
        for name in &site.promote {
            if intent.promoted.contains(name) {
                done.push(format!("{name} ok (before a restart)"));
                continue;
            }
            let text = format!("taking over {}: promote playbook {name} running", site.name);
            self.publish(
                site,
                run,
                "taking-over",
                text,
                Some(intent.lost_since),
                None,
            );
            let (took, failed) = self.run_playbook(&ctx, name).await;
            if failed.is_some() {
                failure = failed;
                done.push(format!("{name} FAILED ({took:.1} s)"));
                break;
            }
            done.push(format!("{name} ok ({took:.1} s)"));
            intent.promoted.push(name.clone());
            run.intent = Some(intent.clone());
            self.journal(site, run).await;
        }
        // The takeover has ended: one automatic failover until `orch ack`; an operator's
        // `orch promote` is a decision, not a failover: it leaves it armed.
        run.armed = intent.forced || intent.switchover;
        run.intent = None;
        if intent.switchover {
            run.machine.ack();
            self.journal(site, run).await;
            let text = format!(
                "master since a switchover from {} at {} (epoch {})",
                intent.from_master,
                clock(now_ms()),
                intent.to_epoch
            );
            self.publish(site, run, "master", text, None, None);
            return;
        }
        run.failed_over_at = Some(now_ms());
        run.machine.failed_over();
        self.journal(site, run).await;
        let at = now_ms();
        let books = if done.is_empty() {
            "none configured".to_owned()
        } else {
            done.join(", ")
        };
        let why = if intent.forced {
            format!("`orch promote --force` on {}", self.me())
        } else {
            format!(
                "{} lost since {} ({})",
                intent.from_master,
                clock(intent.lost_since),
                intent.seen
            )
        };
        let mut detail = format!(
            "{} failed over to {} at {}: {why}; records {} → {}, lock \"master={} epoch={}\"; promote playbooks: {books}",
            site.name,
            self.me(),
            clock(at),
            site.records.join(", "),
            intent.ip,
            self.me(),
            intent.to_epoch
        );
        if let Some(f) = &failure {
            detail.push_str(&format!("\n\nA PROMOTE PLAYBOOK FAILED: the site's records point here, but its services may not run. Fix it by hand.\n{f}"));
        }
        if !intent.forced {
            detail.push_str(&format!(
                "\n\nAutomatic failover of {} is disarmed until `orch ack {}`.",
                site.name, site.name
            ));
        }
        detail.push_str(&format!(
            " When {} comes back it learns from the lock record that it was replaced, steps down and follows {}.",
            intent.from_master,
            self.me()
        ));
        let outcome = if failure.is_some() {
            Outcome::Fail
        } else {
            Outcome::Warn
        };
        self.history(
            &site.name,
            outcome,
            detail.lines().next().unwrap_or_default(),
            serde_json::to_value(&intent).ok(),
        )
        .await;
        tracing::warn!(site = %site.name, epoch = intent.to_epoch, "Failed over");
        self.alerter.failover(&site.name, &detail).await;
        let text = format!(
            "failed over to {} at {} (epoch {}){}: automatic failover disarmed until `orch ack {}`",
            self.me(),
            clock(at),
            intent.to_epoch,
            if failure.is_some() {
                ", but a promote playbook FAILED"
            } else {
                ""
            },
            site.name
        );
        self.publish(site, run, "failed-over", text, None, None);
    }

    /// The lock was not taken: nothing was promoted. `retry`: decide again at the next
    /// tick; otherwise someone else moved the site and a person must look.
    async fn abort(&self, site: &Site, run: &mut SiteRun, from: &SiteRole, retry: bool, why: &str) {
        // A switchover's promote playbooks ran before its swap: undone at the next tick
        // when no switchover is under way here to undo it (this takeover was resumed
        // after a stop of the agent).
        let switched = run.intent.take().filter(|i| i.switchover);
        let switchover = switched.is_some();
        if let Some(i) = switched {
            run.switching.get_or_insert(Switching {
                from_master: i.from_master,
                from_epoch: i.from_epoch,
                to_epoch: i.to_epoch,
                started: i.started,
                promoting: true,
            });
        }
        run.fresh = false;
        run.machine.lock_lost(retry);
        self.journal(site, run).await;
        let text = if retry {
            format!(
                "not taking over {} from {}: {why}; deciding again",
                site.name, from.master
            )
        } else if switchover {
            format!(
                "not taking over {} from {} (a switchover): {why}. The switchover is undone (its promote playbooks had run here); automatic failover waits for `orch ack {}`",
                site.name, from.master, site.name
            )
        } else {
            format!(
                "not taking over {} from {}: {why}. Nothing was promoted; automatic failover waits for `orch ack {}`",
                site.name, from.master, site.name
            )
        };
        tracing::warn!(site = %site.name, %why, retry, "Takeover stopped before the lock");
        self.history(&site.name, Outcome::Warn, &text, None).await;
        if !retry {
            let key = format!("failover:{}:records-moved", site.name);
            self.alerter.raise(&key, Some(&site.name), &text).await;
            run.moved = Some(text.clone());
        }
        self.publish(site, run, "holding", text, None, None);
    }

    // ---- the master ----------------------------------------------------------------

    /// Keeps the site's records at this node's public address, under its lock.
    async fn keep_records(&self, site: &Site, run: &mut SiteRun, role: &SiteRole, read: DnsRead) {
        let ip = match self.public_ip().await {
            Ok(ip) => ip,
            Err(e) => {
                let text = format!("master; this node's public address is unknown ({e}): the records are left as they are");
                self.publish(site, run, "master", text, None, None);
                return;
            }
        };
        let mine = Lock::of(role);
        let mut changes = read.point_at(&site.records, ip);
        match lock::master_view(&read.holder, role) {
            MasterView::Ours if changes.is_empty() => {
                let held = format!("the records hold {ip} under \"{mine}\"");
                match run.failed_over_at.filter(|_| !run.armed) {
                    Some(at) => {
                        let text = format!(
                            "failed over to {} at {}; {held}; automatic failover disarmed until `orch ack {}`",
                            self.me(),
                            clock(at),
                            site.name
                        );
                        self.publish(site, run, "failed-over", text, None, None);
                    }
                    None => {
                        let disarmed = if run.armed {
                            String::new()
                        } else {
                            format!(
                                "; automatic failover disarmed until `orch ack {}`",
                                site.name
                            )
                        };
                        let text = format!("master: {held}{disarmed}");
                        self.publish(site, run, "master", text, None, None);
                    }
                }
            }
            view @ (MasterView::Ours | MasterView::Missing) => {
                // Under its own lock record (or its absence), rewritten as it is.
                changes.insert(0, read.lock_to(&mine));
                let swap = match run.dns.as_ref() {
                    Some(d) => d.swap_all(&changes, site.ttl).await,
                    None => return,
                };
                let text = match swap {
                    Ok(Swap::Swapped) => {
                        let text = format!(
                            "master: {} the records to {ip} under \"{mine}\"",
                            if view == MasterView::Missing {
                                "published the lock record and moved"
                            } else {
                                "moved"
                            }
                        );
                        tracing::info!(site = %site.name, %ip, "Site records moved to this node's address");
                        self.history(&site.name, Outcome::Ok, &text, None).await;
                        text
                    }
                    Ok(Swap::Conflict { current }) => {
                        // Read again at the next check: the lock decides what that means.
                        run.next_master_check = Instant::now();
                        format!("master: the records changed while being moved to {ip} ({}); reading again", current.join(", "))
                    }
                    Err(e) => format!(
                        "master: moving the records to {ip} failed ({}); retrying",
                        agent::error_chain(&e)
                    ),
                };
                self.publish(site, run, "master", text, None, None);
            }
            MasterView::Replaced(l) => {
                // Handled by the caller before the records are looked at.
                self.replaced(site, run, &l, "the lock record").await;
            }
            MasterView::Foreign(what) => {
                let text = format!(
                    "master, but the lock record holds {what}, not \"{mine}\": the records are not touched (fix the record by hand)"
                );
                self.publish(site, run, "master", text, None, None);
            }
        }
    }

    // ---- status, history, ack ------------------------------------------------------

    /// Publishes the site's failover state; a change of state is recorded in the history.
    fn publish(
        &self,
        site: &Site,
        run: &mut SiteRun,
        state: &str,
        summary: String,
        lost_since: Option<i64>,
        left: Option<Duration>,
    ) {
        let shown = state.split(':').next().unwrap_or(state).to_owned();
        let status = FailoverStatus {
            state: shown,
            summary: summary.clone(),
            armed: run.armed,
            lost_since: lost_since.map(rfc3339),
            failing_over_in_secs: left.map(|d| d.as_secs()),
            probes: run.probes.clone(),
        };
        self.status.send_modify(|m| {
            m.insert(site.name.clone(), status);
        });
        // A site without DNS is "off" for good: said in the status, not news for the history.
        if run.recorded != state && state != "off" {
            run.recorded = state.to_owned();
            let store = self.store.clone();
            let name = site.name.clone();
            // Recorded in the background: a slow store must not hold the probes up.
            tokio::spawn(async move {
                let event = NewEvent {
                    at: now_ms(),
                    site: Some(&name),
                    kind: EventKind::Failover,
                    outcome: Outcome::Info,
                    summary: &summary,
                    detail: None,
                };
                if let Err(e) = store.record(&event).await {
                    tracing::warn!(
                        error = agent::error_chain(&e),
                        "Failover state not recorded"
                    );
                }
            });
        }
    }

    async fn history(
        &self,
        site: &str,
        outcome: Outcome,
        summary: &str,
        detail: Option<serde_json::Value>,
    ) {
        let event = NewEvent {
            at: now_ms(),
            site: Some(site),
            kind: EventKind::Failover,
            outcome,
            summary,
            detail,
        };
        if let Err(e) = self.store.record(&event).await {
            tracing::warn!(
                error = agent::error_chain(&e),
                "Failover event not recorded"
            );
        }
    }

    /// `orch promote SITE --force`: the takeover of a site whose master is taken to be
    /// dead, now, by an operator. The failover logic's guards are skipped (that is what
    /// `--force` is for); the DNS lock is not: the lock record must still name the master
    /// this node knows, and the swap is the same compare-and-swap, journaled the same way.
    async fn force_promote(
        &self,
        site: &Site,
        run: &mut SiteRun,
        dry_run: bool,
    ) -> Result<String, String> {
        let name = site.name.as_str();
        let role = self.roles.get(name).map_err(|e| agent::error_chain(&e))?;
        if role.is_master(self.me()) {
            return Err(format!(
                "{} is master of {name} already (epoch {}): nothing to do",
                self.me(),
                role.epoch
            ));
        }
        if run.intent.is_some() || run.rejoin.is_some() {
            return Err(format!(
                "{name} is changing hands already (see `orch status`); nothing was changed"
            ));
        }
        let Some(zone) = self.provider(site, run).await else {
            return Err(format!(
                "{name} has no DNS provider or records: `--force` still needs the DNS lock; nothing was changed"
            ));
        };
        let read = self.read_dns(site, run, &zone).await.map_err(|e| {
            format!("the authoritative DNS does not answer ({e}): `--force` still needs the DNS lock; nothing was changed")
        })?;
        lock::may_take(&read.holder, &role)
            .map_err(|e| format!("{e}: someone else moved {name}; nothing was changed"))?;
        let ip = self.public_ip().await.map_err(|e| {
            format!("this node's public address is unknown ({e}); nothing was changed")
        })?;
        let new_lock = Lock {
            master: self.me().to_owned(),
            epoch: role.epoch + 1,
        };
        let mut lines = vec![
            format!(
                "skipped (--force: {} is taken to be dead): the tunnel and peer checks, the final push, {}'s demote playbooks, the database catch-up, {}'s rejoin (it follows on its own when it returns)",
                role.master, role.master, role.master
            ),
            format!("DNS lock {}: {} → \"{new_lock}\"", read.lock_name, read.holder),
        ];
        for c in read.point_at(&site.records, ip) {
            lines.push(format!(
                "record {} {}: {:?} → {:?}",
                c.name, c.kind, c.expected, c.new
            ));
        }
        lines.push(format!(
            "epoch {} → {} in the state store",
            role.epoch, new_lock.epoch
        ));
        let ctx = crate::playbook::Context {
            loaded: &self.loaded,
            site,
            epoch: Ok(new_lock.epoch),
            self_public_ip: Ok(ip),
            peer_public_ip: Err(format!("{} is taken to be dead", role.master)),
        };
        for book in &site.promote {
            match crate::playbook::plan(&ctx, book) {
                Ok(plan) => {
                    lines.push(format!("promote playbook {book}:"));
                    for s in plan.steps {
                        lines.push(format!("  {} [{} on {}] {}", s.name, s.kind, s.on, s.does));
                    }
                }
                Err(e) => return Err(format!("promote playbook {book}: {e}; nothing was changed")),
            }
        }
        if dry_run {
            lines.push("dry run: nothing was changed".to_owned());
            return Ok(lines.join("\n"));
        }
        run.intent = Some(Intent {
            from_master: role.master.clone(),
            from_epoch: role.epoch,
            to_epoch: new_lock.epoch,
            ip,
            lost_since: now_ms(),
            started: now_ms(),
            seen: "forced by `orch promote --force`".to_owned(),
            stage: Stage::Locking,
            promoted: Vec::new(),
            forced: true,
            switchover: false,
        });
        if !self.journal(site, run).await {
            run.intent = None;
            return Err(
                "the state store could not record the takeover; nothing was changed".into(),
            );
        }
        run.fresh = true;
        // The operator decides where the site goes.
        run.master_addresses.clear();
        self.continue_takeover(site, run, Ok(read)).await;
        let summary = self
            .status
            .borrow()
            .get(name)
            .map(|f| f.summary.clone())
            .unwrap_or_default();
        let now = self.roles.get(name).map_err(|e| agent::error_chain(&e))?;
        if run.intent.is_some() {
            return Err(format!(
                "{}\nnot finished: {summary} (the agent goes on; see `orch status`)",
                lines.join("\n")
            ));
        }
        if now.is_master(self.me()) && now.epoch == new_lock.epoch {
            lines.push(summary);
            Ok(lines.join("\n"))
        } else {
            Err(format!("{}\n{summary}", lines.join("\n")))
        }
    }

    /// `orch ack SITE`: automatic failover possible again.
    async fn ack(&self, config: &Site, run: &mut SiteRun) -> Result<String, String> {
        let site = config.name.as_str();
        if run.intent.is_some() {
            return Err(format!(
                "a takeover of {site} is under way; `orch ack` re-arms automatic failover once it has ended"
            ));
        }
        if let Some(r) = run.rejoin.as_mut() {
            if r.failed.take().is_none() {
                return Err(format!(
                    "{site} is rejoining {} now; `orch ack` re-arms automatic failover once it has ended",
                    r.to_master
                ));
            }
            self.journal(config, run).await;
            let text = format!("retrying the rejoin of {site} (orch ack)");
            self.history(site, Outcome::Info, &text, None).await;
            return Ok(text);
        }
        let text = if run.armed {
            format!("automatic failover of {site} was armed already")
        } else {
            format!("automatic failover of {site} re-armed (orch ack)")
        };
        if !self.rearm(config, run, true, &text).await {
            return Err("the state store could not record it (see the agent's log)".into());
        }
        Ok(text)
    }
}

/// What the probes saw, in words: "agent silent, health 0/1, witnesses 2/2".
fn seen(o: &Observation) -> String {
    let count = |v: &[bool]| v.iter().filter(|x| **x).count();
    let mut parts = vec![if o.agent {
        "agent answers".to_owned()
    } else {
        "agent silent".to_owned()
    }];
    if !o.health.is_empty() {
        parts.push(format!("health {}/{}", count(&o.health), o.health.len()));
    }
    if !o.witnesses.is_empty() {
        parts.push(format!(
            "witnesses {}/{}",
            count(&o.witnesses),
            o.witnesses.len()
        ));
    }
    if !o.dns_readable {
        parts.push("DNS unreadable".to_owned());
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_a_tenth_of_after_within_bounds() {
        assert_eq!(tick_for(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(tick_for(Duration::from_secs(20)), Duration::from_secs(2));
        assert_eq!(tick_for(Duration::from_secs(600)), Duration::from_secs(5));
    }

    #[test]
    fn records_are_pointed_at_one_address_and_the_other_family_removed() {
        let read = DnsRead {
            lock_name: "_orch.web.example.org".into(),
            holder: Holder::Absent,
            lock_values: vec![],
            records: BTreeMap::from([
                (
                    ("www.example.org".into(), Kind::A),
                    vec!["192.0.2.1".into()],
                ),
                (
                    ("www.example.org".into(), Kind::Aaaa),
                    vec!["2001:db8::1".into()],
                ),
                (("example.org".into(), Kind::A), vec!["192.0.2.2".into()]),
                (("example.org".into(), Kind::Aaaa), vec![]),
            ]),
        };
        let ip: IpAddr = "192.0.2.2".parse().unwrap();
        let changes = read.point_at(&["www.example.org".into(), "example.org".into()], ip);
        assert_eq!(
            changes,
            vec![
                Change {
                    name: "www.example.org".into(),
                    kind: Kind::A,
                    expected: vec!["192.0.2.1".into()],
                    new: vec!["192.0.2.2".into()],
                },
                Change {
                    name: "www.example.org".into(),
                    kind: Kind::Aaaa,
                    expected: vec!["2001:db8::1".into()],
                    new: vec![],
                },
            ],
            "example.org already holds the address"
        );
        assert_eq!(
            read.addresses(),
            vec![
                "192.0.2.1".parse::<IpAddr>().unwrap(),
                "192.0.2.2".parse().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn an_intent_survives_the_journal() {
        let i = Intent {
            from_master: "alice".into(),
            from_epoch: 1,
            to_epoch: 2,
            ip: "192.0.2.2".parse().unwrap(),
            lost_since: 1,
            started: 2,
            seen: "agent silent".into(),
            stage: Stage::Locked,
            promoted: vec!["web-start".into()],
            forced: false,
            switchover: false,
        };
        let text = serde_json::to_string(&i).unwrap();
        assert!(text.contains("\"stage\":\"locked\""), "{text}");
        assert_eq!(serde_json::from_str::<Intent>(&text).unwrap(), i);
        // While an automatic takeover is under way, the heartbeat says nothing is armed
        // (it ends disarmed); an operator's takeover stays armed.
        assert!(said_armed(true, None));
        assert!(!said_armed(false, None));
        assert!(!said_armed(true, Some(&i)));
        for forced in [true, false] {
            let decided = Intent {
                forced,
                switchover: !forced,
                ..i.clone()
            };
            assert!(said_armed(true, Some(&decided)));
        }
    }
}

//! The planned switchover (`orch promote SITE` on the site's standby; DESIGN §6).
//!
//! **Here, the standby** ([`Task::switchover`]): every pre-check printed with its verdict
//! and figure (any failure stops before anything changes), then the steps, each printed
//! as it runs with its duration: the final push of every job from the master, the
//! master's demote playbooks (asked of its agent, which runs its own), the databases
//! caught up to the master's final positions, the promote playbooks here, the DNS
//! compare-and-swap (journaled like a takeover), the epoch in both stores, the master's
//! rejoin playbooks, a report mail. A failure before the DNS swap is undone (the master
//! serves again; this node follows it again if its promote playbooks ran); after it,
//! nothing is undone.
//!
//! **There, the master** ([`Task::handover`]): answers only while it is master at the
//! epoch the asker names; a demote makes it hand over ([`Handing`], journaled, pushes
//! refused) until the lock names the peer (it rejoins, the demote not run again), the
//! peer undoes, or [`HANDOVER_EXPIRES`] passes (it serves again on its own).

use super::{
    clock, now_ms, Handing, Intent, SiteRun, Stage, Switching, Task, HANDOVER_EXPIRES,
    HANDOVER_QUIET, HANDOVER_SWAP_BY,
};
use crate::api::Probe;
use crate::cluster::lock::{self, Holder, Lock};
use crate::cluster::roles::SiteRole;
use crate::config::Site;
use agent::peer::{Handover, HandoverReply, HandoverStep, Request, Response};
use agent::state::Outcome;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// How long the master may take to answer a check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the master may take for a step (its playbooks have their own timeouts).
const STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long this node's databases may take to reach the master's final positions.
const CATCH_UP: Duration = Duration::from_secs(120);
/// How long the master may take to undo a switchover cut off by a stop of this agent
/// (its promote playbooks; asked again at a later tick if it took longer).
const UNDO_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The least free space a sync target here must have.
const MIN_FREE: u64 = 64 << 20;

/// A peer's text made inert for a terminal and a log.
fn inert(text: &str) -> String {
    agent::inert(text, agent::PEER_TEXT)
}

/// The lines of a switchover, published as they come.
struct Said<'a> {
    lines: Vec<String>,
    progress: &'a tokio::sync::watch::Sender<(u64, Vec<String>)>,
}

impl Said<'_> {
    fn say(&mut self, line: impl Into<String>) {
        let line = line.into();
        tracing::info!(%line, "Switchover");
        self.lines.push(line.clone());
        self.progress.send_modify(|(_, lines)| lines.push(line));
    }

    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// One pre-check: its verdict and its figure.
fn check(said: &mut Said, failed: &mut Vec<String>, name: &str, result: Result<String, String>) {
    match result {
        Ok(figure) => said.say(format!("  ok    {name}: {figure}")),
        Err(why) => {
            said.say(format!("  FAIL  {name}: {why}"));
            failed.push(name.to_owned());
        }
    }
}

fn secs(t: Instant) -> String {
    format!("{:.1} s", t.elapsed().as_secs_f64())
}

impl Task {
    /// Asks the peer's agent for a step of the switchover of `site` (master at `epoch`).
    async fn ask_peer(
        &self,
        site: &str,
        epoch: i64,
        step: HandoverStep,
        timeout: Duration,
    ) -> Result<HandoverReply, String> {
        let peer = self.loaded.peer();
        let addr = SocketAddr::new(peer.tunnel_ip, self.loaded.config.cluster.control_port);
        let request = Request::Handover(Handover {
            site: site.to_owned(),
            epoch,
            step,
        });
        match agent::peer::call(addr, self.me(), &peer.name, &request, timeout).await {
            Ok(Response::Handover(r)) => {
                r.check()
                    .map_err(|e| format!("{}'s answer refused: {e}", peer.name))?;
                Ok(HandoverReply {
                    lines: r.lines.iter().map(|l| inert(l)).collect(),
                    ..r
                })
            }
            Ok(_) => Err(format!("{} answered something else", peer.name)),
            Err(e) => Err(inert(&agent::error_chain(&e))),
        }
    }

    /// A step of the switchover asked of the peer, its lines printed: its answer when it
    /// went well, else why not (`what` failed, or could not be asked).
    async fn peer_step(
        &self,
        said: &mut Said<'_>,
        site: &str,
        epoch: i64,
        step: HandoverStep,
        what: &str,
    ) -> Result<HandoverReply, String> {
        let r = self
            .ask_peer(site, epoch, step, STEP_TIMEOUT)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        for l in &r.lines {
            said.say(format!("       {l}"));
        }
        if r.ok {
            Ok(r)
        } else {
            Err(format!("{what} failed"))
        }
    }

    /// `orch promote SITE [--dry-run]` on the site's standby: the planned switchover.
    /// Its journal ([`Switching`]) is dropped once it has ended either way; it stays while
    /// a takeover it journaled is still settling (an unclear DNS answer), so that one that
    /// ends without the lock is undone too.
    pub(super) async fn switchover(
        &self,
        site: &Site,
        run: &mut SiteRun,
        dry_run: bool,
    ) -> Result<String, String> {
        let answer = self.switch_over(site, run, dry_run).await;
        if run.intent.is_none() && run.switching.take().is_some() {
            self.journal(site, run).await;
        }
        // Raised for the pre-checks too: lowered unless still under way.
        self.roles.set_switching(
            &site.name,
            super::switching_over(run.switching.as_ref(), run.intent.as_ref()),
        );
        answer
    }

    async fn switch_over(
        &self,
        site: &Site,
        run: &mut SiteRun,
        dry_run: bool,
    ) -> Result<String, String> {
        let name = site.name.as_str();
        let role = self.roles.get(name).map_err(|e| agent::error_chain(&e))?;
        if role.is_master(self.me()) {
            return Err(format!(
                "{} is master of {name} already (epoch {}): nothing to do (to move it to {}, run `orch promote {name}` there)",
                self.me(),
                role.epoch,
                self.peer()
            ));
        }
        if run.intent.is_some()
            || run.rejoin.is_some()
            || run.handing.is_some()
            || run.switching.is_some()
        {
            return Err(format!(
                "{name} is changing hands already (see `orch status`); nothing was changed"
            ));
        }
        let mut said = Said {
            lines: Vec::new(),
            progress: &self.progress,
        };
        let peer = self.peer().to_owned();
        said.say(format!(
            "switchover of {name}: {} → {} (epoch {} → {}){}",
            role.master,
            self.me(),
            role.epoch,
            role.epoch + 1,
            if dry_run { ", dry run" } else { "" }
        ));
        said.say("pre-checks:");
        let mut failed = Vec::new();

        // One switchover at a time in the pair: two changes of hands at once, each node
        // demoting for the other while promoting, are hard to follow and to undo. This
        // node says it is switching over before it reads the peer's heartbeat: of two
        // started at once, one sees the other.
        if !dry_run {
            self.roles.set_switching(name, true);
        }
        // The tunnel and the peer's agent: a heartbeat first (a dead peer costs seconds,
        // not the check's timeout), then the master's own checks. A heartbeat of its own,
        // not the ticks' shared one: it must be asked after the flag above was raised.
        let (probe, beat) = self.probe_agent_now().await;
        let busy: Vec<&str> = beat
            .iter()
            .flat_map(|h| h.sites.iter())
            .filter(|(_, c)| c.switching)
            .map(|(n, _)| n.as_str())
            .collect();
        let stats = self.tunnel.stats();
        let endpoint = stats
            .endpoint
            .map(|e| e.to_string())
            .unwrap_or_else(|| "-".into());
        let tunnel = if crate::cluster::peer::tunnel_up(&stats) {
            Ok(format!(
                "last handshake {} s ago, endpoint {endpoint}",
                stats.since_handshake.map(|d| d.as_secs()).unwrap_or(0)
            ))
        } else if probe.ok {
            // The tunnel's figures lag a moment behind; an answer through it is proof.
            Ok(format!(
                "{peer}'s agent answers through it, endpoint {endpoint}"
            ))
        } else {
            Err(
                "down (no recent handshake): the peer must be reachable; if it is dead, `--force`"
                    .into(),
            )
        };
        check(&mut said, &mut failed, "tunnel up", tunnel);
        if beat.is_some() {
            let quiet = if busy.is_empty() {
                Ok(format!("{peer} is switching no site over"))
            } else {
                Err(format!(
                    "{peer} is switching {} over to itself now: one switchover at a time in the pair; run this again once it has ended (`orch status` on {peer})",
                    busy.join(", ")
                ))
            };
            check(&mut said, &mut failed, "peer not switching over", quiet);
        }
        let t0 = Instant::now();
        let peer_check = if !busy.is_empty() {
            Err(format!("not asked: {peer} is switching over"))
        } else if probe.ok {
            self.ask_peer(name, role.epoch, HandoverStep::Check, CHECK_TIMEOUT)
                .await
        } else {
            Err(format!("{peer}'s agent does not answer: {}", probe.detail))
        };
        let (answers, peer_lines) = match peer_check {
            Ok(r) if r.ok => (
                Ok(format!(
                    "{peer} answers ({}), master at epoch {}",
                    secs(t0),
                    role.epoch
                )),
                r.lines,
            ),
            Ok(r) => (
                Err(format!("{peer} answers, but: {}", r.lines.join("; "))),
                Vec::new(),
            ),
            Err(e) => (Err(e), Vec::new()),
        };
        check(&mut said, &mut failed, "peer agent answers", answers);
        for l in peer_lines {
            said.say(format!("        {l}"));
        }

        // The databases, checked now.
        match crate::databases::targets(&self.loaded.config, site, &role) {
            Ok(targets) => {
                for t in targets {
                    let report = agent::db::check(&t).await;
                    let f = &report.figures;
                    let lag = match (f.replay_lag_seconds, f.lag_bytes, f.seconds_behind) {
                        (Some(s), Some(b), _) => format!("lag {s:.1} s, {b} bytes"),
                        (_, _, Some(s)) => format!("{s} s behind"),
                        _ => "lag unknown".to_owned(),
                    };
                    let result = if report.verdict == agent::db::Verdict::Healthy {
                        Ok(format!(
                            "{} replicating, {lag} (max_lag {} s)",
                            t.name,
                            t.max_lag.as_secs()
                        ))
                    } else {
                        Err(format!(
                            "{} {}: {}",
                            t.name,
                            report.verdict.as_str(),
                            report.problems.join("; ")
                        ))
                    };
                    check(&mut said, &mut failed, "database", result);
                }
            }
            Err(e) => check(&mut said, &mut failed, "databases", Err(e.to_string())),
        }

        // The DNS lock and records; a site without them moves its roles only.
        let has_dns = site.dns.is_some() && !site.records.is_empty();
        let zone = if has_dns {
            self.provider(site, run).await
        } else {
            None
        };
        let read = match (&zone, has_dns) {
            (Some(zone), _) => Some(self.read_dns(site, run, zone).await),
            (None, true) => Some(Err(
                "the DNS provider cannot be used now (see `orch status`)".to_owned(),
            )),
            (None, false) => None,
        };
        match &read {
            Some(read) => {
                let dns = match read {
                    Ok(r) => lock::may_take(&r.holder, &role)
                        .map(|()| {
                            let addrs: Vec<String> =
                                r.addresses().iter().map(|a| a.to_string()).collect();
                            format!(
                                "{} holds {}, records → {}",
                                r.lock_name,
                                r.holder,
                                if addrs.is_empty() {
                                    "nothing".to_owned()
                                } else {
                                    addrs.join(", ")
                                }
                            )
                        })
                        .map_err(|e| format!("{e}: someone else moved {name}")),
                    Err(e) => Err(format!("the authoritative DNS: {e}")),
                };
                check(&mut said, &mut failed, "DNS lock names the master", dns);
            }
            None => said.say(format!(
                "  ok    DNS: none configured for {name} (no dns or records): only the roles move"
            )),
        }
        let ip = self.public_ip().await;
        if has_dns {
            check(
                &mut said,
                &mut failed,
                "public address here",
                ip.as_ref().map(|i| i.to_string()).map_err(Clone::clone),
            );
        }

        // The playbooks here, and the room for the final push.
        let ctx = crate::playbook::Context {
            loaded: &self.loaded,
            site,
            epoch: Ok(role.epoch + 1),
            self_public_ip: ip.clone(),
            peer_public_ip: Err(format!("{peer}'s address is in the site's records")),
        };
        let mut plans = Vec::new();
        let mut books = Ok(());
        for (list, book) in site
            .promote
            .iter()
            .map(|b| ("promote", b))
            .chain(site.demote.iter().map(|b| ("demote", b)))
            .chain(site.rejoin.iter().map(|b| ("rejoin", b)))
        {
            match crate::playbook::plan(&ctx, book) {
                Ok(plan) if list == "promote" => plans.push((book.clone(), plan)),
                Ok(_) => {}
                Err(e) => books = Err(format!("{list} playbook {book}: {e}")),
            }
        }
        check(
            &mut said,
            &mut failed,
            &format!("playbooks valid on {}", self.me()),
            books.map(|()| {
                format!(
                    "promote [{}], undo: demote [{}], rejoin [{}]",
                    site.promote.join(", "),
                    site.demote.join(", "),
                    site.rejoin.join(", ")
                )
            }),
        );
        match super::space::target_spaces(&self.loaded, name) {
            Ok(spaces) => {
                for s in spaces {
                    let figure = format!(
                        "{} {}: {} free of {}",
                        s.job,
                        s.path,
                        crate::units::bytes(s.free_bytes),
                        crate::units::bytes(s.total_bytes)
                    );
                    let result = if s.free_bytes >= MIN_FREE {
                        Ok(figure)
                    } else {
                        Err(format!(
                            "{figure} (at least {} needed)",
                            crate::units::bytes(MIN_FREE)
                        ))
                    };
                    check(&mut said, &mut failed, "free space here", result);
                }
            }
            Err(e) => check(
                &mut said,
                &mut failed,
                "free space here",
                Err(e.to_string()),
            ),
        }

        let dns = match (read, ip.clone()) {
            (Some(Ok(read)), Ok(ip)) if failed.is_empty() => Some((read, ip)),
            (None, _) if failed.is_empty() => None,
            _ => {
                said.say(format!(
                    "{} pre-check(s) failed ({}): nothing was changed. Fix them, or, if {} is dead, `orch promote {name} --force`",
                    failed.len().max(1),
                    failed.join(", "),
                    role.master
                ));
                return Err(said.text());
            }
        };

        let new_lock = Lock {
            master: self.me().to_owned(),
            epoch: role.epoch + 1,
        };
        let dbs: Vec<&str> = site.databases.iter().map(|d| d.name.as_str()).collect();
        said.say(if dry_run {
            "steps it would run:"
        } else {
            "steps:"
        });
        if dry_run {
            said.say(format!(
                "  1. final push of every job from {} to here ({})",
                role.master,
                site.sync
                    .iter()
                    .map(|j| j.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            said.say(format!(
                "  2. demote playbooks on {}, run by its agent: {}",
                role.master,
                site.demote.join(", ")
            ));
            said.say(format!(
                "  3. databases caught up to {}'s final positions (within {} s): {}",
                role.master,
                CATCH_UP.as_secs(),
                if dbs.is_empty() {
                    "none".to_owned()
                } else {
                    dbs.join(", ")
                }
            ));
            said.say("  4. promote playbooks here:");
            for (book, plan) in &plans {
                said.say(format!("       {book}:"));
                for s in &plan.steps {
                    said.say(format!(
                        "         {} [{} on {}] {}",
                        s.name, s.kind, s.on, s.does
                    ));
                }
            }
            match &dns {
                Some((read, ip)) => {
                    said.say(format!(
                        "  5. DNS compare-and-swap: {} {} → \"{new_lock}\"",
                        read.lock_name, read.holder
                    ));
                    for c in read.point_at(&site.records, *ip) {
                        said.say(format!(
                            "       record {} {}: {:?} → {:?}",
                            c.name, c.kind, c.expected, c.new
                        ));
                    }
                }
                None => said.say("  5. no DNS configured: nothing to swap"),
            }
            said.say(format!(
                "  6. epoch {} → {} in both state stores",
                role.epoch, new_lock.epoch
            ));
            said.say(format!(
                "  7. rejoin playbooks on {}, run by its agent: {}",
                role.master,
                site.rejoin.join(", ")
            ));
            said.say("  8. a report mail");
            said.say("dry run: nothing was changed");
            return Ok(said.text());
        }
        let started = Instant::now();

        // 1. The final push.
        let t = Instant::now();
        said.say(format!("  1. final push from {}: running", role.master));
        let pushed = self
            .peer_step(
                &mut said,
                name,
                role.epoch,
                HandoverStep::Push,
                "the final push",
            )
            .await;
        if let Err(why) = pushed {
            return Err(self
                .stopped(&mut said, site, &role, 1, &why, false, false)
                .await);
        }
        said.say(format!("  1. final push: ok ({})", secs(t)));

        // 2. The master's demote playbooks, its final positions. Journaled first (and
        // said in the heartbeats from then on: the master waits while it is): an agent
        // stopped from here until the swap undoes the switchover when it starts.
        run.switching = Some(Switching {
            from_master: role.master.clone(),
            from_epoch: role.epoch,
            to_epoch: new_lock.epoch,
            started: now_ms(),
            promoting: false,
        });
        if !self.journal(site, run).await {
            let why = "the state store could not record the switchover";
            return Err(self
                .stopped(&mut said, site, &role, 2, why, false, false)
                .await);
        }
        let t = Instant::now();
        said.say(format!("  2. demote playbooks on {}: running", role.master));
        let demoted = self
            .peer_step(
                &mut said,
                name,
                role.epoch,
                HandoverStep::Demote,
                "the demote",
            )
            .await;
        let positions = match demoted {
            Ok(r) => r.positions,
            // It may have demoted before the answer was lost: undo.
            Err(why) => {
                return Err(self
                    .stopped(&mut said, site, &role, 2, &why, true, false)
                    .await)
            }
        };
        said.say(format!("  2. demote on {}: ok ({})", role.master, secs(t)));
        let demoted_at = Instant::now();

        // 3. The databases caught up.
        let t = Instant::now();
        for db in &site.databases {
            let Some(position) = positions.get(&db.name) else {
                let why = format!(
                    "{} gave no final position for database {}",
                    role.master, db.name
                );
                return Err(self
                    .stopped(&mut said, site, &role, 3, &why, true, false)
                    .await);
            };
            let waited = match crate::databases::endpoint(&self.loaded.config, db, self.me()) {
                Ok(here) => {
                    agent::db::wait_for(
                        crate::databases::engine(db.kind),
                        &here,
                        &db.name,
                        position,
                        CATCH_UP,
                    )
                    .await
                }
                Err(e) => Err(e.to_string()),
            };
            match waited {
                Ok(()) => said.say(format!(
                    "       database {}: {} reached here",
                    db.name, position
                )),
                Err(e) => {
                    let why = format!("database {} not caught up: {e}", db.name);
                    return Err(self
                        .stopped(&mut said, site, &role, 3, &why, true, false)
                        .await);
                }
            }
        }
        said.say(format!("  3. databases caught up: ok ({})", secs(t)));

        // 4. The promote playbooks here.
        if let Some(s) = run.switching.as_mut() {
            s.promoting = true;
        }
        if !self.journal(site, run).await {
            let why = "the state store could not record the switchover";
            return Err(self
                .stopped(&mut said, site, &role, 4, why, true, false)
                .await);
        }
        let t = Instant::now();
        for book in &site.promote {
            said.say(format!("  4. promote playbook {book}: running"));
            let (took, failure) = self.run_playbook(&ctx, book).await;
            if let Some(f) = failure {
                said.say(format!("       {}", f.lines().next().unwrap_or_default()));
                let why = format!("promote playbook {book} failed");
                return Err(self
                    .stopped(&mut said, site, &role, 4, &why, true, true)
                    .await);
            }
            said.say(format!("       {book} ok ({took:.1} s)"));
        }
        said.say(format!("  4. promote here: ok ({})", secs(t)));

        // 5. The DNS compare-and-swap (journaled), 6. the epoch here.
        let t = Instant::now();
        if demoted_at.elapsed() > HANDOVER_SWAP_BY {
            let why = format!(
                "{} s since the demote: {} may be serving again on its own",
                demoted_at.elapsed().as_secs(),
                role.master
            );
            return Err(self
                .stopped(&mut said, site, &role, 5, &why, true, true)
                .await);
        }
        if let Some((_, ip)) = dns {
            let read = match self
                .read_dns(site, run, zone.as_deref().unwrap_or_default())
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    let why = format!("the authoritative DNS: {e}");
                    return Err(self
                        .stopped(&mut said, site, &role, 5, &why, true, true)
                        .await);
                }
            };
            run.intent = Some(Intent {
                from_master: role.master.clone(),
                from_epoch: role.epoch,
                to_epoch: new_lock.epoch,
                ip,
                lost_since: now_ms(),
                started: now_ms(),
                seen: format!("switchover asked by `orch promote {name}`"),
                stage: Stage::Locking,
                promoted: site.promote.clone(),
                forced: false,
                switchover: true,
            });
            if !self.journal(site, run).await {
                run.intent = None;
                let why = "the state store could not record the switchover";
                return Err(self
                    .stopped(&mut said, site, &role, 5, why, true, true)
                    .await);
            }
            run.fresh = true;
            run.master_addresses.clear();
            self.continue_takeover(site, run, Ok(read)).await;
            let now = self.roles.get(name).map_err(|e| agent::error_chain(&e))?;
            if run.intent.is_some() {
                said.say(format!(
                    "  5. the DNS update did not answer clearly; the agent settles it (see `orch status`): {} may hold the lock or not",
                    self.me()
                ));
                return Err(said.text());
            }
            if !(now.is_master(self.me()) && now.epoch == new_lock.epoch) {
                let why =
                    "the DNS compare-and-swap failed: the records or the lock changed under this node";
                return Err(self
                    .stopped(&mut said, site, &role, 5, why, true, true)
                    .await);
            }
            said.say(format!(
                "  5. DNS: \"{new_lock}\", records → {ip}: ok ({})",
                secs(t)
            ));
        } else {
            // No lock to take: the roles move, as both nodes agreed.
            if let Err(e) = self.roles.advance(name, self.me(), new_lock.epoch).await {
                let why = format!(
                    "the new epoch cannot be recorded: {}",
                    agent::error_chain(&e)
                );
                return Err(self
                    .stopped(&mut said, site, &role, 5, &why, true, true)
                    .await);
            }
            run.armed = true;
            run.machine.ack();
            self.journal(site, run).await;
            let text = format!(
                "master since a switchover from {} at {} (epoch {})",
                role.master,
                clock(now_ms()),
                new_lock.epoch
            );
            self.publish(site, run, "master", text, None, None);
            said.say("  5. no DNS configured: nothing to swap");
        }
        said.say(format!(
            "  6. epoch {} here: ok; {} is master of {name}",
            new_lock.epoch,
            self.me()
        ));

        // 7. The old master follows.
        let t = Instant::now();
        said.say(format!("  7. rejoin playbooks on {}: running", role.master));
        let rejoin = HandoverStep::Rejoin {
            to_epoch: new_lock.epoch,
        };
        let what = format!("{}'s rejoin", role.master);
        let trouble = self
            .peer_step(&mut said, name, role.epoch, rejoin, &what)
            .await
            .err();
        if trouble.is_none() {
            said.say(format!(
                "  7. {} follows {}: ok ({})",
                role.master,
                self.me(),
                secs(t)
            ));
        }
        if let Some(why) = &trouble {
            said.say(format!(
                "  7. {why}. The site is on {} and stays there; {} is fenced until it is fixed and `orch ack {name}` is run there",
                self.me(),
                role.master
            ));
        }

        // 8. The report.
        said.say(format!(
            "switchover of {name} done in {}: {} is master at epoch {}{}",
            secs(started),
            self.me(),
            new_lock.epoch,
            if trouble.is_some() {
                format!(", but {} did not rejoin", role.master)
            } else {
                format!(", {} follows it", role.master)
            }
        ));
        said.say(format!(
            "automatic failover of {name} is armed (a switchover is an operator's decision, as `orch ack` is)"
        ));
        let outcome = if trouble.is_some() {
            Outcome::Fail
        } else {
            Outcome::Info
        };
        let first = said.lines.last().cloned().unwrap_or_default();
        self.history(name, outcome, &first, None).await;
        self.alerter
            .notice(name, crate::notify::Event::Switchover, &said.text())
            .await;
        said.say("  8. report mail queued");
        match trouble {
            None => Ok(said.text()),
            Some(_) => Err(said.text()),
        }
    }

    /// The switchover stopped at `step` (before the DNS swap): the master serves again
    /// when it was asked to demote (`undo_there`); this node follows it again when its
    /// promote playbooks ran (`undo_here`). Says where it stopped and what each node is.
    #[allow(clippy::too_many_arguments)]
    async fn stopped(
        &self,
        said: &mut Said<'_>,
        site: &Site,
        role: &SiteRole,
        step: usize,
        why: &str,
        undo_there: bool,
        undo_here: bool,
    ) -> String {
        let name = &site.name;
        said.say(format!("  {step}. FAILED: {why}"));
        let mut there = format!(
            "{} is master (epoch {}), as before",
            role.master, role.epoch
        );
        if undo_there {
            said.say(format!(
                "undo: {}'s promote playbooks (it serves again)",
                role.master
            ));
            match self
                .ask_peer(name, role.epoch, HandoverStep::Undo, STEP_TIMEOUT)
                .await
            {
                Ok(r) => {
                    for l in &r.lines {
                        said.say(format!("       {l}"));
                    }
                    if !r.ok {
                        there = format!(
                            "{} is master (epoch {}) but its undo FAILED: its services may be down, fix them by hand",
                            role.master, role.epoch
                        );
                    }
                }
                Err(e) => {
                    there = format!(
                        "{} could not be asked to undo ({e}): it serves again on its own once it hears from {} that this switchover has ended ({} s after the demote at the soonest), or {} min after the demote",
                        role.master,
                        self.me(),
                        HANDOVER_QUIET.as_secs(),
                        HANDOVER_EXPIRES.as_secs() / 60
                    );
                }
            }
        }
        let mut here = format!("{} is standby, as before", self.me());
        if undo_here {
            said.say(format!(
                "undo: demote and rejoin playbooks here ({} follows {} again)",
                self.me(),
                role.master
            ));
            let (lines, failed) = self.follow_again(site, role).await;
            for l in lines {
                said.say(format!("       {l}"));
            }
            if let Some(book) = failed {
                here = format!(
                    "{} is standby, but its databases may not follow {}: playbook {book} failed; fix it by hand",
                    self.me(),
                    role.master
                );
            }
        }
        said.say(format!(
            "switchover of {name} stopped at step {step}: {why}. Now: {there}; {here}. The DNS was not changed."
        ));
        let text = said.text();
        self.history(
            name,
            Outcome::Fail,
            &format!("switchover of {name} stopped at step {step}: {why}"),
            None,
        )
        .await;
        self.alerter
            .notice(name, crate::notify::Event::Switchover, &text)
            .await;
        text
    }

    /// This node's demote and rejoin playbooks, to follow `role`'s master again after
    /// its own promote playbooks ran in a switchover that did not finish: a line each,
    /// and the one that failed (the rest not run).
    async fn follow_again(&self, site: &Site, role: &SiteRole) -> (Vec<String>, Option<String>) {
        let ctx = crate::playbook::Context {
            loaded: &self.loaded,
            site,
            epoch: Ok(role.epoch),
            self_public_ip: self.public_ip().await,
            peer_public_ip: Err(format!(
                "{}'s address is in the site's records",
                role.master
            )),
        };
        let mut lines = Vec::new();
        for book in site.demote.iter().chain(site.rejoin.iter()) {
            let (took, failure) = self.run_playbook(&ctx, book).await;
            match failure {
                None => lines.push(format!("{book} ok ({took:.1} s)")),
                Some(f) => {
                    lines.push(format!(
                        "{book} FAILED: {}",
                        f.lines().next().unwrap_or_default()
                    ));
                    return (lines, Some(book.clone()));
                }
            }
        }
        (lines, None)
    }

    /// A switchover to this node that an agent stop cut off before its DNS swap (found
    /// journaled at the start): undone once the master's agent answers — it serves again
    /// (its promote playbooks; nothing to do if it already does), then this node follows
    /// it again when its own promote playbooks had started. Until then nothing else is
    /// done for the site here (no failover); the status says so.
    pub(super) async fn undo_cut_switchover(
        &self,
        site: &Site,
        run: &mut SiteRun,
        role: &SiteRole,
        agent: &Probe,
    ) {
        let Some(cut) = run.switching.clone() else {
            return;
        };
        let name = &site.name;
        if role.master != cut.from_master || role.epoch != cut.from_epoch {
            // It went through (the swap or the roles recorded before the stop), or the
            // site has moved since: nothing to undo.
            tracing::info!(site = %name, epoch = role.epoch, "A switchover journal older than the site's role: dropped");
            run.switching = None;
            self.journal(site, run).await;
            return;
        }
        let cut_off = format!(
            "the switchover of {name} from {} to {} (epoch {} → {}), started at {}, was cut off before its DNS swap (this node's agent stopped)",
            cut.from_master,
            self.me(),
            cut.from_epoch,
            cut.to_epoch,
            clock(cut.started)
        );
        let there = if agent.ok {
            self.ask_peer(name, cut.from_epoch, HandoverStep::Undo, UNDO_TIMEOUT)
                .await
        } else {
            Err(agent.detail.clone())
        };
        let there = match there {
            Ok(r) => r,
            Err(e) => {
                let text = format!(
                    "{cut_off}: waiting for {}'s agent to undo it ({e}); {} serves again on its own within {} min of its demote. If it is dead, `orch promote {name} --force` takes the site",
                    cut.from_master,
                    cut.from_master,
                    HANDOVER_EXPIRES.as_secs() / 60
                );
                self.publish(site, run, "undoing-switchover", text, None, None);
                return;
            }
        };
        let mut lines: Vec<String> = there.lines.clone();
        let mut outcome = if there.ok {
            Outcome::Warn
        } else {
            Outcome::Fail
        };
        let mut now = if there.ok {
            format!("{} serves it again", cut.from_master)
        } else {
            format!(
                "{} is master but its undo FAILED: its services may be down, fix them by hand",
                cut.from_master
            )
        };
        if cut.promoting {
            lines.push(format!(
                "{}: demote and rejoin playbooks ({} follows {} again)",
                self.me(),
                self.me(),
                cut.from_master
            ));
            let (here, failed) = self.follow_again(site, role).await;
            lines.extend(here.into_iter().map(|l| format!("{}: {l}", self.me())));
            match failed {
                None => now.push_str(&format!(", {} follows it again", self.me())),
                Some(book) => {
                    outcome = Outcome::Fail;
                    now.push_str(&format!(
                        ", {} is standby but its databases may not follow {}: playbook {book} failed; fix it by hand",
                        self.me(),
                        cut.from_master
                    ));
                }
            }
        } else {
            now.push_str(&format!(
                ", {} is standby as before (its promote playbooks had not started)",
                self.me()
            ));
        }
        run.switching = None;
        self.journal(site, run).await;
        let text = format!("{cut_off}: undone; {now}. The DNS was not changed.");
        tracing::warn!(site = %name, %text, "Switchover undone");
        self.history(name, outcome, &text, None).await;
        self.alerter
            .notice(
                name,
                crate::notify::Event::Switchover,
                &format!("{text}\n\n{}", lines.join("\n")),
            )
            .await;
    }

    // ---- the master's side ------------------------------------------------------

    /// A step of a switchover asked by the peer; the answer is a [`HandoverReply`] as
    /// JSON. The push steps are the peering's; this answers the others.
    pub(super) async fn handover(
        &self,
        site: &Site,
        run: &mut SiteRun,
        h: Handover,
    ) -> Result<String, String> {
        h.check()?;
        let role = self
            .roles
            .get(&h.site)
            .map_err(|e| agent::error_chain(&e))?;
        let reply = match h.step {
            HandoverStep::Check => {
                self.may_hand_over(site, run, &role, h.epoch)?;
                self.handover_check(site, &role)
            }
            HandoverStep::Demote => {
                self.may_hand_over(site, run, &role, h.epoch)?;
                self.hand_demote(site, run, &role).await
            }
            HandoverStep::Undo => self.hand_undo(site, run, "the peer asked").await,
            HandoverStep::Rejoin { to_epoch } => self.hand_rejoin(site, run, &role, to_epoch).await,
            HandoverStep::Push => return Err("a push is the peering's".into()),
        };
        serde_json::to_string(&reply).map_err(|e| e.to_string())
    }

    /// Whether the peer may ask this node to hand `site` over: this node is its master
    /// at `epoch`, and nothing else is changing its hands.
    pub(super) fn may_hand_over(
        &self,
        site: &Site,
        run: &SiteRun,
        role: &SiteRole,
        epoch: i64,
    ) -> Result<(), String> {
        if !role.is_master(self.me()) || role.epoch != epoch {
            return Err(format!(
                "{} is not master of {} at epoch {epoch} (its store says: {} at epoch {})",
                self.me(),
                site.name,
                role.master,
                role.epoch
            ));
        }
        if run.intent.is_some() || run.rejoin.is_some() {
            return Err(format!(
                "{} is changing hands already on {}",
                site.name,
                self.me()
            ));
        }
        if let Some(why) = self.roles.fenced(&site.name) {
            if run.handing.is_none() {
                return Err(format!("{} is fenced on {}: {why}", site.name, self.me()));
            }
        }
        Ok(())
    }

    fn handover_check(&self, site: &Site, role: &SiteRole) -> HandoverReply {
        let ctx = crate::playbook::Context {
            loaded: &self.loaded,
            site,
            epoch: Ok(role.epoch),
            self_public_ip: Err("not needed to check".into()),
            peer_public_ip: Err("not needed to check".into()),
        };
        let mut lines = Vec::new();
        let mut ok = true;
        for (list, book) in site
            .demote
            .iter()
            .map(|b| ("demote", b))
            .chain(site.promote.iter().map(|b| ("promote (undo)", b)))
            .chain(site.rejoin.iter().map(|b| ("rejoin", b)))
        {
            match crate::playbook::plan(&ctx, book) {
                Ok(plan) => lines.push(format!(
                    "{}: {list} playbook {book} valid, {} step(s)",
                    self.me(),
                    plan.steps.len()
                )),
                Err(e) => {
                    ok = false;
                    lines.push(format!("{}: {list} playbook {book}: {e}", self.me()));
                }
            }
        }
        HandoverReply {
            ok,
            lines,
            positions: BTreeMap::new(),
        }
    }

    /// The demote: handing over from now on (journaled, pushes refused), the demote
    /// playbooks, then each database's final position.
    async fn hand_demote(&self, site: &Site, run: &mut SiteRun, role: &SiteRole) -> HandoverReply {
        let peer = self.peer().to_owned();
        if run.handing.is_none() {
            run.handing = Some(Handing {
                to: peer.clone(),
                epoch: role.epoch,
                started: now_ms(),
                demoted: Vec::new(),
            });
        }
        let fence = format!("handing over to {peer} (switchover)");
        self.roles.fence(&site.name, Some(fence.clone()));
        self.journal(site, run).await;
        self.history(
            &site.name,
            Outcome::Warn,
            &format!("{}: switchover to {peer} asked; demoting", site.name),
            None,
        )
        .await;
        self.publish(site, run, "handing-over", fence, None, None);
        let ctx = crate::playbook::Context {
            loaded: &self.loaded,
            site,
            epoch: Ok(role.epoch),
            self_public_ip: self.public_ip().await,
            peer_public_ip: Err(format!("{peer}'s address is not known here")),
        };
        let mut lines = Vec::new();
        for book in &site.demote {
            if run
                .handing
                .as_ref()
                .is_some_and(|h| h.demoted.contains(book))
            {
                lines.push(format!("{}: {book} ok (before)", self.me()));
                continue;
            }
            let (took, failure) = self.run_playbook(&ctx, book).await;
            if let Some(f) = failure {
                lines.push(format!("{}: demote playbook {book} FAILED: {f}", self.me()));
                return HandoverReply {
                    ok: false,
                    lines,
                    positions: BTreeMap::new(),
                };
            }
            lines.push(format!("{}: {book} ok ({took:.1} s)", self.me()));
            if let Some(h) = run.handing.as_mut() {
                h.demoted.push(book.clone());
            }
            self.journal(site, run).await;
        }
        let mut positions = BTreeMap::new();
        let mut ok = true;
        for db in &site.databases {
            let got = match crate::databases::endpoint(&self.loaded.config, db, self.me()) {
                Ok(here) => {
                    agent::db::final_position(
                        crate::databases::engine(db.kind),
                        &here,
                        &db.name,
                        db.data_dirs.get(self.me()).map(|p| p.as_path()),
                    )
                    .await
                }
                Err(e) => Err(e.to_string()),
            };
            match got {
                Ok(p) => {
                    lines.push(format!(
                        "{}: database {} final position {p}",
                        self.me(),
                        db.name
                    ));
                    positions.insert(db.name.clone(), p);
                }
                Err(e) => {
                    ok = false;
                    lines.push(format!(
                        "{}: database {}: final position unknown: {e}",
                        self.me(),
                        db.name
                    ));
                }
            }
        }
        HandoverReply {
            ok,
            lines,
            positions,
        }
    }

    /// Serves again after a demote that did not lead to a swap: the promote playbooks
    /// (they must be safe to run on a node that is master already), pushes allowed.
    pub(super) async fn hand_undo(
        &self,
        site: &Site,
        run: &mut SiteRun,
        why: &str,
    ) -> HandoverReply {
        let Some(h) = run.handing.clone() else {
            return HandoverReply {
                ok: true,
                lines: vec![format!("{}: nothing to undo (not handing over)", self.me())],
                positions: BTreeMap::new(),
            };
        };
        let ctx = crate::playbook::Context {
            loaded: &self.loaded,
            site,
            epoch: Ok(h.epoch),
            self_public_ip: self.public_ip().await,
            peer_public_ip: Err(format!("{}'s address is not known here", h.to)),
        };
        let mut lines = Vec::new();
        let mut ok = true;
        for book in &site.promote {
            let (took, failure) = self.run_playbook(&ctx, book).await;
            match failure {
                None => lines.push(format!("{}: {book} ok ({took:.1} s)", self.me())),
                Some(f) => {
                    ok = false;
                    lines.push(format!(
                        "{}: promote playbook {book} FAILED: {f}",
                        self.me()
                    ));
                    break;
                }
            }
        }
        run.handing = None;
        self.journal(site, run).await;
        self.roles.fence(&site.name, None);
        let text = if ok {
            format!(
                "{}: the switchover of {} to {} was undone ({why}); {} serves it again",
                site.name,
                site.name,
                h.to,
                self.me()
            )
        } else {
            format!(
                "{}: undoing the switchover to {} ({why}) FAILED: {} is master but its services may be down; fix them by hand",
                site.name,
                h.to,
                self.me()
            )
        };
        self.history(
            &site.name,
            if ok { Outcome::Warn } else { Outcome::Fail },
            &text,
            None,
        )
        .await;
        if !ok {
            let key = format!("switchover:{}:undo", site.name);
            self.alerter
                .raise(
                    &key,
                    Some(&site.name),
                    &format!("{text}\n\n{}", lines.join("\n")),
                )
                .await;
        }
        self.publish(site, run, "master", text, None, None);
        HandoverReply {
            ok,
            lines,
            positions: BTreeMap::new(),
        }
    }

    /// The peer holds the lock at `to_epoch`: this node records it and rejoins (its
    /// demote already ran).
    async fn hand_rejoin(
        &self,
        site: &Site,
        run: &mut SiteRun,
        role: &SiteRole,
        to_epoch: i64,
    ) -> HandoverReply {
        let peer = self.peer().to_owned();
        let answer = |ok: bool, line: String| HandoverReply {
            ok,
            lines: vec![line],
            positions: BTreeMap::new(),
        };
        if let Some(r) = &run.rejoin {
            return match &r.failed {
                Some(f) => answer(false, format!("{}: rejoin FAILED: {f}", self.me())),
                None => answer(false, format!("{}: rejoining now", self.me())),
            };
        }
        if role.master == peer && role.epoch == to_epoch {
            return answer(
                true,
                format!("{}: follows {peer} at epoch {to_epoch} already", self.me()),
            );
        }
        let handing_at = run.handing.as_ref().map(|h| h.epoch);
        if !(role.is_master(self.me())
            && handing_at == Some(role.epoch)
            && to_epoch == role.epoch + 1)
        {
            return answer(
                false,
                format!(
                    "{}: not handing {} over at epoch {} (its store says {} at epoch {})",
                    self.me(),
                    site.name,
                    to_epoch - 1,
                    role.master,
                    role.epoch
                ),
            );
        }
        let l = Lock {
            master: peer,
            epoch: to_epoch,
        };
        // The DNS record is the lock: a site that has one steps down only when it names
        // the peer at the new epoch (the peer's word alone does not move it).
        let has_dns = site.dns.is_some() && !site.records.is_empty();
        if has_dns {
            let read = match self.provider(site, run).await {
                Some(zone) => self.read_dns(site, run, &zone).await,
                None => Err("the DNS provider cannot be used now".to_owned()),
            };
            match read {
                Ok(r) if r.holder == Holder::Held(l.clone()) => {}
                Ok(r) => {
                    return answer(
                        false,
                        format!(
                            "{}: the lock record holds {}, not \"{l}\": not stepping down",
                            self.me(),
                            r.holder
                        ),
                    )
                }
                Err(e) => {
                    return answer(
                        false,
                        format!(
                            "{}: the lock record cannot be read ({e}): not stepping down now (it will once it reads the lock)",
                            self.me()
                        ),
                    )
                }
            }
        }
        self.replaced(site, run, &l, "the switchover").await;
        match &run.rejoin {
            None => answer(
                true,
                format!(
                    "{}: rejoin playbooks ok: follows {} at epoch {to_epoch}",
                    self.me(),
                    l.master
                ),
            ),
            Some(r) => answer(
                false,
                format!(
                    "{}: rejoin FAILED: {}",
                    self.me(),
                    r.failed.as_deref().unwrap_or("not finished")
                ),
            ),
        }
    }

    /// The master's tick while it hands the site over: it waits for the peer's lock, and
    /// serves again on its own once [`HANDOVER_EXPIRES`] has passed without it, or sooner
    /// when the peer's agent says it is not switching over any more ([`handover_end`]).
    ///
    /// It serves again only when it knows the peer did not take the site: the lock record
    /// read now names this node at the handover's epoch, or the peer's agent says this
    /// node is master at it. Otherwise (a site without DNS, the peer silent) it waits.
    pub(super) async fn still_handing(
        &self,
        site: &Site,
        run: &mut SiteRun,
        peer_says: Option<&Lock>,
        peer_switching: bool,
        dns_says: Option<&Holder>,
    ) {
        let Some(h) = run.handing.clone() else {
            return;
        };
        let fence = format!("handing over to {} (switchover)", h.to);
        self.roles.fence(&site.name, Some(fence.clone()));
        let mine = Lock {
            master: self.me().to_owned(),
            epoch: h.epoch,
        };
        let still_mine =
            peer_says == Some(&mine) || matches!(dns_says, Some(Holder::Held(l)) if *l == mine);
        let waited = Duration::from_millis(now_ms().saturating_sub(h.started).max(0) as u64);
        let peer_idle = peer_says == Some(&mine) && !peer_switching;
        if let Some(end) = handover_end(waited, still_mine, peer_idle) {
            let why = match end {
                HandoverEnd::PeerStopped => format!(
                    "{} is not switching over any more ({} s after the demote at {}) and did not ask to undo it",
                    h.to,
                    waited.as_secs(),
                    clock(h.started)
                ),
                HandoverEnd::Expired => format!(
                    "{} did not take the lock within {} min of the demote at {}",
                    h.to,
                    HANDOVER_EXPIRES.as_secs() / 60,
                    clock(h.started)
                ),
            };
            tracing::warn!(site = %site.name, %why, "Handover ended: serving again");
            let reply = self.hand_undo(site, run, &why).await;
            let key = format!("switchover:{}:expired", site.name);
            self.alerter
                .raise(
                    &key,
                    Some(&site.name),
                    &format!(
                        "{}: the switchover to {} stopped half-way ({why}); {} serves it again.\n\n{}",
                        site.name,
                        h.to,
                        self.me(),
                        reply.lines.join("\n")
                    ),
                )
                .await;
            return;
        }
        let text = format!(
            "{fence}: demoted at {}, waiting for {} to take the lock (serves again on its own after {} min, or once {} says it is not switching over)",
            clock(h.started),
            h.to,
            HANDOVER_EXPIRES.as_secs() / 60,
            h.to
        );
        self.publish(site, run, "handing-over", text, None, None);
    }
}

/// Why a master handing a site over serves it again on its own.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HandoverEnd {
    /// The peer's agent names this node master and says it is not switching over: its
    /// switchover stopped without its undo reaching here (this node's agent restarted
    /// during the demote, or the peer's request was lost).
    PeerStopped,
    /// [`HANDOVER_EXPIRES`] passed (the peer is silent or still switching over).
    Expired,
}

/// Whether a master that demoted `waited` ago for a switchover serves again now.
/// `still_mine`: the lock record or the peer's agent names this node at the handover's
/// epoch (else the peer may hold the site: never). `peer_idle`: the peer's agent, heard
/// now, names it and is not switching over — believed only [`HANDOVER_QUIET`] after the
/// demote, when a heartbeat made before the demote request can no longer arrive.
pub(super) fn handover_end(
    waited: Duration,
    still_mine: bool,
    peer_idle: bool,
) -> Option<HandoverEnd> {
    if !still_mine {
        None
    } else if waited > HANDOVER_EXPIRES {
        Some(HandoverEnd::Expired)
    } else if peer_idle && waited > HANDOVER_QUIET {
        Some(HandoverEnd::PeerStopped)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{handover_end, inert, HandoverEnd, HANDOVER_EXPIRES, HANDOVER_QUIET};
    use std::time::Duration;

    #[test]
    fn a_master_handing_over_serves_again_only_once_the_site_is_known_to_be_its_own() {
        let s = Duration::from_secs;
        // The peer idle: believed only after the quiet time, and never when the lock or
        // the peer may name the peer.
        assert_eq!(handover_end(s(5), true, true), None);
        assert_eq!(handover_end(HANDOVER_QUIET, true, true), None);
        assert_eq!(
            handover_end(HANDOVER_QUIET + s(1), true, true),
            Some(HandoverEnd::PeerStopped)
        );
        assert_eq!(handover_end(HANDOVER_QUIET + s(1), false, true), None);
        // The peer switching over, or silent: the whole expiry.
        assert_eq!(handover_end(HANDOVER_EXPIRES - s(1), true, false), None);
        assert_eq!(
            handover_end(HANDOVER_EXPIRES + s(1), true, false),
            Some(HandoverEnd::Expired)
        );
        assert_eq!(handover_end(HANDOVER_EXPIRES + s(1), false, false), None);
    }

    #[test]
    fn a_peer_text_reaches_the_terminal_inert_and_short() {
        assert_eq!(inert("alice: web-stop ok"), "alice: web-stop ok");
        assert_eq!(
            inert("x\u{1b}[2J\ry\n"),
            "x\\u{1b}[2J\\ry\\n",
            "escape sequences, returns and newlines are shown, not obeyed"
        );
        let long = inert(&"é".repeat(1000));
        assert!(
            long.len() <= agent::PEER_TEXT + 3 && long.ends_with('…'),
            "{}",
            long.len()
        );
    }
}

//! The failover decision of one site, on its standby: sans-IO, like `tunnel::link`. The
//! daemon feeds it an [`Observation`] every tick (≤ 5 s) with `now`; it answers with a
//! [`Decision`] and, through [`Failover::poll_event`], the alerts to raise or clear.
//!
//! The master is **lost** when its agent (over the tunnel) and its public health checks
//! (the site's `health` URLs, at the address the records hold) have both failed, without
//! a break, for `after` — counted only while this node can show that it is online itself
//! (a strict majority of its witnesses answer). Anything less never acts:
//! - the agent silent but the site healthy → the tunnel is down, not the master;
//! - the site unhealthy but the agent answers → the web server, not the master;
//! - no majority of witnesses → this node may be the one cut off;
//! - no health URL → a tunnel loss cannot be told from a master loss;
//! - the authoritative DNS unreadable → the lock (the records) cannot be taken;
//! - this standby's database lagging past its limit, or broken, at its last check → a
//!   failover would lose committed data;
//! - one automatic failover per site until `orch ack` (anti-flap);
//! - `failover = "manual"` → an alert saying what to run, never an action.
//!
//! Taking over ([`Decision::FailOver`]) is said once per loss; the daemon then takes the
//! DNS lock, and reports back with [`Failover::failed_over`] or [`Failover::lock_lost`].

use crate::config::FailoverMode;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// What the standby saw this tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The master's agent answered a heartbeat lately.
    pub agent: bool,
    /// Each health URL: whether it answered as expected (empty: none configured).
    pub health: Vec<bool>,
    /// Each witness: whether it answered (empty: none configured).
    pub witnesses: Vec<bool>,
    /// The authoritative servers answered for the site's records and TXT.
    pub dns_readable: bool,
    /// This node's database replication at its last check.
    pub data: DataGuard,
}

/// How safe this standby's data is to take over with.
#[derive(Debug, Clone, PartialEq)]
pub enum DataGuard {
    /// No database, or replicating within its limit.
    Ok,
    /// Behind by this much at the last check (past the limit).
    Lagging { behind: String },
    /// Replication does not run.
    Broken { why: String },
}

impl DataGuard {
    /// The worst of several databases' guards (broken over lagging over ok).
    pub fn worst(guards: impl IntoIterator<Item = DataGuard>) -> DataGuard {
        let rank = |g: &DataGuard| match g {
            DataGuard::Ok => 0,
            DataGuard::Lagging { .. } => 1,
            DataGuard::Broken { .. } => 2,
        };
        guards.into_iter().max_by_key(rank).unwrap_or(DataGuard::Ok)
    }

    /// The sentence for the report and status (`None` when ok).
    pub fn problem(&self) -> Option<String> {
        match self {
            DataGuard::Ok => None,
            DataGuard::Lagging { behind } => {
                Some(format!("this node's database is {behind} behind"))
            }
            DataGuard::Broken { why } => Some(format!("this node's replication is broken ({why})")),
        }
    }
}

/// What one database's check says about taking over with the standby's copy. `limit` is
/// the site's `max_lag_on_failover` (`None`: the database's own `max_lag`, as the check
/// judged it). `None` when the check could not ask the master: a lost master says nothing
/// about the standby's data, so the last check that could ask it still stands.
pub fn data_guard(report: &agent::db::Report, limit: Option<Duration>) -> Option<DataGuard> {
    use agent::db::Verdict;
    if report.master.error.is_some() {
        return None;
    }
    let figures = &report.figures;
    let lag = [
        figures.replay_lag_seconds,
        figures.seconds_behind.map(|s| s as f64),
        figures.heartbeat_age_ms.map(|ms| ms as f64 / 1000.0),
    ]
    .into_iter()
    .flatten()
    .fold(None, |worst: Option<f64>, s| {
        Some(worst.map_or(s, |w| w.max(s)))
    });
    let seconds = lag.map_or("too far".to_owned(), |s| format!("{s:.1} s"));
    match (report.verdict, limit) {
        (Verdict::Broken, _) => Some(DataGuard::Broken {
            why: format!("{}: {}", report.name, report.problems.join("; ")),
        }),
        (_, Some(limit)) if lag.is_some_and(|s| s > limit.as_secs_f64()) => {
            Some(DataGuard::Lagging {
                behind: format!(
                    "{seconds} ({}; limit max_lag_on_failover = {})",
                    report.name,
                    humantime::format_duration(limit)
                ),
            })
        }
        (_, Some(_)) => Some(DataGuard::Ok),
        (Verdict::Lagging, None) => Some(DataGuard::Lagging {
            behind: format!(
                "{seconds} ({}: {})",
                report.name,
                report.problems.join("; ")
            ),
        }),
        (Verdict::Healthy, None) => Some(DataGuard::Ok),
    }
}

/// Why the standby does not take over now, in words the status and alerts use.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hold {
    /// The site has no `health` URL: a tunnel loss looks like a master loss.
    NoHealthChecks,
    /// Not a strict majority of witnesses answer: this node may be the one cut off.
    CutOff { answering: usize, of: usize },
    /// The master's agent is silent but its site answers: the tunnel is down.
    TunnelOnly,
    /// The site does not answer, but the master's agent does.
    HealthOnly,
    /// The authoritative DNS does not answer: the lock cannot be taken.
    DnsUnreadable,
    /// This standby's data is not safe to take over with.
    Data(String),
    /// It failed over once already; `orch ack SITE` re-arms it.
    Disarmed,
    /// Someone else moved the site's records before this node could: not acting until
    /// `orch ack SITE`.
    RecordsMoved,
    /// `failover = "manual"`.
    Manual,
}

impl Hold {
    /// A short name, for alert keys and the history.
    pub fn key(&self) -> &'static str {
        match self {
            Hold::NoHealthChecks => "no-health-checks",
            Hold::CutOff { .. } => "cut-off",
            Hold::TunnelOnly => "tunnel-only",
            Hold::HealthOnly => "health-only",
            Hold::DnsUnreadable => "dns-unreadable",
            Hold::Data(_) => "data",
            Hold::Disarmed => "disarmed",
            Hold::RecordsMoved => "records-moved",
            Hold::Manual => "manual",
        }
    }

    /// The sentence for status, history and alerts.
    pub fn explain(&self, site: &str, master: &str) -> String {
        match self {
            Hold::NoHealthChecks => format!(
                "not failing over: {site} has no health URL, so a broken tunnel cannot be told from a lost master (add health = [\"https://…\"])"
            ),
            Hold::CutOff { of: 0, .. } => format!(
                "not failing over: {site} has no witnesses, so this node cannot tell a lost master from being cut off itself (add witnesses = [\"tcp:HOST:PORT\", …], two or more independent ones)"
            ),
            Hold::CutOff { answering, of } => format!(
                "this node may be the one cut off ({answering}/{of} witnesses answer): not failing over"
            ),
            Hold::TunnelOnly => format!(
                "the tunnel to {master} is down but {site} answers: not failing over"
            ),
            Hold::HealthOnly => format!(
                "{site} is unhealthy but {master}'s agent answers: not failing over (look at its web server)"
            ),
            Hold::DnsUnreadable => format!(
                "{master} looks lost, but the authoritative DNS does not answer: the records cannot be taken over; retrying"
            ),
            Hold::Data(why) => format!(
                "{master} looks lost, but failing over now would lose data: {why}; to take over anyway run `orch promote {site} --force`"
            ),
            Hold::Disarmed => format!(
                "{master} looks lost, but {site} failed over once already: automatic failover is disarmed until `orch ack {site}`"
            ),
            Hold::RecordsMoved => format!(
                "{master} looked lost, but the site's records were moved by someone else before this node could take them: not failing over until `orch ack {site}`"
            ),
            Hold::Manual => format!(
                "{master} looks lost and {site} fails over by hand: run `orch promote {site} --force` on this node"
            ),
        }
    }
}

/// What the standby does about the site now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The master answers.
    Watching,
    /// The master looks lost since `since`; taking over in `left` unless it returns.
    Counting { since: Instant, left: Duration },
    /// Not taking over, for this reason (and since when the master looked lost, if it
    /// does).
    Holding {
        hold: Hold,
        lost_since: Option<Instant>,
    },
    /// Take over now: lock the records for this node at the next epoch.
    FailOver { lost_since: Instant },
    /// A takeover is under way or done; nothing more until `orch ack`.
    TakenOver,
}

/// An alert to raise or clear (the daemon keys them per site).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Raise { hold: Hold },
    Clear { hold: Hold },
}

/// The site's failover state on its standby.
#[derive(Debug)]
pub struct Failover {
    after: Duration,
    mode: FailoverMode,
    armed: bool,
    taking_over: bool,
    /// The lock was found taken by someone else.
    moved: bool,
    /// When agent and health both started failing, counted while this node is online.
    lost_since: Option<Instant>,
    /// A hold and since when it lasts (alerted once it lasted `after`).
    holding: Option<(Hold, Instant)>,
    alerted: Option<Hold>,
    events: VecDeque<Event>,
}

impl Failover {
    /// `armed`: no automatic failover happened since the last `orch ack` (kept in the
    /// state store by the daemon).
    pub fn new(after: Duration, mode: FailoverMode, armed: bool) -> Failover {
        Failover {
            after,
            mode,
            armed,
            taking_over: false,
            moved: false,
            lost_since: None,
            holding: None,
            alerted: None,
            events: VecDeque::new(),
        }
    }

    pub fn armed(&self) -> bool {
        self.armed
    }

    /// One tick's observation.
    pub fn observe(&mut self, now: Instant, o: &Observation) -> Decision {
        let decision = self.decide(now, o);
        let hold = match &decision {
            Decision::Holding { hold, .. } => Some(hold.clone()),
            _ => None,
        };
        self.track(now, hold);
        decision
    }

    fn decide(&mut self, now: Instant, o: &Observation) -> Decision {
        if self.taking_over {
            return Decision::TakenOver;
        }
        let healthy = o.health.iter().any(|h| *h);
        let answering = o.witnesses.iter().filter(|w| **w).count();
        let online = answering * 2 > o.witnesses.len();
        if o.agent {
            self.lost_since = None;
            if !o.health.is_empty() && !healthy && online {
                return Decision::Holding {
                    hold: Hold::HealthOnly,
                    lost_since: None,
                };
            }
            return Decision::Watching;
        }
        // The agent is silent.
        if o.health.is_empty() {
            self.lost_since = None;
            return Decision::Holding {
                hold: Hold::NoHealthChecks,
                lost_since: None,
            };
        }
        if !online {
            // What this node sees while it may be cut off proves nothing.
            self.lost_since = None;
            return Decision::Holding {
                hold: Hold::CutOff {
                    answering,
                    of: o.witnesses.len(),
                },
                lost_since: None,
            };
        }
        if healthy {
            self.lost_since = None;
            return Decision::Holding {
                hold: Hold::TunnelOnly,
                lost_since: None,
            };
        }
        let since = *self.lost_since.get_or_insert(now);
        let lost_for = now.saturating_duration_since(since);
        if lost_for < self.after {
            return Decision::Counting {
                since,
                left: self.after - lost_for,
            };
        }
        let hold = if self.mode == FailoverMode::Manual {
            Some(Hold::Manual)
        } else if self.moved {
            Some(Hold::RecordsMoved)
        } else if !self.armed {
            Some(Hold::Disarmed)
        } else if !o.dns_readable {
            Some(Hold::DnsUnreadable)
        } else {
            o.data.problem().map(Hold::Data)
        };
        match hold {
            Some(hold) => Decision::Holding {
                hold,
                lost_since: Some(since),
            },
            None => {
                self.taking_over = true;
                Decision::FailOver { lost_since: since }
            }
        }
    }

    /// Raises a hold's alert once it lasted `after` (at once for the ones that need a
    /// person now), and clears it when it ends. Holds of one kind are one alert (the
    /// witness count or the lag may change while it lasts).
    fn track(&mut self, now: Instant, hold: Option<Hold>) {
        let same = |a: &Hold, b: &Hold| std::mem::discriminant(a) == std::mem::discriminant(b);
        match (&mut self.holding, hold) {
            (Some((h, _)), Some(new)) if same(h, &new) => *h = new,
            (slot, new) => *slot = new.map(|h| (h, now)),
        }
        if let Some(old) = &self.alerted {
            if !self.holding.as_ref().is_some_and(|(h, _)| same(h, old)) {
                self.events.push_back(Event::Clear { hold: old.clone() });
                self.alerted = None;
            }
        }
        if self.alerted.is_none() {
            if let Some((h, since)) = &self.holding {
                let at_once = matches!(
                    h,
                    Hold::Manual | Hold::Disarmed | Hold::RecordsMoved | Hold::Data(_)
                );
                if at_once || now.saturating_duration_since(*since) >= self.after {
                    self.events.push_back(Event::Raise { hold: h.clone() });
                    self.alerted = Some(h.clone());
                }
            }
        }
    }

    /// The lock was taken and the takeover done: the site stays disarmed until ack.
    pub fn failed_over(&mut self) {
        self.taking_over = true;
        self.armed = false;
    }

    /// The lock could not be taken (someone moved the records, or DNS failed): nothing
    /// was promoted. A lock that someone else holds needs a person; a DNS failure is
    /// retried at the next tick.
    pub fn lock_lost(&mut self, retry: bool) {
        self.taking_over = false;
        self.moved = !retry;
    }

    /// The peer took the site over automatically (this node learned it from the lock):
    /// the pair had its one automatic failover; this node does not fail back on its own
    /// until `orch ack`.
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// Automatic failover is possible again, with nothing else lifted: the peer's operator
    /// ran `orch ack` there (a hold of this node's own, records moved by someone else,
    /// still needs one here).
    pub fn arm(&mut self) {
        self.armed = true;
    }

    /// `orch ack SITE`: automatic failover is possible again.
    pub fn ack(&mut self) {
        self.armed = true;
        self.moved = false;
        self.taking_over = false;
        self.lost_since = None;
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;

//! The failover decision with injected time: one test per transition and per guard, and
//! simulations of flaps shorter than `after` (never a failover) and long losses (one).

use super::*;

const AFTER: Duration = Duration::from_secs(60);
const TICK: Duration = Duration::from_secs(5);

fn ok() -> Observation {
    Observation {
        agent: true,
        health: vec![true],
        witnesses: vec![true, true],
        dns_readable: true,
        data: DataGuard::Ok,
    }
}

fn lost() -> Observation {
    Observation {
        agent: false,
        health: vec![false],
        ..ok()
    }
}

struct Sim {
    f: Failover,
    now: Instant,
    events: Vec<Event>,
}

impl Sim {
    fn new(mode: FailoverMode) -> Sim {
        Sim {
            f: Failover::new(AFTER, mode, true),
            now: Instant::now(),
            events: vec![],
        }
    }

    /// Feeds `o` every tick for `d`; returns every decision.
    fn run(&mut self, o: &Observation, d: Duration) -> Vec<Decision> {
        let mut out = vec![];
        let end = self.now + d;
        while self.now < end {
            out.push(self.f.observe(self.now, o));
            while let Some(e) = self.f.poll_event() {
                self.events.push(e);
            }
            self.now += TICK;
        }
        out
    }

    fn last(&mut self, o: &Observation, d: Duration) -> Decision {
        self.run(o, d).pop().unwrap()
    }
}

fn failovers(ds: &[Decision]) -> usize {
    ds.iter()
        .filter(|d| matches!(d, Decision::FailOver { .. }))
        .count()
}

fn holds(ds: &[Decision]) -> Vec<Hold> {
    ds.iter()
        .filter_map(|d| match d {
            Decision::Holding { hold, .. } => Some(hold.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_healthy_master_is_watched() {
    let mut s = Sim::new(FailoverMode::Auto);
    let ds = s.run(&ok(), Duration::from_secs(600));
    assert!(ds.iter().all(|d| *d == Decision::Watching), "{ds:?}");
    assert!(s.events.is_empty());
}

#[test]
fn a_master_lost_for_after_is_taken_over_once() {
    let mut s = Sim::new(FailoverMode::Auto);
    s.run(&ok(), Duration::from_secs(30));
    let t0 = s.now;
    let ds = s.run(&lost(), AFTER);
    assert!(
        ds.iter()
            .all(|d| matches!(d, Decision::Counting { since, .. } if *since == t0)),
        "{ds:?}"
    );
    let Decision::Counting { left, .. } = &ds[1] else {
        unreachable!()
    };
    assert_eq!(*left, AFTER - TICK);
    let ds = s.run(&lost(), Duration::from_secs(600));
    assert_eq!(ds[0], Decision::FailOver { lost_since: t0 });
    assert_eq!(failovers(&ds), 1);
    assert!(ds[1..].iter().all(|d| *d == Decision::TakenOver));
    assert!(
        s.f.armed(),
        "disarmed once the takeover is done, not before"
    );
    s.f.failed_over();
    assert!(!s.f.armed());
}

#[test]
fn a_loss_that_ends_before_after_resets_the_count() {
    let mut s = Sim::new(FailoverMode::Auto);
    s.run(&lost(), AFTER - TICK);
    // One tick where the agent answers: the count starts again.
    s.run(&ok(), TICK);
    let ds = s.run(&lost(), AFTER - TICK);
    assert_eq!(failovers(&ds), 0, "{ds:?}");
    assert!(matches!(
        s.last(&lost(), TICK * 2),
        Decision::FailOver { .. }
    ));
}

#[test]
fn only_the_tunnel_down_never_fails_over_and_alerts_after_after() {
    let mut s = Sim::new(FailoverMode::Auto);
    let tunnel_only = Observation {
        agent: false,
        ..ok()
    };
    let ds = s.run(&tunnel_only, Duration::from_secs(3600));
    assert_eq!(failovers(&ds), 0);
    assert!(holds(&ds).iter().all(|h| *h == Hold::TunnelOnly));
    assert_eq!(
        s.events,
        [Event::Raise {
            hold: Hold::TunnelOnly
        }]
    );
    s.run(&ok(), TICK);
    assert_eq!(
        s.events.last(),
        Some(&Event::Clear {
            hold: Hold::TunnelOnly
        })
    );
}

#[test]
fn an_unhealthy_site_with_a_live_agent_never_fails_over() {
    let mut s = Sim::new(FailoverMode::Auto);
    let health_only = Observation {
        health: vec![false, false],
        ..ok()
    };
    let ds = s.run(&health_only, Duration::from_secs(3600));
    assert_eq!(failovers(&ds), 0);
    assert!(holds(&ds).iter().all(|h| *h == Hold::HealthOnly));
    assert_eq!(
        s.events,
        [Event::Raise {
            hold: Hold::HealthOnly
        }]
    );
    // One of two health URLs answering is a healthy site.
    let one = Observation {
        agent: false,
        health: vec![false, true],
        ..ok()
    };
    assert_eq!(
        s.last(&one, TICK),
        Decision::Holding {
            hold: Hold::TunnelOnly,
            lost_since: None
        }
    );
}

#[test]
fn a_node_that_may_be_cut_off_never_acts_and_its_time_cut_off_is_no_evidence() {
    let mut s = Sim::new(FailoverMode::Auto);
    for witnesses in [vec![true, false], vec![false, false], vec![false], vec![]] {
        let cut = Observation {
            witnesses: witnesses.clone(),
            ..lost()
        };
        let ds = s.run(&cut, Duration::from_secs(600));
        assert_eq!(failovers(&ds), 0, "{witnesses:?}");
        let want = witnesses.iter().filter(|w| **w).count();
        assert!(
            holds(&ds).iter().all(|h| *h
                == Hold::CutOff {
                    answering: want,
                    of: witnesses.len()
                }),
            "{witnesses:?}: {ds:?}"
        );
    }
    // Said in words: without witnesses at all, what to add.
    let none = Hold::CutOff {
        answering: 0,
        of: 0,
    }
    .explain("web", "alice");
    assert!(none.contains("web has no witnesses"), "{none}");
    assert!(none.contains("add witnesses"), "{none}");
    let some = Hold::CutOff {
        answering: 1,
        of: 2,
    }
    .explain("web", "alice");
    assert!(
        some.contains("may be the one cut off (1/2 witnesses answer)"),
        "{some}"
    );
    // Online again, the master still silent: the whole `after` is counted from now.
    let ds = s.run(&lost(), AFTER - TICK);
    assert_eq!(failovers(&ds), 0);
    assert!(matches!(
        s.last(&lost(), TICK * 2),
        Decision::FailOver { .. }
    ));
    // Two of three witnesses are a majority.
    let mut s = Sim::new(FailoverMode::Auto);
    let two_of_three = Observation {
        witnesses: vec![true, false, true],
        ..lost()
    };
    assert_eq!(failovers(&s.run(&two_of_three, AFTER + TICK)), 1);
}

#[test]
fn without_health_urls_a_silent_agent_is_not_enough() {
    let mut s = Sim::new(FailoverMode::Auto);
    let blind = Observation {
        health: vec![],
        ..lost()
    };
    let ds = s.run(&blind, Duration::from_secs(600));
    assert_eq!(failovers(&ds), 0);
    assert!(holds(&ds).iter().all(|h| *h == Hold::NoHealthChecks));
}

#[test]
fn unreadable_dns_holds_until_it_answers() {
    let mut s = Sim::new(FailoverMode::Auto);
    let no_dns = Observation {
        dns_readable: false,
        ..lost()
    };
    let ds = s.run(&no_dns, AFTER + Duration::from_secs(120));
    assert_eq!(failovers(&ds), 0);
    assert!(holds(&ds).contains(&Hold::DnsUnreadable));
    // Counting went on meanwhile: once DNS answers, the takeover is at once.
    assert!(matches!(s.last(&lost(), TICK), Decision::FailOver { .. }));
}

#[test]
fn a_lagging_or_broken_standby_does_not_take_over() {
    for data in [
        DataGuard::Lagging {
            behind: "95 s".into(),
        },
        DataGuard::Broken {
            why: "IO thread No".into(),
        },
    ] {
        let mut s = Sim::new(FailoverMode::Auto);
        let behind = Observation {
            data: data.clone(),
            ..lost()
        };
        let ds = s.run(&behind, Duration::from_secs(600));
        assert_eq!(failovers(&ds), 0, "{data:?}");
        let held = holds(&ds);
        assert!(
            matches!(&held[0], Hold::Data(why) if why.contains("95 s") || why.contains("IO thread")),
            "{held:?}"
        );
        assert_eq!(s.events.len(), 1, "alerted once: {:?}", s.events);
        let text = held[0].explain("web", "alice");
        assert!(text.contains("orch promote web --force"), "{text}");
        // Caught up: it takes over.
        assert!(matches!(s.last(&lost(), TICK), Decision::FailOver { .. }));
    }
}

#[test]
fn one_automatic_failover_until_ack() {
    let mut s = Sim::new(FailoverMode::Auto);
    assert_eq!(failovers(&s.run(&lost(), AFTER + TICK)), 1);
    s.f.failed_over();
    // The old master came back (recovery), then was lost again.
    s.run(&ok(), Duration::from_secs(300));
    let ds = s.run(&lost(), Duration::from_secs(600));
    assert_eq!(failovers(&ds), 0);
    s.f.ack();
    s.run(&ok(), TICK);
    assert!(s.f.armed());
    let ds = s.run(&lost(), Duration::from_secs(600));
    assert_eq!(failovers(&ds), 1);
    // A standby that starts disarmed (the store says a failover happened) says why.
    let mut s = Sim {
        f: Failover::new(AFTER, FailoverMode::Auto, false),
        now: Instant::now(),
        events: vec![],
    };
    let ds = s.run(&lost(), AFTER + TICK * 2);
    assert_eq!(failovers(&ds), 0);
    assert_eq!(holds(&ds), [Hold::Disarmed, Hold::Disarmed]);
    assert_eq!(
        s.events,
        [Event::Raise {
            hold: Hold::Disarmed
        }]
    );
}

#[test]
fn manual_mode_alerts_and_never_acts() {
    let mut s = Sim::new(FailoverMode::Manual);
    let ds = s.run(&lost(), Duration::from_secs(3600));
    assert_eq!(failovers(&ds), 0);
    assert_eq!(s.events, [Event::Raise { hold: Hold::Manual }]);
    let text = Hold::Manual.explain("web", "alice");
    assert!(text.contains("orch promote web --force"), "{text}");
    s.run(&ok(), TICK);
    assert_eq!(s.events.last(), Some(&Event::Clear { hold: Hold::Manual }));
}

#[test]
fn a_lost_lock_is_retried_when_dns_failed_and_held_when_someone_moved_the_records() {
    let mut s = Sim::new(FailoverMode::Auto);
    assert_eq!(failovers(&s.run(&lost(), AFTER + TICK)), 1);
    s.f.lock_lost(true);
    assert!(matches!(s.last(&lost(), TICK), Decision::FailOver { .. }));
    s.f.lock_lost(false);
    let ds = s.run(&lost(), Duration::from_secs(600));
    assert_eq!(failovers(&ds), 0);
    assert!(holds(&ds).iter().all(|h| *h == Hold::RecordsMoved));
    s.f.ack();
    assert!(matches!(
        s.last(&lost(), AFTER + TICK),
        Decision::FailOver { .. }
    ));
}

/// A small deterministic generator for the simulations (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[test]
fn random_flaps_shorter_than_after_never_fail_over() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut s = Sim::new(FailoverMode::Auto);
        let mut total = 0;
        // A day of flapping: losses of any kind up to just under `after`, and anything in
        // between (the tunnel, the web server, the witnesses, DNS).
        for _ in 0..2000 {
            let down = Duration::from_secs(rng.below(AFTER.as_secs() / 5) * 5);
            let bad = match rng.below(4) {
                0 => lost(),
                1 => Observation {
                    agent: false,
                    ..ok()
                },
                2 => Observation {
                    health: vec![false],
                    ..ok()
                },
                _ => Observation {
                    witnesses: vec![false, true],
                    ..lost()
                },
            };
            total += failovers(&s.run(&bad, down.min(AFTER - TICK)));
            total += failovers(&s.run(&ok(), TICK * (1 + rng.below(20) as u32)));
        }
        assert_eq!(total, 0, "seed {seed}");
    }
}

#[test]
fn long_losses_fail_over_exactly_once() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let mut s = Sim::new(FailoverMode::Auto);
        s.run(&ok(), TICK * (1 + rng.below(100) as u32));
        let mut total = 0;
        // The master is gone for hours; the standby's own link and DNS flap meanwhile.
        for _ in 0..500 {
            let o = match rng.below(6) {
                0 => Observation {
                    witnesses: vec![true, false],
                    ..lost()
                },
                1 => Observation {
                    dns_readable: false,
                    ..lost()
                },
                _ => lost(),
            };
            total += failovers(&s.run(&o, TICK * (1 + rng.below(30) as u32)));
        }
        assert_eq!(total, 1, "seed {seed}");
    }
}

mod guard {
    use super::super::data_guard;
    use super::*;
    use agent::db::{Engine, Figures, Report, Side, Verdict};

    fn report(verdict: Verdict, master_error: bool, lag: Option<f64>) -> Report {
        Report {
            site: "web".into(),
            name: "main".into(),
            engine: Engine::Postgres,
            checked_at: 0,
            max_lag_seconds: 60.0,
            master: Side {
                node: "alice".into(),
                error: master_error.then(|| "connection refused".into()),
                ..Side::default()
            },
            standby: Side {
                node: "bob".into(),
                ..Side::default()
            },
            figures: Figures {
                replay_lag_seconds: lag,
                ..Figures::default()
            },
            verdict,
            problems: vec!["replay lag 95.0 s".into()],
        }
    }

    #[test]
    fn a_check_that_could_not_ask_the_master_says_nothing() {
        assert_eq!(data_guard(&report(Verdict::Broken, true, None), None), None);
    }

    #[test]
    fn the_verdict_or_the_failover_limit_decides() {
        assert_eq!(
            data_guard(&report(Verdict::Healthy, false, Some(1.0)), None),
            Some(DataGuard::Ok)
        );
        assert!(matches!(
            data_guard(&report(Verdict::Lagging, false, Some(95.0)), None),
            Some(DataGuard::Lagging { behind }) if behind.starts_with("95.0 s")
        ));
        assert!(matches!(
            data_guard(&report(Verdict::Broken, false, None), None),
            Some(DataGuard::Broken { .. })
        ));
        // A per-site limit tighter than max_lag: a healthy check may still be too far.
        let tight = Some(Duration::from_secs(30));
        assert!(matches!(
            data_guard(&report(Verdict::Healthy, false, Some(45.0)), tight),
            Some(DataGuard::Lagging { behind }) if behind.contains("limit max_lag_on_failover = 30s")
        ));
        // …and a looser one lets a lagging check pass.
        let loose = Some(Duration::from_secs(120));
        assert_eq!(
            data_guard(&report(Verdict::Lagging, false, Some(95.0)), loose),
            Some(DataGuard::Ok)
        );
        assert_eq!(
            DataGuard::worst([
                DataGuard::Ok,
                DataGuard::Broken { why: "x".into() },
                DataGuard::Lagging { behind: "y".into() }
            ]),
            DataGuard::Broken { why: "x".into() }
        );
    }
}

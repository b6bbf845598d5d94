//! What a site's master makes of what it hears, every tick (sans-IO, time injected): was
//! it replaced while it was away (the peer's heartbeat or the lock record names the other
//! node at a later epoch), is it **fenced** (it can ask neither the peer nor the DNS, so it
//! cannot tell, and claims nothing), or does it know it is still master. The daemon acts on
//! the answer: the rejoin, the fence on pushes and records, the alert.
//!
//! The highest epoch wins everywhere, and the peer's word is enough to step down (it only
//! ever holds a later epoch for the other node through the lock record's compare-and-swap
//! or a switchover this node took part in). It is never enough to *stay* master when the
//! DNS says otherwise: the lock record is the truth of who holds the site.

use super::lock::{self, Holder, Lock, MasterView, PeerWord};
use super::roles::SiteRole;
use std::time::Duration;
use tokio::time::Instant;

/// What the DNS said this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsSeen {
    /// Not asked this tick (the master reads it every few seconds, not every tick).
    NotAsked,
    Unreadable,
    Read(Holder),
}

/// What the master does about the site now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Another node holds the site at a later epoch: step down and rejoin.
    Replaced { lock: Lock, learned_from: Source },
    /// The peer claims the site at this node's own epoch (a restored backup): fenced,
    /// nothing guessed; `alert` the first time.
    Split { theirs: Lock, alert: bool },
    /// Neither the peer nor the DNS answers: fenced since `since`; `alert` once it lasted
    /// `after`.
    Fenced { since: Instant, alert: bool },
    /// Still master, as far as it can tell (`fence_lifted`: it was fenced until now).
    Master { fence_lifted: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Peer,
    Lock,
}

impl Source {
    pub fn words(self) -> &'static str {
        match self {
            Source::Peer => "the peer's agent",
            Source::Lock => "the lock record",
        }
    }
}

/// A site's master side, between ticks.
#[derive(Debug)]
pub struct Recovery {
    after: Duration,
    fenced_since: Option<Instant>,
    alerted: bool,
}

impl Recovery {
    pub fn new(after: Duration) -> Recovery {
        Recovery {
            after,
            fenced_since: None,
            alerted: false,
        }
    }

    pub fn fenced(&self) -> bool {
        self.fenced_since.is_some()
    }

    /// Whether the fence was alerted (the daemon clears that alert when it lifts).
    pub fn alerted(&self) -> bool {
        self.alerted
    }

    /// One tick: the peer's claim for the site (`None`: the peer did not answer), what the
    /// DNS said, and this node's role (it is the master by its own store).
    pub fn observe(
        &mut self,
        now: Instant,
        peer: Option<&Lock>,
        dns: &DnsSeen,
        role: &SiteRole,
    ) -> Verdict {
        if let Some(theirs) = peer {
            match lock::peer_word(theirs, role) {
                PeerWord::Replaced => {
                    return self.done(Verdict::Replaced {
                        lock: theirs.clone(),
                        learned_from: Source::Peer,
                    })
                }
                PeerWord::Split => {
                    self.fenced_since.get_or_insert(now);
                    let alert = !self.alerted;
                    self.alerted = true;
                    return Verdict::Split {
                        theirs: theirs.clone(),
                        alert,
                    };
                }
                PeerWord::Agrees => {}
            }
        }
        match dns {
            DnsSeen::Read(holder) => {
                if let MasterView::Replaced(l) = lock::master_view(holder, role) {
                    return self.done(Verdict::Replaced {
                        lock: l,
                        learned_from: Source::Lock,
                    });
                }
                self.lift()
            }
            _ if peer.is_some() => self.lift(),
            DnsSeen::Unreadable => {
                let since = *self.fenced_since.get_or_insert(now);
                let alert = !self.alerted && now.saturating_duration_since(since) >= self.after;
                self.alerted |= alert;
                Verdict::Fenced { since, alert }
            }
            // Nothing new: as it was.
            DnsSeen::NotAsked => match self.fenced_since {
                Some(since) => Verdict::Fenced {
                    since,
                    alert: false,
                },
                None => Verdict::Master {
                    fence_lifted: false,
                },
            },
        }
    }

    fn lift(&mut self) -> Verdict {
        let fence_lifted = self.fenced_since.take().is_some();
        Verdict::Master { fence_lifted }
    }

    /// Replaced: the master side is over (the rejoin keeps the site fenced itself).
    fn done(&mut self, v: Verdict) -> Verdict {
        self.fenced_since = None;
        v
    }

    /// After the alert of a lifted fence was cleared.
    pub fn forget_alert(&mut self) {
        self.alerted = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(60);

    fn role() -> SiteRole {
        SiteRole {
            master: "alice".into(),
            epoch: 1,
        }
    }

    fn lock(master: &str, epoch: i64) -> Lock {
        Lock {
            master: master.into(),
            epoch,
        }
    }

    fn dns(master: &str, epoch: i64) -> DnsSeen {
        DnsSeen::Read(Holder::Held(lock(master, epoch)))
    }

    #[tokio::test(start_paused = true)]
    async fn not_replaced_while_peer_and_lock_agree() {
        let mut r = Recovery::new(AFTER);
        let now = Instant::now();
        let agrees = lock("alice", 1);
        for (peer, d) in [
            (Some(&agrees), dns("alice", 1)),
            (None, dns("alice", 1)),
            (Some(&agrees), DnsSeen::Unreadable),
            (Some(&agrees), DnsSeen::NotAsked),
            (None, DnsSeen::Read(Holder::Absent)),
        ] {
            assert_eq!(
                r.observe(now, peer, &d, &role()),
                Verdict::Master {
                    fence_lifted: false
                },
                "{peer:?} {d:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn replaced_by_the_peers_word_or_the_lock() {
        let mut r = Recovery::new(AFTER);
        let now = Instant::now();
        // The peer says a later epoch, DNS unreachable: its word is enough to step down.
        assert_eq!(
            r.observe(now, Some(&lock("bob", 2)), &DnsSeen::Unreadable, &role()),
            Verdict::Replaced {
                lock: lock("bob", 2),
                learned_from: Source::Peer
            }
        );
        // The peer silent, the lock record says so.
        assert_eq!(
            r.observe(now, None, &dns("bob", 2), &role()),
            Verdict::Replaced {
                lock: lock("bob", 2),
                learned_from: Source::Lock
            }
        );
        // A stale word from the peer is not a replacement.
        let mut r = Recovery::new(AFTER);
        let stale = SiteRole {
            master: "alice".into(),
            epoch: 3,
        };
        assert_eq!(
            r.observe(now, Some(&lock("bob", 2)), &dns("alice", 3), &stale),
            Verdict::Master {
                fence_lifted: false
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fenced_while_nobody_answers_alerted_after_after_lifted_when_one_does() {
        let mut r = Recovery::new(AFTER);
        let t0 = Instant::now();
        let v = r.observe(t0, None, &DnsSeen::Unreadable, &role());
        assert_eq!(
            v,
            Verdict::Fenced {
                since: t0,
                alert: false
            },
            "fenced at once, alerted later (an agent restart is not news)"
        );
        assert!(r.fenced());
        // Between DNS reads, it stays fenced.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            r.observe(t1, None, &DnsSeen::NotAsked, &role()),
            Verdict::Fenced {
                since: t0,
                alert: false
            }
        );
        let t2 = t0 + AFTER;
        assert_eq!(
            r.observe(t2, None, &DnsSeen::Unreadable, &role()),
            Verdict::Fenced {
                since: t0,
                alert: true
            }
        );
        assert_eq!(
            r.observe(t2 + AFTER, None, &DnsSeen::Unreadable, &role()),
            Verdict::Fenced {
                since: t0,
                alert: false
            },
            "alerted once"
        );
        assert!(r.alerted());
        // The DNS answers and names this node: the fence lifts.
        assert_eq!(
            r.observe(t2 + AFTER, None, &dns("alice", 1), &role()),
            Verdict::Master { fence_lifted: true }
        );
        assert!(!r.fenced());
        // Or the peer answers and agrees.
        let _ = r.observe(t2, None, &DnsSeen::Unreadable, &role());
        assert_eq!(
            r.observe(t2, Some(&lock("alice", 1)), &DnsSeen::NotAsked, &role()),
            Verdict::Master { fence_lifted: true }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fenced_then_replaced_when_the_news_arrives() {
        let mut r = Recovery::new(AFTER);
        let t0 = Instant::now();
        assert!(matches!(
            r.observe(t0, None, &DnsSeen::Unreadable, &role()),
            Verdict::Fenced { .. }
        ));
        assert!(matches!(
            r.observe(t0, None, &dns("bob", 2), &role()),
            Verdict::Replaced { .. }
        ));
        assert!(!r.fenced(), "the rejoin holds the site now");
    }

    #[tokio::test(start_paused = true)]
    async fn both_masters_at_one_epoch_fence_at_once() {
        let mut r = Recovery::new(AFTER);
        let t0 = Instant::now();
        assert_eq!(
            r.observe(t0, Some(&lock("bob", 1)), &dns("alice", 1), &role()),
            Verdict::Split {
                theirs: lock("bob", 1),
                alert: true
            }
        );
        assert!(r.fenced());
        assert_eq!(
            r.observe(t0, Some(&lock("bob", 1)), &dns("alice", 1), &role()),
            Verdict::Split {
                theirs: lock("bob", 1),
                alert: false
            },
            "alerted once"
        );
    }
}

//! The DNS lock of a site: its `_orch.SITE.<zone>` TXT record, `master=NODE epoch=N`.
//! Whoever changes the site's records changes this record in the same compare-and-swap,
//! so the record says who holds the site and under which epoch, and a swap that finds
//! something else there means someone else moved the site first. Pure: the daemon reads
//! the record and acts on these answers.

use super::roles::{SiteRole, FIRST_EPOCH};
use std::fmt;

/// What the lock record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub master: String,
    pub epoch: i64,
}

impl Lock {
    /// `master=NODE epoch=N` (the two fields in any order, nothing else).
    pub fn parse(text: &str) -> Option<Lock> {
        let (mut master, mut epoch) = (None, None);
        for field in text.split_whitespace() {
            match field.split_once('=')? {
                ("master", v) if !v.is_empty() && master.is_none() => master = Some(v),
                ("epoch", v) if epoch.is_none() => epoch = Some(v.parse::<i64>().ok()?),
                _ => return None,
            }
        }
        Some(Lock {
            master: master?.to_owned(),
            epoch: epoch.filter(|e| *e >= 0)?,
        })
    }

    pub fn of(role: &SiteRole) -> Lock {
        Lock {
            master: role.master.clone(),
            epoch: role.epoch,
        }
    }
}

impl fmt::Display for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "master={} epoch={}", self.master, self.epoch)
    }
}

/// The lock record's values, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// No such record (nobody published the site yet).
    Absent,
    Held(Lock),
    /// Values that are not one lock (written by hand, or two values).
    Garbled(Vec<String>),
}

impl Holder {
    pub fn read(values: &[String]) -> Holder {
        match values {
            [] => Holder::Absent,
            [one] => {
                Lock::parse(one).map_or_else(|| Holder::Garbled(values.to_vec()), Holder::Held)
            }
            _ => Holder::Garbled(values.to_vec()),
        }
    }

    /// The lock, if it is one.
    pub fn lock(&self) -> Option<&Lock> {
        match self {
            Holder::Held(l) => Some(l),
            _ => None,
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Absent => f.write_str("no lock record"),
            Holder::Held(l) => write!(f, "\"{l}\""),
            Holder::Garbled(v) => write!(f, "{v:?}"),
        }
    }
}

/// Whether the standby may take the lock from the master it knows (`role`): the record
/// names that master at that epoch, or there is none while the site never moved. Any
/// other value means someone else moved the site: the answer says what it holds.
pub fn may_take(holder: &Holder, role: &SiteRole) -> Result<(), String> {
    match holder {
        Holder::Held(l) if *l == Lock::of(role) => Ok(()),
        Holder::Absent if role.epoch == FIRST_EPOCH => Ok(()),
        other => Err(format!(
            "the lock record holds {other}, not \"{}\"",
            Lock::of(role)
        )),
    }
}

/// Where a takeover from `from` to `me` at `to_epoch` stands, from the lock record now
/// (after a crash, or a DNS error that may or may not have applied the update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// The record names this node at the new epoch: the lock is ours.
    Taken,
    /// The record still names the old master: the update did not happen.
    NotTaken,
    /// Someone else moved it.
    Moved(String),
}

pub fn resume(holder: &Holder, me: &str, from: &SiteRole, to_epoch: i64) -> Resume {
    match holder {
        Holder::Held(l) if l.master == me && l.epoch == to_epoch => Resume::Taken,
        h if may_take(h, from).is_ok() => Resume::NotTaken,
        other => Resume::Moved(other.to_string()),
    }
}

/// What the master finds in its site's lock record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterView {
    /// It names this node at the epoch it holds.
    Ours,
    /// No record yet: publish it.
    Missing,
    /// A later epoch names another node: this node was replaced.
    Replaced(Lock),
    /// Anything else (an older epoch, garbled values): not touched, said.
    Foreign(String),
}

pub fn master_view(holder: &Holder, role: &SiteRole) -> MasterView {
    match holder {
        Holder::Held(l) if *l == Lock::of(role) => MasterView::Ours,
        Holder::Held(l) if l.epoch > role.epoch && l.master != role.master => {
            MasterView::Replaced(l.clone())
        }
        Holder::Absent => MasterView::Missing,
        other => MasterView::Foreign(other.to_string()),
    }
}

/// What the peer's heartbeat says of a site this node masters (`role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerWord {
    /// The peer holds no later claim for someone else: nothing learned.
    Agrees,
    /// A later epoch names another master: this node was replaced.
    Replaced,
    /// The same epoch names another master: two masters under one epoch, which orch
    /// never writes (a restored backup can).
    Split,
}

pub fn peer_word(theirs: &Lock, role: &SiteRole) -> PeerWord {
    if theirs.master == role.master {
        PeerWord::Agrees
    } else if theirs.epoch > role.epoch {
        PeerWord::Replaced
    } else if theirs.epoch == role.epoch {
        PeerWord::Split
    } else {
        PeerWord::Agrees
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(master: &str, epoch: i64) -> SiteRole {
        SiteRole {
            master: master.into(),
            epoch,
        }
    }

    fn held(master: &str, epoch: i64) -> Holder {
        Holder::Held(Lock {
            master: master.into(),
            epoch,
        })
    }

    #[test]
    fn a_lock_reads_and_writes_one_way() {
        let l = Lock::parse("master=alice epoch=7").unwrap();
        assert_eq!(l, Lock::parse("epoch=7  master=alice").unwrap());
        assert_eq!(l.to_string(), "master=alice epoch=7");
        for bad in [
            "",
            "master=alice",
            "epoch=3",
            "master= epoch=3",
            "master=alice epoch=-1",
            "master=alice epoch=x",
            "master=alice epoch=3 extra=1",
            "master=a master=b epoch=3",
        ] {
            assert_eq!(Lock::parse(bad), None, "{bad}");
        }
        assert_eq!(Holder::read(&[]), Holder::Absent);
        assert_eq!(Holder::read(&["master=bob epoch=2".into()]), held("bob", 2));
        assert!(matches!(
            Holder::read(&["master=bob epoch=2".into(), "master=alice epoch=2".into()]),
            Holder::Garbled(_)
        ));
    }

    #[test]
    fn the_standby_takes_only_the_lock_of_the_master_it_knows() {
        assert_eq!(may_take(&held("alice", 3), &role("alice", 3)), Ok(()));
        assert_eq!(may_take(&Holder::Absent, &role("alice", 1)), Ok(()));
        let e = may_take(&Holder::Absent, &role("alice", 2)).unwrap_err();
        assert!(e.contains("no lock record"), "{e}");
        let e = may_take(&held("carol", 3), &role("alice", 3)).unwrap_err();
        assert!(e.contains("master=carol epoch=3"), "{e}");
        assert!(may_take(&held("alice", 4), &role("alice", 3)).is_err());
    }

    #[test]
    fn a_takeover_resumes_from_what_the_lock_says() {
        let from = role("alice", 3);
        assert_eq!(resume(&held("bob", 4), "bob", &from, 4), Resume::Taken);
        assert_eq!(resume(&held("alice", 3), "bob", &from, 4), Resume::NotTaken);
        assert!(matches!(
            resume(&held("carol", 4), "bob", &from, 4),
            Resume::Moved(_)
        ));
        assert!(matches!(
            resume(&held("bob", 5), "bob", &from, 4),
            Resume::Moved(_)
        ));
    }

    #[test]
    fn the_peers_word_replaces_only_with_a_later_epoch_and_a_tie_is_a_split() {
        let me = role("alice", 3);
        let l = |m: &str, e: i64| Lock {
            master: m.into(),
            epoch: e,
        };
        assert_eq!(peer_word(&l("alice", 3), &me), PeerWord::Agrees);
        assert_eq!(peer_word(&l("bob", 2), &me), PeerWord::Agrees, "stale");
        assert_eq!(peer_word(&l("bob", 4), &me), PeerWord::Replaced);
        assert_eq!(peer_word(&l("bob", 3), &me), PeerWord::Split);
        assert_eq!(peer_word(&l("alice", 5), &me), PeerWord::Agrees);
    }

    #[test]
    fn the_master_learns_it_was_replaced_only_from_a_later_epoch() {
        let me = role("alice", 3);
        assert_eq!(master_view(&held("alice", 3), &me), MasterView::Ours);
        assert_eq!(master_view(&Holder::Absent, &me), MasterView::Missing);
        assert_eq!(
            master_view(&held("bob", 4), &me),
            MasterView::Replaced(Lock {
                master: "bob".into(),
                epoch: 4
            })
        );
        assert!(matches!(
            master_view(&held("bob", 2), &me),
            MasterView::Foreign(_)
        ));
        assert!(matches!(
            master_view(&held("alice", 2), &me),
            MasterView::Foreign(_)
        ));
    }
}

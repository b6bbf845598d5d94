//! The one owner of every site's role on this node.
//!
//! [`Roles`] is the only writer of the sites' master and epoch in the state store, and
//! publishes each site's [`SiteRole`] on a `watch` channel: pushes (sender and receiver
//! admission), database checks, reports, the heartbeat and `orch status` all read it
//! from here, never from the store. A write goes to the store first and is published
//! only once it is durable, under one lock, so every reader sees the changes of a site
//! in the order they were made; epochs only move forward (the store refuses anything
//! else, see `Store::advance_site`).
//!
//! A store error is an error: it reaches the caller (and the log), and nothing falls back
//! to the config's `primary`, which after a failover would make an old master believe it
//! is master again. The one rule for a site never written yet is [`SiteRole::first`],
//! applied when the agent first records the site.

use crate::cluster::roles::SiteRole;
use crate::config::{Config, Site};
use agent::state::{Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

/// Where the roles are kept durably: the state store in the agent; an in-memory log in
/// tests that pause time (SQLite's pool keeps its own timers, which paused time fires).
pub trait RoleLog: Send + Sync + 'static {
    /// The role of `site`, recording `first` if the site is new.
    fn ensure<'a>(&'a self, site: &'a str, first: &'a SiteRole, now: i64) -> Pending<'a, SiteRole>;
    /// Records `master` at `epoch` if that is later than what is kept; true if it was.
    fn advance<'a>(
        &'a self,
        site: &'a str,
        master: &'a str,
        epoch: i64,
        now: i64,
    ) -> Pending<'a, bool>;
}

/// A log operation under way.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

impl RoleLog for Store {
    fn ensure<'a>(&'a self, site: &'a str, first: &'a SiteRole, now: i64) -> Pending<'a, SiteRole> {
        Box::pin(async move {
            let s = self
                .ensure_site(site, &first.master, first.epoch, now)
                .await?;
            Ok(SiteRole {
                master: s.master,
                epoch: s.epoch,
            })
        })
    }

    fn advance<'a>(
        &'a self,
        site: &'a str,
        master: &'a str,
        epoch: i64,
        now: i64,
    ) -> Pending<'a, bool> {
        Box::pin(self.advance_site(site, master, epoch, now))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("no site `{0}` in the config")]
    UnknownSite(String),
    #[error("reading or writing the role of site {site}")]
    Store { site: String, source: StoreError },
}

/// The sites' roles on this node: cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Roles {
    inner: Arc<Inner>,
}

struct Inner {
    log: Box<dyn RoleLog>,
    sites: BTreeMap<String, watch::Sender<SiteRole>>,
    /// Held across a write to the store and its publication, so that the published
    /// order is the store's order.
    write: tokio::sync::Mutex<()>,
    /// Sites this node must not act for as master now, and why (the failover task fences
    /// a master that can reach neither its peer nor the DNS, and one that is rejoining).
    /// A `std` mutex: never held across an await.
    fenced: std::sync::Mutex<BTreeMap<String, String>>,
    /// Sites this node is taking over in a planned switchover now (said in heartbeats).
    switching: std::sync::Mutex<BTreeSet<String>>,
    /// Sites whose automatic failover is armed on this node (said in heartbeats: the
    /// standby follows its master's `orch ack`).
    armed: std::sync::Mutex<BTreeSet<String>>,
}

/// Adds `site` to `set` or takes it out.
fn mark(set: &std::sync::Mutex<BTreeSet<String>>, site: &str, on: bool) {
    let mut set = set
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if on {
        set.insert(site.to_owned());
    } else {
        set.remove(site);
    }
}

fn marked(set: &std::sync::Mutex<BTreeSet<String>>) -> BTreeSet<String> {
    set.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

impl Roles {
    /// Loads the role of every configured site, first recording [`SiteRole::first`] for
    /// a site the store does not hold yet.
    pub async fn load(log: impl RoleLog, config: &Config) -> Result<Roles, RoleError> {
        let now = agent::unix_millis(SystemTime::now());
        let mut sites = BTreeMap::new();
        for site in &config.sites {
            let first = SiteRole::first(site);
            let role = log
                .ensure(&site.name, &first, now)
                .await
                .map_err(|source| RoleError::Store {
                    site: site.name.clone(),
                    source,
                })?;
            tracing::info!(site = %site.name, master = %role.master, epoch = role.epoch, "Site loaded");
            sites.insert(site.name.clone(), watch::channel(role).0);
        }
        Ok(Roles {
            inner: Arc::new(Inner {
                log: Box::new(log),
                sites,
                write: tokio::sync::Mutex::new(()),
                fenced: std::sync::Mutex::new(BTreeMap::new()),
                switching: std::sync::Mutex::new(BTreeSet::new()),
                armed: std::sync::Mutex::new(BTreeSet::new()),
            }),
        })
    }

    fn sender(&self, site: &str) -> Result<&watch::Sender<SiteRole>, RoleError> {
        self.inner
            .sites
            .get(site)
            .ok_or_else(|| RoleError::UnknownSite(site.to_owned()))
    }

    /// The role of `site` now.
    pub fn get(&self, site: &str) -> Result<SiteRole, RoleError> {
        Ok(self.sender(site)?.borrow().clone())
    }

    /// Every change of the role of `site`, from now on.
    pub fn watch(&self, site: &str) -> Result<watch::Receiver<SiteRole>, RoleError> {
        Ok(self.sender(site)?.subscribe())
    }

    /// Every site's role now, by name.
    pub fn all(&self) -> BTreeMap<String, SiteRole> {
        self.inner
            .sites
            .iter()
            .map(|(name, tx)| (name.clone(), tx.borrow().clone()))
            .collect()
    }

    /// Fences `site` on this node (`Some(why)`): no pushes from it, whatever its role; or
    /// lifts the fence (`None`).
    pub fn fence(&self, site: &str, why: Option<String>) {
        let mut fenced = self
            .inner
            .fenced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match why {
            Some(why) => fenced.insert(site.to_owned(), why),
            None => fenced.remove(site),
        };
    }

    /// Marks `site` as being taken over by this node in a planned switchover (`true`),
    /// or no longer (`false`).
    pub fn set_switching(&self, site: &str, on: bool) {
        mark(&self.inner.switching, site, on);
    }

    /// The sites this node is taking over in a planned switchover now.
    pub fn switching(&self) -> BTreeSet<String> {
        marked(&self.inner.switching)
    }

    /// Records whether automatic failover of `site` is armed on this node (as its state
    /// store holds it).
    pub fn set_armed(&self, site: &str, on: bool) {
        mark(&self.inner.armed, site, on);
    }

    /// The sites whose automatic failover is armed on this node.
    pub fn armed(&self) -> BTreeSet<String> {
        marked(&self.inner.armed)
    }

    /// Why `site` is fenced on this node, if it is.
    pub fn fenced(&self, site: &str) -> Option<String> {
        self.inner
            .fenced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(site)
            .cloned()
    }

    /// Records `master` under `epoch` for `site` and publishes it. Returns false,
    /// changing nothing, when the site already is at this epoch or a later one.
    pub async fn advance(&self, site: &str, master: &str, epoch: i64) -> Result<bool, RoleError> {
        let tx = self.sender(site)?;
        let _turn = self.inner.write.lock().await;
        let now = agent::unix_millis(SystemTime::now());
        let moved = self
            .inner
            .log
            .advance(site, master, epoch, now)
            .await
            .map_err(|source| RoleError::Store {
                site: site.to_owned(),
                source,
            })?;
        if moved {
            tracing::info!(site, master, epoch, "Site role changed");
            tx.send_replace(SiteRole {
                master: master.to_owned(),
                epoch,
            });
        }
        Ok(moved)
    }
}

/// Waits until the role published on `roles` is no longer `held`; returns the new one
/// (`None` once the owner is gone).
pub async fn moved_on(mut roles: watch::Receiver<SiteRole>, held: &SiteRole) -> Option<SiteRole> {
    loop {
        let now = roles.borrow_and_update().clone();
        if now != *held {
            return Some(now);
        }
        roles.changed().await.ok()?;
    }
}

/// The role of `site` as this node's state store holds it, for a command run beside (or
/// without) the agent: [`SiteRole::first`] when the store or the site is not there yet
/// (the agent never ran here); any other store error is returned.
pub async fn read(state_dir: &Path, site: &Site) -> Result<SiteRole, RoleError> {
    let failed = |source| RoleError::Store {
        site: site.name.clone(),
        source,
    };
    let store = match Store::open_read_only(state_dir).await {
        Ok(store) => store,
        Err(StoreError::Missing(_)) => return Ok(SiteRole::first(site)),
        Err(e) => return Err(failed(e)),
    };
    let state = store.site_state(&site.name).await;
    store.close().await;
    Ok(match state.map_err(failed)? {
        Some(s) => SiteRole {
            master: s.master,
            epoch: s.epoch,
        },
        None => SiteRole::first(site),
    })
}

#[cfg(test)]
mod tests;

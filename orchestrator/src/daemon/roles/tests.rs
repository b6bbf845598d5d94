//! The role owner: with the real state store (restarts, a store that fails), and with
//! an in-memory log on paused time (readers and order, a log that fails).

use super::*;
use crate::config::testing;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Roles kept in memory, as the store keeps them (epochs only forward); `fail` makes
/// every operation fail the way a broken store does.
#[derive(Default)]
struct MemLog {
    roles: Mutex<BTreeMap<String, SiteRole>>,
    fail: Arc<AtomicBool>,
}

impl MemLog {
    fn check(&self) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Missing("/gone/state.db".into()));
        }
        Ok(())
    }
}

impl RoleLog for MemLog {
    fn ensure<'a>(
        &'a self,
        site: &'a str,
        first: &'a SiteRole,
        _now: i64,
    ) -> Pending<'a, SiteRole> {
        Box::pin(async move {
            self.check()?;
            let mut roles = self.roles.lock().unwrap();
            Ok(roles
                .entry(site.to_owned())
                .or_insert_with(|| first.clone())
                .clone())
        })
    }

    fn advance<'a>(
        &'a self,
        site: &'a str,
        master: &'a str,
        epoch: i64,
        _now: i64,
    ) -> Pending<'a, bool> {
        Box::pin(async move {
            // A durable write takes a while; readers must not see it before it is done.
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.check()?;
            let mut roles = self.roles.lock().unwrap();
            let role = roles.get_mut(site).expect("ensured at load");
            if role.epoch >= epoch {
                return Ok(false);
            }
            *role = SiteRole {
                master: master.to_owned(),
                epoch,
            };
            Ok(true)
        })
    }
}

const SITES: &str = "[sites.web]\nprimary = \"alice\"\nstandby = \"bob\"\n\n\
                     [sites.cloud]\nprimary = \"bob\"\nstandby = \"alice\"\n";

async fn owner(node: &str) -> (tempfile::TempDir, crate::config::Loaded, Store, Roles) {
    let (dir, loaded) = testing::pair(node, SITES);
    let store = Store::open(&loaded.me().state_dir).await.unwrap();
    let roles = Roles::load(store.clone(), &loaded.config).await.unwrap();
    (dir, loaded, store, roles)
}

#[tokio::test]
async fn a_new_site_starts_with_its_primary_and_survives_a_restart() {
    let (_dir, loaded, store, roles) = owner("alice").await;
    let first = |m: &str| SiteRole {
        master: m.into(),
        epoch: crate::cluster::roles::FIRST_EPOCH,
    };
    assert_eq!(roles.get("web").unwrap(), first("alice"));
    assert_eq!(roles.get("cloud").unwrap(), first("bob"));
    assert!(matches!(roles.get("nope"), Err(RoleError::UnknownSite(s)) if s == "nope"));

    assert!(roles.advance("web", "bob", 2).await.unwrap());
    // What the store holds wins over the config's primary at the next start.
    let again = Roles::load(store.clone(), &loaded.config).await.unwrap();
    assert_eq!(
        again.get("web").unwrap(),
        SiteRole {
            master: "bob".into(),
            epoch: 2
        }
    );
    let web = loaded.config.site("web").unwrap();
    assert_eq!(
        read(&loaded.me().state_dir, web).await.unwrap(),
        again.get("web").unwrap(),
        "a command beside the agent reads the same"
    );
}

#[tokio::test(start_paused = true)]
async fn two_readers_see_every_change_in_order_and_stale_epochs_change_nothing() {
    let (_dir, loaded) = testing::pair("alice", SITES);
    let roles = Roles::load(MemLog::default(), &loaded.config)
        .await
        .unwrap();
    let mut readers = [roles.watch("web").unwrap(), roles.watch("web").unwrap()];
    let seen = |r: &mut tokio::sync::watch::Receiver<SiteRole>| {
        let r = r.borrow_and_update();
        (r.master.clone(), r.epoch)
    };
    assert_eq!(seen(&mut readers[0]), ("alice".into(), 1));

    let mut log: [Vec<(String, i64)>; 2] = [vec![], vec![]];
    let (a, b) = (roles.clone(), roles.clone());
    let watch = |mut rx: tokio::sync::watch::Receiver<SiteRole>| async move {
        let mut got = Vec::new();
        while got.len() < 2 {
            // A reader that is slow to look still sees the latest value, never an older one.
            tokio::time::sleep(Duration::from_millis(10)).await;
            if rx.changed().await.is_err() {
                break;
            }
            let r = rx.borrow_and_update().clone();
            got.push((r.master, r.epoch));
        }
        got
    };
    let [r0, r1] = readers;
    let t0 = tokio::spawn(watch(r0));
    let t1 = tokio::spawn(watch(r1));
    assert!(a.advance("web", "bob", 2).await.unwrap());
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Stale or repeated epochs are refused and not published.
    assert!(!b.advance("web", "alice", 2).await.unwrap());
    assert!(!b.advance("web", "alice", 1).await.unwrap());
    assert!(b.advance("web", "alice", 3).await.unwrap());
    let within = Duration::from_secs(5);
    log[0] = tokio::time::timeout(within, t0).await.unwrap().unwrap();
    log[1] = tokio::time::timeout(within, t1).await.unwrap().unwrap();
    for got in &log {
        assert_eq!(got, &[("bob".to_owned(), 2), ("alice".to_owned(), 3)]);
    }
    assert_eq!(
        roles.get("cloud").unwrap().epoch,
        1,
        "other sites untouched"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_log_is_an_error_and_publishes_nothing() {
    let (_dir, loaded) = testing::pair("bob", SITES);
    let log = MemLog::default();
    let fail = Arc::clone(&log.fail);
    let roles = Roles::load(log, &loaded.config).await.unwrap();
    let mut reader = roles.watch("web").unwrap();
    reader.borrow_and_update();
    fail.store(true, Ordering::SeqCst);
    let err = roles.advance("web", "bob", 2).await.unwrap_err();
    assert!(
        matches!(err, RoleError::Store { ref site, .. } if site == "web"),
        "{err}"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(60), reader.changed())
            .await
            .is_err(),
        "a failed write is never published"
    );
    assert_eq!(
        roles.get("web").unwrap(),
        SiteRole::first(loaded.config.site("web").unwrap())
    );
    // The owner is not stuck: once the log works again, the change goes through.
    fail.store(false, Ordering::SeqCst);
    assert!(roles.advance("web", "bob", 2).await.unwrap());
    assert_eq!(reader.borrow_and_update().epoch, 2);
    let failing = MemLog::default();
    failing.fail.store(true, Ordering::SeqCst);
    assert!(
        Roles::load(failing, &loaded.config).await.is_err(),
        "no role without the log"
    );
}

#[tokio::test]
async fn a_store_failure_is_an_error_not_the_configs_primary() {
    let (_dir, loaded, store, roles) = owner("bob").await;
    store.close().await;
    let err = roles.advance("web", "bob", 2).await.unwrap_err();
    assert!(
        matches!(err, RoleError::Store { ref site, .. } if site == "web"),
        "{err}"
    );
    assert_eq!(roles.get("web").unwrap().epoch, 1, "nothing published");
    assert!(Roles::load(store, &loaded.config).await.is_err());

    // A command reading a store it cannot read gets the error too (a state dir of its
    // own: the closed pool above may still be checkpointing into its file).
    let web = loaded.config.site("web").unwrap();
    let broken = loaded.me().state_dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join(agent::state::DB_FILE), [0xab_u8; 8192]).unwrap();
    assert!(read(&broken, web).await.is_err());
    // Only a node whose agent never ran falls back to the first-start rule.
    let never = loaded.me().state_dir.join("never");
    assert_eq!(read(&never, web).await.unwrap(), SiteRole::first(web));
}

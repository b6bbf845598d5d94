//! The node's state store: one SQLite database in the state directory (WAL mode,
//! synchronous writes) holding each site's master and epoch, the run history and the
//! mail outbox. The schema lives in `agent/migrations/` and is applied at open.

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const DB_FILE: &str = "state.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no state store at {0} (has `orch agent` run on this node with this state_dir?)")]
    Missing(PathBuf),
    #[error("state store {path}")]
    Db { path: PathBuf, source: sqlx::Error },
    #[error("state store {path}: migrating the schema")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
}

/// Who is master of a site, under which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteState {
    pub site: String,
    pub master: String,
    pub epoch: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Warn,
    Fail,
    Info,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Warn => "warn",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        }
    }
}

/// What a history event is about (`kind` in the history table and in `orch history`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum EventKind {
    /// The agent started or stopped.
    Agent,
    Push,
    /// A push from the peer received.
    Receive,
    /// A database check's verdict changed.
    Db,
    Report,
    Alert,
    Ddns,
    /// A step of a playbook, and the playbook's end.
    Playbook,
    /// The failover logic of a site changed its state (watching, counting, holding,
    /// taking over, failed over, re-armed) or acted (the DNS lock, the new epoch).
    Failover,
}

/// An event to record.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub at: i64,
    pub site: Option<&'a str>,
    pub kind: EventKind,
    pub outcome: Outcome,
    pub summary: &'a str,
    pub detail: Option<serde_json::Value>,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    pub at: i64,
    pub site: Option<String>,
    pub kind: String,
    pub outcome: Outcome,
    pub summary: String,
    pub detail: Option<serde_json::Value>,
}

/// A message to queue for sending.
#[derive(Debug, Clone)]
pub struct NewMail<'a> {
    pub message_id: &'a str,
    pub created_at: i64,
    pub origin: &'a str,
    pub site: Option<&'a str>,
    pub subject: &'a str,
    pub message: &'a [u8],
}

/// A queued message that is due.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedMail {
    pub id: i64,
    pub message_id: String,
    pub created_at: i64,
    pub origin: String,
    pub site: Option<String>,
    pub subject: String,
    pub message: Vec<u8>,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// When it was first offered to the peer's agent; from then on only the peer sends it.
    pub offered_at: Option<i64>,
}

/// Where a queued message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(rename_all = "snake_case")]
pub enum OutboxState {
    Pending,
    Sent,
    /// Given to the peer's agent, which sends it from now on.
    HandedOff,
}

/// The outbox at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OutboxCounts {
    pub pending: i64,
    pub sent: i64,
    pub handed_off: i64,
    /// The error of the oldest pending message, if it failed.
    pub oldest_error: Option<String>,
}

/// What one push did (the push engine writes it; reports, status and history read it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PushRun {
    pub site: String,
    pub job: String,
    pub started_at: i64,
    pub duration_ms: i64,
    pub outcome: Outcome,
    pub files_total: i64,
    pub files_changed: i64,
    pub bytes_total: i64,
    pub bytes_sent: i64,
    pub deletions: i64,
    pub diverged: i64,
    pub errors: Vec<String>,
}

/// An alert's recorded state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertState {
    pub key: String,
    pub site: Option<String>,
    pub active: bool,
    pub summary: String,
    pub since: i64,
    /// Whether this episode was mailed (a resolved mail only follows an alert mail).
    pub notified: bool,
    /// When the last alert mail of this key went out (0: never).
    pub last_sent_at: i64,
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
    /// Decoded manifests, kept between pushes up to [`MANIFEST_CACHE`] bytes: a push
    /// reads its job's without a query or a decode. Every write goes through
    /// [`Store::keep_manifest`], which keeps it true.
    manifests: Arc<std::sync::Mutex<ManifestCache>>,
    /// Manifests written behind a push, one at a time; [`Store::close`] waits for them.
    manifest_writes: Arc<tokio::sync::Mutex<()>>,
    writing: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

/// (site, job, side).
type ManifestKey = (String, String, String);

/// The most memory decoded manifests are kept in between pushes, all jobs together
/// (about 300 000 entries; 200 000 take about 43 MB). Beyond it the least recently used
/// are dropped, and a push of a job whose manifest is not kept reads it from the state
/// store (about 40 ms and 15 MB read for 200 000 entries). A manifest not yet written to
/// the store is always kept.
pub const MANIFEST_CACHE: usize = 64 << 20;

/// The decoded manifests kept between pushes, bounded by bytes ([`MANIFEST_CACHE`]).
#[derive(Debug)]
struct ManifestCache {
    budget: usize,
    kept: HashMap<ManifestKey, Kept>,
    /// Bumped at every use: the least recently used go first.
    clock: u64,
}

#[derive(Debug)]
struct Kept {
    manifest: Arc<crate::sync::Manifest>,
    bytes: usize,
    /// In the state store (only then may it be dropped from memory).
    written: bool,
    used: u64,
}

impl Default for ManifestCache {
    fn default() -> ManifestCache {
        ManifestCache::with_budget(MANIFEST_CACHE)
    }
}

impl ManifestCache {
    fn with_budget(budget: usize) -> ManifestCache {
        ManifestCache {
            budget,
            kept: HashMap::new(),
            clock: 0,
        }
    }

    fn get(&mut self, key: &ManifestKey) -> Option<Arc<crate::sync::Manifest>> {
        self.clock += 1;
        let k = self.kept.get_mut(key)?;
        k.used = self.clock;
        Some(Arc::clone(&k.manifest))
    }

    /// Keeps `manifest` as `key`'s: one a push made (not `written` yet) whatever its size;
    /// one read from the store (`written`) only when it fits the budget by itself and
    /// memory holds none for `key` (what memory holds is as new or newer).
    fn put(&mut self, key: ManifestKey, manifest: Arc<crate::sync::Manifest>, written: bool) {
        let bytes = manifest.memory();
        if written && (bytes > self.budget || self.kept.contains_key(&key)) {
            return;
        }
        self.clock += 1;
        self.kept.insert(
            key,
            Kept {
                manifest,
                bytes,
                written,
                used: self.clock,
            },
        );
        self.trim();
    }

    /// Whether `manifest` is still `key`'s newest (not replaced by a later push's).
    fn is_current(&self, key: &ManifestKey, manifest: &Arc<crate::sync::Manifest>) -> bool {
        self.kept
            .get(key)
            .is_some_and(|k| Arc::ptr_eq(&k.manifest, manifest))
    }

    /// `manifest`, `key`'s, is in the store now: it may be dropped from memory.
    fn written(&mut self, key: &ManifestKey, manifest: &Arc<crate::sync::Manifest>) {
        if let Some(k) = self.kept.get_mut(key) {
            if Arc::ptr_eq(&k.manifest, manifest) {
                k.written = true;
            }
        }
        self.trim();
    }

    /// Drops the least recently used written manifests until the rest fit the budget.
    fn trim(&mut self) {
        loop {
            let total: usize = self.kept.values().map(|k| k.bytes).sum();
            if total <= self.budget {
                return;
            }
            let oldest = self
                .kept
                .iter()
                .filter(|(_, k)| k.written)
                .min_by_key(|(_, k)| k.used)
                .map(|(key, _)| key.clone());
            let Some(key) = oldest else { return };
            tracing::debug!(site = %key.0, job = %key.1, side = %key.2,
                "Push: a manifest dropped from memory (over the cache's bytes); the next push reads it from the store");
            self.kept.remove(&key);
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store in `state_dir`, which is created 0700.
    pub async fn open(state_dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(state_dir)?;
        let path = state_dir.join(DB_FILE);
        let options = Self::options(&path).create_if_missing(true);
        let store = Self::connect(path, options).await?;
        sqlx::migrate!("./migrations")
            .run(&store.pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: store.path.clone(),
                source,
            })?;
        Ok(store)
    }

    /// Opens an existing store read-only (for `orch history` while the agent runs).
    pub async fn open_read_only(state_dir: &Path) -> Result<Store, StoreError> {
        let path = state_dir.join(DB_FILE);
        if !path.exists() {
            return Err(StoreError::Missing(path));
        }
        let options = Self::options(&path).read_only(true);
        Self::connect(path, options).await
    }

    fn options(path: &Path) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            // A queued mail or a new epoch must survive a power cut.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
    }

    async fn connect(path: PathBuf, options: SqliteConnectOptions) -> Result<Store, StoreError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Db {
                path: path.clone(),
                source,
            })?;
        Ok(Store {
            pool,
            path,
            manifests: Arc::default(),
            manifest_writes: Arc::default(),
            writing: Arc::default(),
        })
    }

    fn db_err(&self, source: sqlx::Error) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Closes the store, once the manifests being written behind pushes are written.
    pub async fn close(&self) {
        let writing = std::mem::take(
            &mut *self
                .writing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for w in writing {
            let _ = w.await;
        }
        self.pool.close().await;
    }

    /// Returns the site's state, first recording `master` at `epoch` if the site is new.
    pub async fn ensure_site(
        &self,
        site: &str,
        master: &str,
        epoch: i64,
        now: i64,
    ) -> Result<SiteState, StoreError> {
        sqlx::query(
            "INSERT INTO site_state (site, master, epoch, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (site) DO NOTHING",
        )
        .bind(site)
        .bind(master)
        .bind(epoch)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        self.site_state(site)
            .await?
            .ok_or_else(|| self.db_err(sqlx::Error::RowNotFound))
    }

    pub async fn site_state(&self, site: &str) -> Result<Option<SiteState>, StoreError> {
        let row =
            sqlx::query("SELECT site, master, epoch, updated_at FROM site_state WHERE site = ?")
                .bind(site)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
        Ok(row.map(|r| SiteState {
            site: r.get("site"),
            master: r.get("master"),
            epoch: r.get("epoch"),
            updated_at: r.get("updated_at"),
        }))
    }

    /// Records a new master under a strictly higher epoch. Returns false, changing
    /// nothing, when the store already holds this epoch or a higher one: epochs never
    /// go back, so a stale decision cannot undo a newer one.
    pub async fn advance_site(
        &self,
        site: &str,
        master: &str,
        epoch: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO site_state (site, master, epoch, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (site) DO UPDATE SET master = ?2, epoch = ?3, updated_at = ?4
             WHERE site_state.epoch < ?3",
        )
        .bind(site)
        .bind(master)
        .bind(epoch)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether automatic failover of `site` is armed (true until one happened and no
    /// `orch ack` since), and the takeover under way, if any.
    pub async fn failover(&self, site: &str) -> Result<(bool, Option<String>), StoreError> {
        let row = sqlx::query("SELECT armed, intent FROM failover WHERE site = ?")
            .bind(site)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(row.map_or((true, None), |r| {
            (r.get::<i64, _>("armed") == 1, r.get("intent"))
        }))
    }

    /// Records `site`'s armed flag and its takeover under way (`None`: none), durably.
    pub async fn put_failover(
        &self,
        site: &str,
        armed: bool,
        intent: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO failover (site, armed, intent, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (site) DO UPDATE SET armed = ?2, intent = ?3, updated_at = ?4",
        )
        .bind(site)
        .bind(i64::from(armed))
        .bind(intent)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// Keeps `report` as the latest check of its database; returns the verdict it
    /// replaces (`None` for the first check).
    pub async fn put_db_check(
        &self,
        report: &crate::db::Report,
    ) -> Result<Option<crate::db::Verdict>, StoreError> {
        let json = serde_json::to_string(report)
            .map_err(|e| self.db_err(sqlx::Error::Encode(Box::new(e))))?;
        let mut tx = self.pool.begin().await.map_err(|e| self.db_err(e))?;
        let before: Option<String> =
            sqlx::query_scalar("SELECT verdict FROM db_check WHERE site = ? AND name = ?")
                .bind(&report.site)
                .bind(&report.name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
        sqlx::query(
            "INSERT INTO db_check (site, name, checked_at, verdict, report) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (site, name) DO UPDATE SET checked_at = ?3, verdict = ?4, report = ?5",
        )
        .bind(&report.site)
        .bind(&report.name)
        .bind(report.checked_at)
        .bind(report.verdict.as_str())
        .bind(json)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.db_err(e))?;
        tx.commit().await.map_err(|e| self.db_err(e))?;
        Ok(before.and_then(|v| serde_json::from_value(serde_json::Value::String(v)).ok()))
    }

    /// The latest check of every database, by site and name.
    pub async fn db_checks(&self) -> Result<Vec<crate::db::Report>, StoreError> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT report FROM db_check ORDER BY site, name")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }

    pub async fn record(&self, event: &NewEvent<'_>) -> Result<i64, StoreError> {
        let detail = event.detail.as_ref().map(serde_json::Value::to_string);
        let done = sqlx::query(
            "INSERT INTO history (at, site, kind, outcome, summary, detail) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(event.at)
        .bind(event.site)
        .bind(event.kind)
        .bind(event.outcome)
        .bind(event.summary)
        .bind(detail)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(done.last_insert_rowid())
    }

    /// The newest `limit` events, oldest first; node-wide events are included when a
    /// site is named, since they explain what happened to it.
    pub async fn history(&self, site: Option<&str>, limit: u32) -> Result<Vec<Event>, StoreError> {
        self.history_since(site, limit, None).await
    }

    /// [`Store::history`] of the events at or after `since` (Unix milliseconds) only.
    pub async fn history_since(
        &self,
        site: Option<&str>,
        limit: u32,
        since: Option<i64>,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM (
                SELECT id, at, site, kind, outcome, summary, detail FROM history
                WHERE (?1 IS NULL OR site = ?1 OR site IS NULL) AND at >= ?3
                ORDER BY id DESC LIMIT ?2
             ) ORDER BY id ASC",
        )
        .bind(site)
        .bind(limit)
        .bind(since.unwrap_or(i64::MIN))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(rows
            .into_iter()
            .map(|r| Event {
                id: r.get("id"),
                at: r.get("at"),
                site: r.get("site"),
                kind: r.get("kind"),
                outcome: r.get("outcome"),
                summary: r.get("summary"),
                detail: r
                    .get::<Option<String>, _>("detail")
                    .and_then(|d| serde_json::from_str(&d).ok()),
            })
            .collect())
    }

    /// Queues a message. Returns false when its message id is already known (sent,
    /// queued, or handed over): the same message is never queued twice.
    pub async fn outbox_enqueue(&self, mail: &NewMail<'_>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO outbox (message_id, created_at, origin, site, subject, message, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?2) ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(mail.message_id)
        .bind(mail.created_at)
        .bind(mail.origin)
        .bind(mail.site)
        .bind(mail.subject)
        .bind(mail.message)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Pending messages whose next attempt is due, oldest first.
    pub async fn outbox_due(&self, now: i64, limit: u32) -> Result<Vec<QueuedMail>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, message_id, created_at, origin, site, subject, message, attempts,
                    last_error, offered_at FROM outbox
             WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY id LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(rows
            .into_iter()
            .map(|r| QueuedMail {
                id: r.get("id"),
                message_id: r.get("message_id"),
                created_at: r.get("created_at"),
                origin: r.get("origin"),
                site: r.get("site"),
                subject: r.get("subject"),
                message: r.get("message"),
                attempts: r.get("attempts"),
                last_error: r.get("last_error"),
                offered_at: r.get("offered_at"),
            })
            .collect())
    }

    /// Where a message is: its state, attempts so far and the last error.
    pub async fn outbox_state(
        &self,
        message_id: &str,
    ) -> Result<Option<(OutboxState, i64, Option<String>)>, StoreError> {
        sqlx::query_as("SELECT state, attempts, last_error FROM outbox WHERE message_id = ?")
            .bind(message_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db_err(e))
    }

    /// Notes that the message is being offered to the peer (before the offer goes out).
    pub async fn outbox_offered(&self, id: i64, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET offered_at = coalesce(offered_at, ?) WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// Takes back an offer the peer certainly did not receive (it could not be connected).
    pub async fn outbox_offer_failed(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET offered_at = NULL WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// Of the messages `origin` wrote: how many are still pending, and how many were
    /// queued at or after `since` (unix ms).
    pub async fn outbox_from(&self, origin: &str, since: i64) -> Result<(i64, i64), StoreError> {
        sqlx::query_as(
            "SELECT coalesce(sum(state = 'pending'), 0), coalesce(sum(created_at >= ?2), 0)
             FROM outbox WHERE origin = ?1",
        )
        .bind(origin)
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.db_err(e))
    }

    /// How many messages are pending, sent and handed off.
    pub async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM outbox GROUP BY state")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
        let mut counts = OutboxCounts::default();
        for (state, n) in rows {
            match state.as_str() {
                "pending" => counts.pending = n,
                "sent" => counts.sent = n,
                _ => counts.handed_off = n,
            }
        }
        counts.oldest_error = sqlx::query_scalar(
            "SELECT last_error FROM outbox WHERE state = 'pending' ORDER BY id LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?
        .flatten();
        Ok(counts)
    }

    /// Records a push run.
    pub async fn put_push_run(&self, run: &PushRun) -> Result<i64, StoreError> {
        let errors = serde_json::to_string(&run.errors)
            .map_err(|e| self.db_err(sqlx::Error::Encode(Box::new(e))))?;
        let done = sqlx::query(
            "INSERT INTO push_run (site, job, started_at, duration_ms, outcome, files_total,
                files_changed, bytes_total, bytes_sent, deletions, diverged, errors)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&run.site)
        .bind(&run.job)
        .bind(run.started_at)
        .bind(run.duration_ms)
        .bind(run.outcome)
        .bind(run.files_total)
        .bind(run.files_changed)
        .bind(run.bytes_total)
        .bind(run.bytes_sent)
        .bind(run.deletions)
        .bind(run.diverged)
        .bind(errors)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(done.last_insert_rowid())
    }

    /// The latest run of each push job of `site`, by job name.
    pub async fn latest_push_runs(&self, site: &str) -> Result<Vec<PushRun>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM push_run WHERE id IN
                (SELECT max(id) FROM push_run WHERE site = ? GROUP BY job)
             ORDER BY job",
        )
        .bind(site)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(push_runs(rows))
    }

    /// Every push of `site` that started at or after `since` (Unix ms), oldest first; at
    /// most the newest 10 000 (a `watch` job may push every few seconds).
    pub async fn push_runs_since(
        &self,
        site: &str,
        since: i64,
    ) -> Result<Vec<PushRun>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM (SELECT * FROM push_run WHERE site = ?1 AND started_at >= ?2
                            ORDER BY id DESC LIMIT 10000)
             ORDER BY id ASC",
        )
        .bind(site)
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(push_runs(rows))
    }

    /// The manifest one side of a push job keeps (`side`: "send" or "receive").
    pub async fn manifest(
        &self,
        site: &str,
        job: &str,
        side: &str,
    ) -> Result<Option<Arc<crate::sync::Manifest>>, StoreError> {
        let key = (site.to_owned(), job.to_owned(), side.to_owned());
        if let Some(m) = self.cached(|c| c.get(&key)) {
            return Ok(Some(m));
        }
        let row =
            sqlx::query("SELECT data FROM sync_manifest WHERE site = ? AND job = ? AND side = ?")
                .bind(site)
                .bind(job)
                .bind(side)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
        // An unreadable manifest is as good as none: the next push lists everything.
        let manifest = row
            .and_then(|r| crate::sync::Manifest::decode(&r.get::<Vec<u8>, _>("data")).ok())
            .map(Arc::new);
        if let Some(m) = &manifest {
            self.cached(|c| c.put(key, Arc::clone(m), true));
        }
        Ok(manifest)
    }

    fn cached<T>(&self, f: impl FnOnce(&mut ManifestCache) -> T) -> T {
        let mut guard = self
            .manifests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Keeps `manifest` as the job's: at once in memory (the next push reads it from
    /// there), and in the database behind the push (encoded on a blocking thread), so
    /// that neither end of a push waits for it. Writes go one at a time; one whose
    /// manifest was replaced meanwhile is skipped (the newer one is written). Should the
    /// write be lost (a crash, a full disk: logged), the database keeps the previous
    /// manifest, whose generation the other end no longer has: the next push after a
    /// restart lists the whole replica again (slower, never wrong).
    pub async fn keep_manifest(
        &self,
        site: &str,
        job: &str,
        side: &str,
        manifest: Arc<crate::sync::Manifest>,
        now: i64,
    ) {
        let key = (site.to_owned(), job.to_owned(), side.to_owned());
        self.cached(|c| c.put(key.clone(), Arc::clone(&manifest), false));
        let store = self.clone();
        let write = tokio::spawn(async move {
            let _turn = store.manifest_writes.lock().await;
            if !store.cached(|c| c.is_current(&key, &manifest)) {
                return;
            }
            match store.write_manifest(&key, Arc::clone(&manifest), now).await {
                Ok(()) => store.cached(|c| c.written(&key, &manifest)),
                Err(e) => tracing::warn!(
                    site = %key.0,
                    job = %key.1,
                    error = crate::error_chain(&e),
                    "Push: writing the manifest to the state store (kept in memory; the next push after a restart lists the whole replica)"
                ),
            }
        });
        let mut writing = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        writing.retain(|w| !w.is_finished());
        writing.push(write);
    }

    async fn write_manifest(
        &self,
        key: &ManifestKey,
        manifest: Arc<crate::sync::Manifest>,
        now: i64,
    ) -> Result<(), StoreError> {
        let generation = manifest.generation.clone();
        let data = tokio::task::spawn_blocking(move || manifest.encode())
            .await
            .map_err(|e| self.db_err(sqlx::Error::Encode(Box::new(e))))?
            .map_err(|e| self.db_err(sqlx::Error::Encode(Box::new(e))))?;
        sqlx::query(
            "INSERT INTO sync_manifest (site, job, side, generation, updated_at, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (site, job, side) DO UPDATE SET generation = ?4, updated_at = ?5, data = ?6",
        )
        .bind(&key.0)
        .bind(&key.1)
        .bind(&key.2)
        .bind(generation)
        .bind(now)
        .bind(data)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    pub async fn alert(&self, key: &str) -> Result<Option<AlertState>, StoreError> {
        let row = sqlx::query(
            "SELECT key, site, active, summary, since, notified, last_sent_at FROM alert WHERE key = ?",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(row.map(|r| AlertState {
            key: r.get("key"),
            site: r.get("site"),
            active: r.get::<i64, _>("active") == 1,
            summary: r.get("summary"),
            since: r.get("since"),
            notified: r.get::<i64, _>("notified") == 1,
            last_sent_at: r.get("last_sent_at"),
        }))
    }

    pub async fn put_alert(&self, a: &AlertState) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO alert (key, site, active, summary, since, notified, last_sent_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (key) DO UPDATE SET site = ?2, active = ?3, summary = ?4, since = ?5,
                notified = ?6, last_sent_at = ?7",
        )
        .bind(&a.key)
        .bind(&a.site)
        .bind(i64::from(a.active))
        .bind(&a.summary)
        .bind(a.since)
        .bind(i64::from(a.notified))
        .bind(a.last_sent_at)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// Every alert that is on now.
    pub async fn active_alerts(&self) -> Result<Vec<AlertState>, StoreError> {
        let keys: Vec<String> =
            sqlx::query_scalar("SELECT key FROM alert WHERE active = 1 ORDER BY since")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for key in keys {
            if let Some(a) = self.alert(&key).await? {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Marks a message delivered (`handed_off`: given to the peer, which now owns it).
    pub async fn outbox_done(&self, id: i64, handed_off: bool, now: i64) -> Result<(), StoreError> {
        let state = if handed_off {
            OutboxState::HandedOff
        } else {
            OutboxState::Sent
        };
        sqlx::query("UPDATE outbox SET state = ?, done_at = ?, last_error = NULL WHERE id = ?")
            .bind(state)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// Records a failed attempt and when to try again.
    pub async fn outbox_retry_later(
        &self,
        id: i64,
        error: &str,
        next_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
        )
        .bind(error)
        .bind(next_at)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(())
    }
}

/// Creates `dir` (and parents) with mode 0700, and tightens an existing one that is
/// readable by others: it holds the control socket and diverged copies of user data.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Dir {
        path: dir.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let mode = std::fs::metadata(dir).map_err(err)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

/// Push runs from their rows.
fn push_runs(rows: Vec<sqlx::sqlite::SqliteRow>) -> Vec<PushRun> {
    rows.into_iter()
        .map(|r| PushRun {
            site: r.get("site"),
            job: r.get("job"),
            started_at: r.get("started_at"),
            duration_ms: r.get("duration_ms"),
            outcome: r.get("outcome"),
            files_total: r.get("files_total"),
            files_changed: r.get("files_changed"),
            bytes_total: r.get("bytes_total"),
            bytes_sent: r.get("bytes_sent"),
            deletions: r.get("deletions"),
            diverged: r.get("diverged"),
            errors: serde_json::from_str(&r.get::<String, _>("errors")).unwrap_or_default(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(at: i64, site: Option<&'a str>, summary: &'a str) -> NewEvent<'a> {
        NewEvent {
            at,
            site,
            kind: EventKind::Push,
            outcome: Outcome::Ok,
            summary,
            detail: None,
        }
    }

    #[tokio::test]
    async fn sites_start_at_epoch_one_and_never_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).await.unwrap();
        let mode = std::fs::metadata(dir.path().join("state"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);

        let s = store.ensure_site("web", "alice", 1, 10).await.unwrap();
        assert_eq!((s.master.as_str(), s.epoch), ("alice", 1));
        // A second ensure keeps what is there.
        let s = store.ensure_site("web", "bob", 1, 11).await.unwrap();
        assert_eq!((s.master.as_str(), s.epoch), ("alice", 1));

        assert!(store.advance_site("web", "bob", 2, 12).await.unwrap());
        assert!(
            !store.advance_site("web", "alice", 2, 13).await.unwrap(),
            "same epoch refused"
        );
        assert!(
            !store.advance_site("web", "alice", 1, 14).await.unwrap(),
            "lower epoch refused"
        );
        let s = store.site_state("web").await.unwrap().unwrap();
        assert_eq!((s.master.as_str(), s.epoch, s.updated_at), ("bob", 2, 12));
        assert_eq!(store.site_state("other").await.unwrap(), None);
    }

    #[tokio::test]
    async fn db_checks_keep_the_latest_and_say_what_it_replaced() {
        use crate::db::{Engine, Figures, Report, Side, Verdict};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let report = |verdict, at| Report {
            site: "web".into(),
            name: "app".into(),
            engine: Engine::Postgres,
            checked_at: at,
            max_lag_seconds: 60.0,
            master: Side::default(),
            standby: Side::default(),
            figures: Figures::default(),
            verdict,
            problems: vec![],
        };
        assert_eq!(
            store
                .put_db_check(&report(Verdict::Healthy, 1))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .put_db_check(&report(Verdict::Broken, 2))
                .await
                .unwrap(),
            Some(Verdict::Healthy)
        );
        assert_eq!(
            store
                .put_db_check(&report(Verdict::Broken, 3))
                .await
                .unwrap(),
            Some(Verdict::Broken)
        );
        let all = store.db_checks().await.unwrap();
        assert_eq!(all, vec![report(Verdict::Broken, 3)]);
    }

    #[tokio::test]
    async fn a_kept_manifest_is_read_at_once_and_the_last_one_kept_is_the_one_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        assert!(store.manifest("s", "j", "send").await.unwrap().is_none());
        // Three in a row, the first big (its write is still going when the others come).
        for (generation, files) in [("g1", 50_000), ("g2", 10), ("g3", 20)] {
            store
                .keep_manifest("s", "j", "send", manifest_of(generation, files), 1)
                .await;
            let now = store.manifest("s", "j", "send").await.unwrap().unwrap();
            assert_eq!(now.generation, generation, "read from memory at once");
        }
        store
            .keep_manifest("s", "j", "receive", manifest_of("r1", 5), 1)
            .await;
        store.close().await;
        // What a restarted agent reads: the last kept of each.
        let store = Store::open(dir.path()).await.unwrap();
        let send = store.manifest("s", "j", "send").await.unwrap().unwrap();
        assert_eq!((send.generation.as_str(), send.entries.len()), ("g3", 20));
        let recv = store.manifest("s", "j", "receive").await.unwrap().unwrap();
        assert_eq!((recv.generation.as_str(), recv.entries.len()), ("r1", 5));
        store.close().await;
    }

    /// A manifest of `files` files named `f000000`….
    fn manifest_of(generation: &str, files: usize) -> Arc<crate::sync::Manifest> {
        use crate::sync::{Entry, Kind, Manifest, Meta, Stamp};
        let mut m = Manifest {
            generation: generation.into(),
            ..Manifest::default()
        };
        for i in 0..files {
            let path = format!("f{i:06}");
            let e = Entry::new(path.clone(), Kind::File, 1, Meta::default(), None);
            m.entries.insert(path, (e, Stamp::default()));
        }
        Arc::new(m)
    }

    fn key(job: &str) -> ManifestKey {
        ("s".into(), job.into(), "send".into())
    }

    #[test]
    fn manifests_kept_in_memory_stay_under_the_budget_least_recently_used_out_first() {
        let one = manifest_of("x", 1000).memory();
        assert!(one > 1000 * 100, "{one} bytes for 1 000 entries");
        let mut c = ManifestCache::with_budget(one * 5 / 2);
        let (a, b, d) = (
            manifest_of("a", 1000),
            manifest_of("b", 1000),
            manifest_of("d", 1000),
        );
        c.put(key("a"), Arc::clone(&a), true);
        c.put(key("b"), Arc::clone(&b), true);
        assert!(c.get(&key("a")).is_some_and(|m| Arc::ptr_eq(&m, &a)));
        // A third does not fit: b, the least recently used, goes.
        c.put(key("d"), Arc::clone(&d), true);
        assert!(c.get(&key("b")).is_none());
        assert!(c.get(&key("a")).is_some() && c.get(&key("d")).is_some());

        // Made by pushes and not in the store yet: kept whatever the budget.
        let mut c = ManifestCache::with_budget(one * 5 / 2);
        for job in ["a", "b", "d"] {
            c.put(key(job), manifest_of(job, 1000), false);
        }
        assert!(["a", "b", "d"].iter().all(|j| c.get(&key(j)).is_some()));
        // Once written, the least recently used may go: a was used first of the three.
        let a = c.get(&key("a")).unwrap();
        let b = c.get(&key("b")).unwrap();
        let d = c.get(&key("d")).unwrap();
        c.written(&key("a"), &a);
        assert!(
            c.get(&key("a")).is_none(),
            "a, written and over the budget, went"
        );
        assert!(c.get(&key("b")).is_some());
        c.written(&key("d"), &d);
        assert!(c.get(&key("d")).is_some(), "b and d fit");
        // A replaced manifest's write does not mark its successor written.
        let b2 = manifest_of("b2", 1000);
        c.put(key("b"), Arc::clone(&b2), false);
        assert!(!c.is_current(&key("b"), &b) && c.is_current(&key("b"), &b2));
        c.written(&key("b"), &b);
        assert!(c.kept.get(&key("b")).is_some_and(|k| !k.written));

        // One read from the store that is over the budget alone is not kept; one a push
        // made is.
        let mut c = ManifestCache::with_budget(one / 2);
        c.put(key("a"), manifest_of("a", 1000), true);
        assert!(c.get(&key("a")).is_none());
        c.put(key("a"), manifest_of("a", 1000), false);
        assert!(c.get(&key("a")).is_some());
        // And a store read never replaces what memory holds (as new, or newer).
        let mut c = ManifestCache::with_budget(one * 5);
        let newer = manifest_of("newer", 10);
        c.put(key("a"), Arc::clone(&newer), false);
        c.put(key("a"), manifest_of("older", 10), true);
        assert!(c.get(&key("a")).is_some_and(|m| Arc::ptr_eq(&m, &newer)));
    }

    #[tokio::test]
    async fn a_manifest_dropped_from_memory_is_read_back_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let one = manifest_of("x", 2000).memory();
        *store.manifests.lock().unwrap() = ManifestCache::with_budget(one * 3 / 2);
        store
            .keep_manifest("s", "a", "send", manifest_of("ga", 2000), 1)
            .await;
        store
            .keep_manifest("s", "b", "send", manifest_of("gb", 2000), 1)
            .await;
        // Both are held until written; then one of them goes.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while store.manifests.lock().unwrap().kept.len() > 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing dropped after both were written"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        for (job, generation) in [("a", "ga"), ("b", "gb")] {
            let m = store.manifest("s", job, "send").await.unwrap().unwrap();
            assert_eq!((m.generation.as_str(), m.entries.len()), (generation, 2000));
        }
        store.close().await;
    }

    #[tokio::test]
    async fn history_filters_by_site_and_keeps_node_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        store.record(&ev(1, Some("a"), "push a")).await.unwrap();
        store.record(&ev(2, Some("b"), "push b")).await.unwrap();
        let mut start = ev(3, None, "agent started");
        start.kind = EventKind::Agent;
        start.outcome = Outcome::Info;
        start.detail = Some(serde_json::json!({"pid": 7}));
        store.record(&start).await.unwrap();

        let all = store.history(None, 100).await.unwrap();
        assert_eq!(
            all.iter().map(|e| e.summary.as_str()).collect::<Vec<_>>(),
            ["push a", "push b", "agent started"]
        );
        assert_eq!(all[2].detail, Some(serde_json::json!({"pid": 7})));
        let a = store.history(Some("a"), 100).await.unwrap();
        assert_eq!(
            a.iter().map(|e| e.summary.as_str()).collect::<Vec<_>>(),
            ["push a", "agent started"]
        );
        let newest = store.history(None, 1).await.unwrap();
        assert_eq!(newest[0].summary, "agent started");
        // Since a time: the events at or after it (ev(n) is at n ms).
        let recent = store.history_since(None, 100, Some(2)).await.unwrap();
        assert_eq!(
            recent
                .iter()
                .map(|e| e.summary.as_str())
                .collect::<Vec<_>>(),
            ["push b", "agent started"]
        );
        assert!(store
            .history_since(None, 100, Some(4))
            .await
            .unwrap()
            .is_empty());

        // A reader sees the data while the writer keeps it open.
        let reader = Store::open_read_only(dir.path()).await.unwrap();
        assert_eq!(reader.history(None, 100).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn outbox_counts_a_peers_messages() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        assert_eq!(store.outbox_from("bob", 0).await.unwrap(), (0, 0));
        for (i, (origin, at)) in [("bob", 100), ("bob", 5_000), ("alice", 5_000)]
            .into_iter()
            .enumerate()
        {
            let id = format!("<{i}@orch>");
            let mail = NewMail {
                message_id: &id,
                created_at: at,
                origin,
                site: None,
                subject: "s",
                message: b"Subject: s\r\n\r\nbody",
            };
            store.outbox_enqueue(&mail).await.unwrap();
        }
        assert_eq!(store.outbox_from("bob", 1_000).await.unwrap(), (2, 1));
        let first = store.outbox_due(10_000, 1).await.unwrap();
        store.outbox_done(first[0].id, false, 6_000).await.unwrap();
        assert_eq!(store.outbox_from("bob", 0).await.unwrap(), (1, 2));
    }

    #[tokio::test]
    async fn outbox_queues_once_retries_and_completes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let mail = NewMail {
            message_id: "<1@orch>",
            created_at: 100,
            origin: "alice",
            site: Some("web"),
            subject: "hello",
            message: b"Subject: hello\r\n\r\nbody",
        };
        assert!(store.outbox_enqueue(&mail).await.unwrap());
        assert!(
            !store.outbox_enqueue(&mail).await.unwrap(),
            "duplicate id refused"
        );

        let due = store.outbox_due(100, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].message, mail.message);
        store
            .outbox_retry_later(due[0].id, "connection refused", 200)
            .await
            .unwrap();
        assert!(store.outbox_due(150, 10).await.unwrap().is_empty());
        let due = store.outbox_due(200, 10).await.unwrap();
        assert_eq!(due[0].attempts, 1);
        store.outbox_done(due[0].id, false, 201).await.unwrap();
        assert!(store.outbox_due(10_000, 10).await.unwrap().is_empty());
        assert!(
            !store.outbox_enqueue(&mail).await.unwrap(),
            "a sent message is never queued again"
        );
    }

    #[tokio::test]
    async fn push_runs_alerts_and_hand_offs_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let run = |job: &str, at| PushRun {
            site: "web".into(),
            job: job.into(),
            started_at: at,
            duration_ms: 5,
            outcome: Outcome::Ok,
            files_total: 10,
            files_changed: 1,
            bytes_total: 100,
            bytes_sent: 10,
            deletions: 0,
            diverged: 0,
            errors: vec!["x".into()],
        };
        for (job, at) in [("www", 1), ("mail", 2), ("www", 3)] {
            store.put_push_run(&run(job, at)).await.unwrap();
        }
        let latest = store.latest_push_runs("web").await.unwrap();
        assert_eq!(latest, vec![run("mail", 2), run("www", 3)]);
        assert!(store.latest_push_runs("other").await.unwrap().is_empty());

        let a = AlertState {
            key: "tunnel".into(),
            site: None,
            active: true,
            summary: "down".into(),
            since: 5,
            notified: true,
            last_sent_at: 5,
        };
        store.put_alert(&a).await.unwrap();
        assert_eq!(store.alert("tunnel").await.unwrap(), Some(a.clone()));
        assert_eq!(store.active_alerts().await.unwrap(), vec![a.clone()]);
        store
            .put_alert(&AlertState { active: false, ..a })
            .await
            .unwrap();
        assert!(store.active_alerts().await.unwrap().is_empty());

        let mail = NewMail {
            message_id: "1@alice.orch",
            created_at: 1,
            origin: "alice",
            site: None,
            subject: "s",
            message: b"m",
        };
        store.outbox_enqueue(&mail).await.unwrap();
        let id = store.outbox_due(1, 10).await.unwrap()[0].id;
        store.outbox_offered(id, 7).await.unwrap();
        assert_eq!(
            store.outbox_due(1, 10).await.unwrap()[0].offered_at,
            Some(7)
        );
        store.outbox_offer_failed(id).await.unwrap();
        assert_eq!(store.outbox_due(1, 10).await.unwrap()[0].offered_at, None);
        store.outbox_done(id, true, 9).await.unwrap();
        let counts = store.outbox_counts().await.unwrap();
        assert_eq!((counts.pending, counts.sent, counts.handed_off), (0, 0, 1));
        assert_eq!(
            store.outbox_state("1@alice.orch").await.unwrap(),
            Some((OutboxState::HandedOff, 0, None))
        );
    }

    #[tokio::test]
    async fn reopening_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).await.unwrap();
            store.ensure_site("web", "alice", 1, 1).await.unwrap();
            store.close().await;
        }
        let store = Store::open(dir.path()).await.unwrap();
        assert_eq!(
            store.site_state("web").await.unwrap().unwrap().master,
            "alice"
        );
    }

    #[tokio::test]
    async fn read_only_open_of_a_missing_store_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = Store::open_read_only(dir.path()).await.err().unwrap();
        assert!(matches!(err, StoreError::Missing(_)), "{err}");
    }
}

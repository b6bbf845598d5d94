//! Database replication checks and operations, PostgreSQL and MariaDB/MySQL.
//!
//! A check connects to the site's master and standby (over the tunnel), reads each side's
//! role and the replication figures, and the age of an orch-owned heartbeat row that the
//! master's agent updates every 10 s: the age read on the standby, against the master's
//! clock, is the honest lag whatever the engine reports. [`judge`] turns the figures into
//! a verdict with reasons; it is pure and unit-tested.

pub mod mysql;
pub mod postgres;

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How often the master's agent refreshes the heartbeat row.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// How long one connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    Mysql,
}

/// One side of a replicated database: where to connect and with what password.
#[derive(Clone)]
pub struct Endpoint {
    pub node: String,
    /// A URL without a password (the config refuses inline passwords).
    pub url: String,
    pub password: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("node", &self.node)
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// A database of a site, as the checks see it.
#[derive(Debug, Clone)]
pub struct Target {
    pub site: String,
    pub name: String,
    pub engine: Engine,
    pub master: Endpoint,
    pub standby: Endpoint,
    pub max_lag: Duration,
    /// The heartbeat table, when heartbeats are on.
    pub heartbeat_table: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Standby,
}

/// What one side said.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub node: String,
    /// The connection or query failure, naming the database and node; never a secret.
    pub error: Option<String>,
    pub role: Option<Role>,
    pub read_only: Option<bool>,
    pub version: Option<String>,
    /// PostgreSQL: current (master) or replayed (standby) WAL position; MariaDB/MySQL:
    /// the GTID position.
    pub position: Option<String>,
}

/// The replication figures; which are filled depends on the engine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    // PostgreSQL
    /// `pg_stat_wal_receiver.status` on the standby ("streaming" when healthy).
    pub wal_receiver: Option<String>,
    /// Whether the master lists the standby in `pg_stat_replication`, and its state.
    pub sender_state: Option<String>,
    pub lag_bytes: Option<i64>,
    /// Replay lag with the idle-primary guard (0 when everything received is replayed).
    pub replay_lag_seconds: Option<f64>,
    pub replay_paused: Option<bool>,
    /// `pg_replication_slots.wal_status` of the master's physical slots ("lost" = the
    /// standby can never catch up).
    pub slots: Vec<Slot>,
    // MariaDB / MySQL
    pub io_running: Option<String>,
    pub sql_running: Option<String>,
    /// `Seconds_Behind_Master`/`Seconds_Behind_Source`; `None` is NULL, a failure.
    pub seconds_behind: Option<i64>,
    pub last_io_error: Option<String>,
    pub last_sql_error: Option<String>,
    /// Whether `SHOW REPLICA STATUS` returned a row at all.
    pub replica_configured: Option<bool>,
    // Both
    /// Age of the heartbeat row on the standby, measured with the master's clock.
    pub heartbeat_age_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub name: String,
    pub active: bool,
    pub wal_status: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Healthy,
    /// Replicating, but behind more than `max_lag`, or paused.
    Lagging,
    /// Not replicating, a wrong role, or a side that cannot be asked.
    Broken,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Lagging => "lagging",
            Verdict::Broken => "broken",
        }
    }
}

/// A whole check of one database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub site: String,
    pub name: String,
    pub engine: Engine,
    /// Unix milliseconds.
    pub checked_at: i64,
    pub max_lag_seconds: f64,
    pub master: Side,
    pub standby: Side,
    pub figures: Figures,
    pub verdict: Verdict,
    /// Why the verdict is not healthy, one reason each.
    pub problems: Vec<String>,
}

/// Judges the figures: a wrong role, a side that cannot be asked or replication that
/// does not run is `Broken`; a standby behind more than `max_lag` (by the engine or by
/// the heartbeat) or paused is `Lagging`.
pub fn judge(
    engine: Engine,
    master: &Side,
    standby: &Side,
    f: &Figures,
    max_lag: Duration,
    heartbeat: bool,
) -> (Verdict, Vec<String>) {
    let mut broken = Vec::new();
    let mut lagging = Vec::new();
    for (side, want, what) in [
        (master, Role::Primary, "master"),
        (standby, Role::Standby, "standby"),
    ] {
        if let Some(e) = &side.error {
            broken.push(format!("{what} {}: {e}", side.node));
            continue;
        }
        match side.role {
            Some(role) if role != want => broken.push(format!(
                "{what} {} is a {}, not a {}",
                side.node,
                role_name(role),
                role_name(want)
            )),
            _ => {}
        }
    }
    if engine == Engine::Mysql {
        if master.error.is_none() && master.read_only == Some(true) {
            broken.push(format!("master {} is read_only", master.node));
        }
        if standby.error.is_none() && standby.read_only == Some(false) {
            lagging.push(format!(
                "standby {} is writable (read_only=OFF): writes there would diverge",
                standby.node
            ));
        }
    }
    let max = max_lag.as_secs_f64();
    if standby.error.is_none() && standby.role == Some(Role::Standby) {
        match engine {
            Engine::Postgres => {
                match f.wal_receiver.as_deref() {
                    Some("streaming") => {}
                    Some(other) => broken.push(format!("WAL receiver is {other}, not streaming")),
                    None => broken.push("no WAL receiver on the standby".into()),
                }
                if f.replay_paused == Some(true) {
                    lagging.push("replay is paused on the standby".into());
                }
                if let Some(lag) = f.replay_lag_seconds {
                    if lag > max {
                        lagging.push(format!("replay lag {lag:.1} s exceeds max_lag {max:.0} s"));
                    }
                }
            }
            Engine::Mysql => {
                if f.replica_configured == Some(false) {
                    broken.push("the standby has no replication configured".into());
                } else {
                    for (thread, state) in [("IO", &f.io_running), ("SQL", &f.sql_running)] {
                        match state.as_deref() {
                            Some("Yes") => {}
                            Some(other) => {
                                broken.push(format!("{thread} thread is not running ({other})"))
                            }
                            None => {}
                        }
                    }
                    for e in [&f.last_io_error, &f.last_sql_error].into_iter().flatten() {
                        if !e.is_empty() {
                            broken.push(format!("last error: {e}"));
                        }
                    }
                    match f.seconds_behind {
                        None => {
                            broken.push("Seconds_Behind is NULL: replication is not running".into())
                        }
                        Some(s) if s as f64 > max => {
                            lagging.push(format!("Seconds_Behind {s} s exceeds max_lag {max:.0} s"))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }
    if engine == Engine::Postgres && master.error.is_none() {
        for slot in &f.slots {
            if slot.wal_status.as_deref() == Some("lost") {
                broken.push(format!(
                    "replication slot {} is lost: the standby can no longer catch up",
                    slot.name
                ));
            }
        }
    }
    if heartbeat && master.error.is_none() && standby.error.is_none() {
        match f.heartbeat_age_ms {
            Some(ms) if ms as f64 / 1000.0 > max => lagging.push(format!(
                "heartbeat on the standby is {:.1} s old, over max_lag {max:.0} s",
                ms as f64 / 1000.0
            )),
            Some(_) => {}
            None => lagging.push("no heartbeat row on the standby yet".into()),
        }
    }
    let verdict = if !broken.is_empty() {
        Verdict::Broken
    } else if !lagging.is_empty() {
        Verdict::Lagging
    } else {
        Verdict::Healthy
    };
    broken.extend(lagging);
    (verdict, broken)
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Primary => "primary",
        Role::Standby => "standby",
    }
}

/// Runs one check of `target`.
pub async fn check(target: &Target) -> Report {
    let (master, standby, figures) = match target.engine {
        Engine::Postgres => postgres::check(target).await,
        Engine::Mysql => mysql::check(target).await,
    };
    let (verdict, problems) = judge(
        target.engine,
        &master,
        &standby,
        &figures,
        target.max_lag,
        target.heartbeat_table.is_some(),
    );
    Report {
        site: target.site.clone(),
        name: target.name.clone(),
        engine: target.engine,
        checked_at: crate::unix_millis(std::time::SystemTime::now()),
        max_lag_seconds: target.max_lag.as_secs_f64(),
        master,
        standby,
        figures,
        verdict,
        problems,
    }
}

/// Updates the heartbeat row on the master (creating the table when missing).
pub async fn beat(target: &Target, node: &str) -> Result<(), String> {
    match target.engine {
        Engine::Postgres => postgres::beat(target, node).await,
        Engine::Mysql => mysql::beat(target, node).await,
    }
}

/// Makes `side` the writable primary: PostgreSQL `pg_promote(wait => true)`; MariaDB/MySQL
/// waits until the relay log is applied, stops and resets the replica, `read_only=OFF`.
pub async fn promote(
    engine: Engine,
    side: &Endpoint,
    database: &str,
    within: Duration,
) -> Result<(), String> {
    match engine {
        Engine::Postgres => postgres::promote(side, database, within).await,
        Engine::Mysql => mysql::promote(side, database, within).await,
    }
}

/// Stops writes on `side`: MariaDB/MySQL `read_only=ON`; PostgreSQL
/// `default_transaction_read_only=on` (making it a standby again takes a playbook:
/// `standby.signal` and a restart, or pg_rewind).
pub async fn demote(engine: Engine, side: &Endpoint, database: &str) -> Result<(), String> {
    match engine {
        Engine::Postgres => postgres::demote(side, database).await,
        Engine::Mysql => mysql::demote(side, database).await,
    }
}

/// The master's position now: a WAL LSN, or a GTID position.
pub async fn position(engine: Engine, side: &Endpoint, database: &str) -> Result<String, String> {
    match engine {
        Engine::Postgres => postgres::position(side, database).await,
        Engine::Mysql => mysql::position(side, database).await,
    }
}

/// The final position of a master that was just demoted: asked of the server, or, of a
/// PostgreSQL primary the demote stopped, read from its control file in `data_dir`.
pub async fn final_position(
    engine: Engine,
    side: &Endpoint,
    database: &str,
    data_dir: Option<&std::path::Path>,
) -> Result<String, String> {
    match (position(engine, side, database).await, engine, data_dir) {
        (Ok(p), _, _) => Ok(p),
        (Err(e), Engine::Postgres, Some(dir)) => postgres::stopped_position(dir)
            .await
            .map_err(|e2| format!("{e}; and {e2}")),
        (Err(e), _, _) => Err(e),
    }
}

/// Waits until `side` has applied everything up to `position`.
pub async fn wait_for(
    engine: Engine,
    side: &Endpoint,
    database: &str,
    position: &str,
    within: Duration,
) -> Result<(), String> {
    match engine {
        Engine::Postgres => postgres::wait_for(side, database, position, within).await,
        Engine::Mysql => mysql::wait_for(side, database, position, within).await,
    }
}

/// Runs `sql` (one statement or several) on `side`; returns the first column of the
/// rows it returned, one line each, as text.
pub async fn execute(
    engine: Engine,
    side: &Endpoint,
    database: &str,
    sql: &str,
    within: Duration,
) -> Result<String, String> {
    let run = async {
        match engine {
            Engine::Postgres => postgres::execute(side, database, sql).await,
            Engine::Mysql => mysql::execute(side, database, sql).await,
        }
    };
    tokio::time::timeout(within, run).await.unwrap_or_else(|_| {
        Err(format!(
            "{}: no answer within {} s",
            describe(side, database),
            within.as_secs()
        ))
    })
}

/// Whether a query's answer means yes: `t`, `true`, `1`, `yes`, `on` (any case).
pub fn truthy(answer: &str) -> bool {
    matches!(
        answer
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
            .as_str(),
        "t" | "true" | "1" | "yes" | "on"
    )
}

/// Whether `side`, a replica, has applied everything it received (PostgreSQL: replay
/// LSN = receive LSN; MariaDB/MySQL: the SQL thread is at the IO thread's position).
pub async fn caught_up(engine: Engine, side: &Endpoint, database: &str) -> Result<bool, String> {
    match engine {
        Engine::Postgres => postgres::caught_up(side, database).await,
        Engine::Mysql => mysql::caught_up(side, database).await,
    }
}

/// Opens a connection within [`CONNECT_TIMEOUT`]; errors start with `what`.
async fn connect_within<C>(
    what: &str,
    connecting: impl std::future::Future<Output = Result<C, sqlx::Error>>,
) -> Result<C, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!("{what}: {}", sql_error(&e))),
        Err(_) => Err(format!(
            "{what}: no connection within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// An sqlx error in one line (its text never holds the password: orch never puts it in
/// the URL).
fn sql_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        other => other.to_string(),
    }
}

impl Side {
    fn of(node: &str) -> Side {
        Side {
            node: node.to_owned(),
            ..Side::default()
        }
    }
}

/// "database NAME on NODE (URL host)": how errors name what failed.
pub fn describe(side: &Endpoint, database: &str) -> String {
    let host = url::Url::parse(&side.url)
        .ok()
        .and_then(|u| u.host_str().map(|h| format!(" at {h}")))
        .unwrap_or_default();
    format!("database {database} on {}{host}", side.node)
}

#[cfg(test)]
mod tests;

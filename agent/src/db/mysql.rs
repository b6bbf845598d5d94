//! MariaDB and MySQL: `read_only` on each side, `SHOW REPLICA STATUS` (falling back to
//! `SHOW SLAVE STATUS`) read by column name — MariaDB keeps `Slave_IO_Running` and
//! `Seconds_Behind_Master`, MySQL 8.4 says `Replica_IO_Running` and
//! `Seconds_Behind_Source` — GTID positions, and the heartbeat age.
//!
//! Status and variables are read over the text protocol and taken as text, whatever type
//! the server declares for a column.

use super::{connect_within, describe, sql_error, Endpoint, Figures, Role, Side, Target};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlRow};
use sqlx::{ConnectOptions, Connection, Executor, Row};
use std::str::FromStr;
use std::time::Duration;
use tokio::time::Instant;

async fn connect(side: &Endpoint, database: &str) -> Result<MySqlConnection, String> {
    let what = describe(side, database);
    let mut options = MySqlConnectOptions::from_str(&side.url)
        .map_err(|e| format!("{what}: bad url: {e}"))?
        .log_statements(tracing::log::LevelFilter::Trace);
    if let Some(pw) = &side.password {
        options = options.password(pw);
    }
    connect_within(&what, options.connect()).await
}

/// A column as text, by the first of `names` the row has; `None` for NULL or absent.
fn text(row: &MySqlRow, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        row.try_get_unchecked::<Option<String>, _>(*n)
            .ok()
            .flatten()
    })
}

/// A statement without parameters runs over the text protocol (COM_QUERY), so every
/// value arrives as text.
async fn rows(conn: &mut MySqlConnection, sql: &str) -> Result<Vec<MySqlRow>, String> {
    conn.fetch_all(sql).await.map_err(|e| sql_error(&e))
}

async fn value(conn: &mut MySqlConnection, sql: &str) -> Result<Option<String>, String> {
    let rows = rows(conn, sql).await?;
    Ok(rows
        .first()
        .and_then(|r| r.try_get_unchecked::<Option<String>, _>(0).ok().flatten()))
}

/// `SHOW REPLICA STATUS`, else `SHOW SLAVE STATUS` (servers older than MySQL 8.0.22 or
/// MariaDB 10.5.1).
async fn replica_status(conn: &mut MySqlConnection) -> Result<Option<MySqlRow>, String> {
    match rows(conn, "SHOW REPLICA STATUS").await {
        Ok(mut r) => Ok(r.drain(..).next()),
        Err(_) => Ok(rows(conn, "SHOW SLAVE STATUS").await?.drain(..).next()),
    }
}

async fn is_mariadb(conn: &mut MySqlConnection) -> Result<(bool, String), String> {
    let version = value(conn, "SELECT VERSION()").await?.unwrap_or_default();
    Ok((version.contains("MariaDB"), version))
}

pub async fn check(target: &Target) -> (Side, Side, Figures) {
    let mut figures = Figures::default();
    let mut master = Side::of(&target.master.node);
    let mut standby = Side::of(&target.standby.node);
    let mut standby_beat = None;
    match connect(&target.standby, &target.name).await {
        Ok(mut conn) => {
            if let Err(e) = read_standby(
                &mut conn,
                target,
                &mut standby,
                &mut figures,
                &mut standby_beat,
            )
            .await
            {
                standby.error = Some(format!("{}: {e}", describe(&target.standby, &target.name)));
            }
            let _ = conn.close().await;
        }
        Err(e) => standby.error = Some(e),
    }
    match connect(&target.master, &target.name).await {
        Ok(mut conn) => {
            if let Err(e) = read_master(&mut conn, &mut master, &mut figures, standby_beat).await {
                master.error = Some(format!("{}: {e}", describe(&target.master, &target.name)));
            }
            let _ = conn.close().await;
        }
        Err(e) => master.error = Some(e),
    }
    (master, standby, figures)
}

async fn read_standby(
    conn: &mut MySqlConnection,
    target: &Target,
    standby: &mut Side,
    figures: &mut Figures,
    beat: &mut Option<i64>,
) -> Result<(), String> {
    let (mariadb, version) = is_mariadb(conn).await?;
    standby.version = Some(version);
    standby.read_only = value(conn, "SELECT @@global.read_only")
        .await?
        .map(|v| v == "1");
    let status = replica_status(conn).await?;
    figures.replica_configured = Some(status.is_some());
    standby.role = Some(if status.is_some() {
        Role::Standby
    } else {
        Role::Primary
    });
    if let Some(row) = &status {
        figures.io_running = text(row, &["Replica_IO_Running", "Slave_IO_Running"]);
        figures.sql_running = text(row, &["Replica_SQL_Running", "Slave_SQL_Running"]);
        figures.seconds_behind = text(row, &["Seconds_Behind_Source", "Seconds_Behind_Master"])
            .and_then(|s| s.trim().parse().ok());
        figures.last_io_error = text(row, &["Last_IO_Error"]).filter(|e| !e.is_empty());
        figures.last_sql_error = text(row, &["Last_SQL_Error"]).filter(|e| !e.is_empty());
    }
    standby.position = if mariadb {
        value(conn, "SELECT @@global.gtid_slave_pos").await?
    } else {
        value(conn, "SELECT @@global.gtid_executed").await?
    };
    if let Some(table) = &target.heartbeat_table {
        let sql = format!("SELECT at FROM {table} WHERE site = ?");
        if let Ok(row) = sqlx::query(&sql)
            .bind(target.site.clone())
            .fetch_optional(&mut *conn)
            .await
        {
            *beat = row.and_then(|r| r.try_get::<i64, _>(0).ok());
        }
    }
    Ok(())
}

async fn read_master(
    conn: &mut MySqlConnection,
    master: &mut Side,
    figures: &mut Figures,
    standby_beat: Option<i64>,
) -> Result<(), String> {
    let (mariadb, version) = is_mariadb(conn).await?;
    master.version = Some(version);
    master.read_only = value(conn, "SELECT @@global.read_only")
        .await?
        .map(|v| v == "1");
    let replicating = replica_status(conn).await?.is_some();
    master.role = Some(if replicating {
        Role::Standby
    } else {
        Role::Primary
    });
    master.position = if mariadb {
        value(conn, "SELECT @@global.gtid_binlog_pos").await?
    } else {
        value(conn, "SELECT @@global.gtid_executed").await?
    };
    let now: Option<i64> = value(conn, "SELECT CAST(UNIX_TIMESTAMP(NOW(6)) * 1000 AS SIGNED)")
        .await?
        .and_then(|v| v.parse().ok());
    if let (Some(now), Some(at)) = (now, standby_beat) {
        figures.heartbeat_age_ms = Some((now - at).max(0));
    }
    Ok(())
}

pub async fn beat(target: &Target, node: &str) -> Result<(), String> {
    let Some(table) = &target.heartbeat_table else {
        return Ok(());
    };
    let mut conn = connect(&target.master, &target.name).await?;
    let what = describe(&target.master, &target.name);
    let result = beat_on(&mut conn, table, &target.site, node).await;
    let _ = conn.close().await;
    result.map_err(|e| format!("{what}: heartbeat: {}", sql_error(&e)))
}

async fn beat_on(
    conn: &mut MySqlConnection,
    table: &str,
    site: &str,
    node: &str,
) -> Result<(), sqlx::Error> {
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {table} (site VARCHAR(190) PRIMARY KEY, node VARCHAR(190) NOT NULL, at BIGINT NOT NULL)"
    );
    conn.execute(create.as_str()).await?;
    let upsert = format!(
        "INSERT INTO {table} (site, node, at) VALUES (?, ?, CAST(UNIX_TIMESTAMP(NOW(6)) * 1000 AS SIGNED)) \
         ON DUPLICATE KEY UPDATE node = VALUES(node), at = VALUES(at)"
    );
    sqlx::query(&upsert)
        .bind(site.to_owned())
        .bind(node.to_owned())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Runs the `REPLICA` form of a statement, or the `SLAVE` form where that is all the
/// server knows.
async fn replica_stmt(conn: &mut MySqlConnection, replica: &str) -> Result<(), String> {
    match conn.execute(replica).await {
        Ok(_) => Ok(()),
        Err(_) => conn
            .execute(replica.replace("REPLICA", "SLAVE").as_str())
            .await
            .map(|_| ())
            .map_err(|e| sql_error(&e)),
    }
}

pub async fn promote(side: &Endpoint, database: &str, within: Duration) -> Result<(), String> {
    let mut conn = connect(side, database).await?;
    let what = describe(side, database);
    let fail = |e: String| format!("{what}: promote: {e}");
    if replica_status(&mut conn).await.map_err(fail)?.is_some() {
        // Take nothing more from the old master, then let the SQL thread apply what was
        // received before stopping it.
        replica_stmt(&mut conn, "STOP REPLICA IO_THREAD")
            .await
            .map_err(fail)?;
        let deadline = Instant::now() + within;
        loop {
            let Some(row) = replica_status(&mut conn).await.map_err(fail)? else {
                break;
            };
            let read = (
                text(&row, &["Source_Log_File", "Master_Log_File"]),
                text(&row, &["Read_Source_Log_Pos", "Read_Master_Log_Pos"]),
            );
            let applied = (
                text(&row, &["Relay_Source_Log_File", "Relay_Master_Log_File"]),
                text(&row, &["Exec_Source_Log_Pos", "Exec_Master_Log_Pos"]),
            );
            let sql_running = text(&row, &["Replica_SQL_Running", "Slave_SQL_Running"]);
            if read == applied || sql_running.as_deref() != Some("Yes") {
                break;
            }
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "the relay log was not applied within {} s (read {read:?}, applied {applied:?})",
                    within.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        replica_stmt(&mut conn, "STOP REPLICA")
            .await
            .map_err(fail)?;
        replica_stmt(&mut conn, "RESET REPLICA ALL")
            .await
            .map_err(fail)?;
    }
    conn.execute("SET GLOBAL read_only = OFF")
        .await
        .map_err(|e| fail(sql_error(&e)))?;
    let _ = conn.close().await;
    Ok(())
}

pub async fn demote(side: &Endpoint, database: &str) -> Result<(), String> {
    let mut conn = connect(side, database).await?;
    conn.execute("SET GLOBAL read_only = ON")
        .await
        .map_err(|e| format!("{}: demote: {}", describe(side, database), sql_error(&e)))?;
    let _ = conn.close().await;
    Ok(())
}

pub async fn position(side: &Endpoint, database: &str) -> Result<String, String> {
    let mut conn = connect(side, database).await?;
    let what = describe(side, database);
    let (mariadb, _) = is_mariadb(&mut conn)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    let sql = if mariadb {
        "SELECT @@global.gtid_binlog_pos"
    } else {
        "SELECT @@global.gtid_executed"
    };
    let pos = value(&mut conn, sql)
        .await
        .map_err(|e| format!("{what}: {e}"))?
        .unwrap_or_default();
    let _ = conn.close().await;
    Ok(pos)
}

/// A GTID position as the servers write them (MariaDB `0-1-42,1-2-7`; MySQL
/// `uuid:1-42,uuid:7`), so that it can be put in a statement as a literal.
fn valid_gtid(position: &str) -> bool {
    !position.is_empty()
        && position.len() <= 4096
        && position
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, '-' | ',' | ':' | ' ' | '\n'))
}

pub async fn wait_for(
    side: &Endpoint,
    database: &str,
    position: &str,
    within: Duration,
) -> Result<(), String> {
    let what = describe(side, database);
    if !valid_gtid(position) {
        return Err(format!("{what}: `{position}` is not a GTID position"));
    }
    let mut conn = connect(side, database).await?;
    let (mariadb, _) = is_mariadb(&mut conn)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    let secs = within.as_secs().max(1);
    let sql = if mariadb {
        format!("SELECT MASTER_GTID_WAIT('{position}', {secs})")
    } else {
        format!("SELECT WAIT_FOR_EXECUTED_GTID_SET('{position}', {secs})")
    };
    let got = value(&mut conn, &sql)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    let _ = conn.close().await;
    match got.as_deref() {
        Some("0") => Ok(()),
        _ => Err(format!(
            "{what}: not caught up to {position} within {secs} s"
        )),
    }
}

pub async fn execute(side: &Endpoint, database: &str, sql: &str) -> Result<String, String> {
    let mut conn = connect(side, database).await?;
    let what = describe(side, database);
    // Through `Executor`, whose boxed future is `Send` for every borrow (RawSql's own
    // `fetch_all` is not: rust-lang/rust#102211), so that a task may run playbooks.
    let rows = sqlx::Executor::fetch_all(&mut conn, sqlx::raw_sql(sql))
        .await
        .map_err(|e| format!("{what}: {}", sql_error(&e)))?;
    let _ = conn.close().await;
    Ok(rows
        .iter()
        .map(|r| {
            r.try_get_unchecked::<Option<String>, _>(0)
                .ok()
                .flatten()
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

pub async fn caught_up(side: &Endpoint, database: &str) -> Result<bool, String> {
    let mut conn = connect(side, database).await?;
    let what = describe(side, database);
    let Some(row) = replica_status(&mut conn)
        .await
        .map_err(|e| format!("{what}: {e}"))?
    else {
        // Replicating from nobody (a primary already: a promote playbook run again to
        // undo a switchover's demote), nothing is left to apply.
        let _ = conn.close().await;
        return Ok(true);
    };
    let read = (
        text(&row, &["Source_Log_File", "Master_Log_File"]),
        text(&row, &["Read_Source_Log_Pos", "Read_Master_Log_Pos"]),
    );
    let applied = (
        text(&row, &["Relay_Source_Log_File", "Relay_Master_Log_File"]),
        text(&row, &["Exec_Source_Log_Pos", "Exec_Master_Log_Pos"]),
    );
    let _ = conn.close().await;
    Ok(read.0.is_some() && read == applied)
}

/// One GTID of a MariaDB position or state: `domain-server-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

/// A MariaDB GTID list (`0-1-42,1-2-7`); empty text is an empty list.
pub fn parse_gtids(text: &str) -> Result<Vec<Gtid>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let mut parts = t.split('-');
            let mut num = || parts.next().and_then(|p| p.trim().parse::<u64>().ok());
            match (num(), num(), num()) {
                (Some(d), Some(s), Some(q))
                    if d <= u64::from(u32::MAX) && s <= u64::from(u32::MAX) =>
                {
                    Ok(Gtid {
                        domain: d as u32,
                        server: s as u32,
                        seq: q,
                    })
                }
                _ => Err(format!(
                    "`{t}` is not a MariaDB GTID (domain-server-sequence)"
                )),
            }
        })
        .collect()
}

/// The transactions this node wrote that the new master never got: for each domain, the
/// ones of `me` (a server id) in this node's binlog state past the last one of `me` the
/// master knows (in its own binlog state or as its replica position). As `d-s-a..b`.
pub fn errant(
    local_state: &[Gtid],
    me: u32,
    master_state: &[Gtid],
    master_slave_pos: &[Gtid],
) -> Vec<String> {
    let mut out = Vec::new();
    for mine in local_state.iter().filter(|g| g.server == me) {
        let known = master_state
            .iter()
            .chain(master_slave_pos)
            .filter(|g| g.domain == mine.domain && g.server == me)
            .map(|g| g.seq)
            .max()
            .unwrap_or(0);
        if mine.seq > known {
            // Only the last one of each server is known: say it, and what the master has.
            out.push(if known == 0 {
                format!("{}-{}-{}", mine.domain, me, mine.seq)
            } else {
                format!(
                    "{}-{}-{} (the last of them; the master has {}-{}-{})",
                    mine.domain, me, mine.seq, mine.domain, me, known
                )
            });
        }
    }
    out
}

/// Makes `local` a replica of `master` by GTID (MariaDB): read-only first; refused,
/// naming them, when `local` wrote transactions `master` lacks; then `CHANGE MASTER TO`
/// the master with the config's credentials, `MASTER_USE_GTID = slave_pos` from what
/// `local` has, `START SLAVE`, and both threads running within `within`.
pub async fn rejoin(
    local: &Endpoint,
    master: &Endpoint,
    database: &str,
    within: Duration,
) -> Result<String, String> {
    let what = describe(local, database);
    let fail = |e: String| format!("{what}: rejoin: {e}");
    let mut conn = connect(local, database).await?;
    conn.execute("SET GLOBAL read_only = ON")
        .await
        .map_err(|e| fail(sql_error(&e)))?;
    let (mariadb, version) = is_mariadb(&mut conn).await.map_err(fail)?;
    if !mariadb {
        return Err(fail(format!(
            "{version} is MySQL: orch rejoins MariaDB by GTID only (set it up by hand: CHANGE REPLICATION SOURCE TO … SOURCE_AUTO_POSITION=1)"
        )));
    }
    let me: u32 = value(&mut conn, "SELECT @@global.server_id")
        .await
        .map_err(fail)?
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| fail("no server_id".into()))?;
    let local_state = parse_gtids(
        &value(&mut conn, "SELECT @@global.gtid_binlog_state")
            .await
            .map_err(fail)?
            .unwrap_or_default(),
    )
    .map_err(fail)?;
    let mut theirs = connect(master, database).await?;
    let there = describe(master, database);
    let master_state = parse_gtids(
        &value(&mut theirs, "SELECT @@global.gtid_binlog_state")
            .await
            .map_err(|e| format!("{there}: {e}"))?
            .unwrap_or_default(),
    )
    .map_err(fail)?;
    let master_slave_pos = parse_gtids(
        &value(&mut theirs, "SELECT @@global.gtid_slave_pos")
            .await
            .map_err(|e| format!("{there}: {e}"))?
            .unwrap_or_default(),
    )
    .map_err(fail)?;
    let _ = theirs.close().await;
    let errant = errant(&local_state, me, &master_state, &master_slave_pos);
    if !errant.is_empty() {
        return Err(fail(format!(
            "this node has transactions the new master {} lacks: {} (written here after the split). \
             Refusing to replicate over them: keep what they changed (mariadb-binlog shows them), \
             then rebuild this replica from a copy of {}",
            master.node,
            errant.join(", "),
            master.node
        )));
    }
    let url = url::Url::parse(&master.url).map_err(|e| fail(format!("bad url: {e}")))?;
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_owned();
    let port = url.port().unwrap_or(3306);
    let user = url.username().to_owned();
    let quote = |s: &str| s.replace('\\', "\\\\").replace('\'', "\\'");
    let password = master.password.clone().unwrap_or_default();
    for stmt in [
        "STOP SLAVE".to_owned(),
        "RESET SLAVE ALL".to_owned(),
        // What this node has is where replication starts.
        "SET GLOBAL gtid_slave_pos = @@global.gtid_binlog_pos".to_owned(),
        format!(
            "CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={port}, MASTER_USER='{}', MASTER_PASSWORD='{}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
            quote(&host),
            quote(&user),
            quote(&password)
        ),
        "START SLAVE".to_owned(),
    ] {
        conn.execute(stmt.as_str()).await.map_err(|e| {
            // Never the statement itself: it holds the password.
            fail(sql_error(&e))
        })?;
    }
    let deadline = Instant::now() + within;
    loop {
        let row = replica_status(&mut conn).await.map_err(fail)?;
        let threads = row.as_ref().map(|r| {
            (
                text(r, &["Replica_IO_Running", "Slave_IO_Running"]),
                text(r, &["Replica_SQL_Running", "Slave_SQL_Running"]),
                text(r, &["Last_IO_Error"]).unwrap_or_default(),
                text(r, &["Last_SQL_Error"]).unwrap_or_default(),
            )
        });
        if let Some((Some(io), Some(sql), _, _)) = &threads {
            if io == "Yes" && sql == "Yes" {
                let _ = conn.close().await;
                return Ok(format!(
                    "{what} replicates from {} at {host}:{port} by GTID (IO and SQL threads running)",
                    master.node
                ));
            }
        }
        if Instant::now() >= deadline {
            let (io_err, sql_err) = threads.map(|t| (t.2, t.3)).unwrap_or_default();
            return Err(fail(format!(
                "the replica threads did not both run within {} s (IO error: {io_err}; SQL error: {sql_err})",
                within.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{errant, parse_gtids, valid_gtid};

    #[test]
    fn errant_transactions_are_the_ones_the_new_master_never_got() {
        let g = |t: &str| parse_gtids(t).unwrap();
        // alice (1) wrote up to 42, bob (2) replicated them and went on after the split.
        let bob_state = g("0-1-42,0-2-45");
        assert!(errant(&g("0-1-42"), 1, &bob_state, &[]).is_empty());
        // alice wrote 43 and 44 after the split too.
        assert_eq!(
            errant(&g("0-2-30,0-1-44"), 1, &bob_state, &[]),
            ["0-1-44 (the last of them; the master has 0-1-42)"]
        );
        assert_eq!(errant(&g("0-1-3"), 1, &g("0-2-45"), &[]), ["0-1-3"]);
        // Without log_slave_updates the master knows alice's last one as its replica position.
        assert!(errant(&g("0-1-42"), 1, &g("0-2-45"), &g("0-1-42")).is_empty());
        assert!(parse_gtids("0-1-x").is_err());
        assert!(parse_gtids("").unwrap().is_empty());
    }

    #[test]
    fn gtid_positions_are_checked_before_use_as_literals() {
        assert!(valid_gtid("0-1-42"));
        assert!(valid_gtid("0-1-42,1-2-7"));
        assert!(valid_gtid("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"));
        assert!(!valid_gtid("0-1-42'); DROP TABLE x; --"));
        assert!(!valid_gtid(""));
    }
}

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

#[cfg(test)]
mod tests {
    use super::valid_gtid;

    #[test]
    fn gtid_positions_are_checked_before_use_as_literals() {
        assert!(valid_gtid("0-1-42"));
        assert!(valid_gtid("0-1-42,1-2-7"));
        assert!(valid_gtid("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"));
        assert!(!valid_gtid("0-1-42'); DROP TABLE x; --"));
        assert!(!valid_gtid(""));
    }
}

//! PostgreSQL: roles by `pg_is_in_recovery()`, the WAL receiver on the standby, byte lag
//! from the master's current LSN to the standby's replay LSN, replay lag in seconds with the
//! idle-primary guard, replay pause, physical slots' `wal_status`, heartbeat age.

use super::{connect_within, describe, sql_error, Endpoint, Figures, Role, Side, Slot, Target};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use std::str::FromStr;
use std::time::Duration;
use tokio::time::Instant;

async fn connect(side: &Endpoint, database: &str) -> Result<PgConnection, String> {
    let what = describe(side, database);
    let mut options = PgConnectOptions::from_str(&side.url)
        .map_err(|e| format!("{what}: bad url: {e}"))?
        .application_name("orch")
        .log_statements(tracing::log::LevelFilter::Trace);
    if let Some(pw) = &side.password {
        options = options.password(pw);
    }
    connect_within(&what, options.connect()).await
}

pub async fn check(target: &Target) -> (Side, Side, Figures) {
    let mut figures = Figures::default();
    let mut master = Side::of(&target.master.node);
    let mut standby = Side::of(&target.standby.node);

    // The standby first: the master's byte lag is measured to its replay position.
    let mut standby_conn = match connect(&target.standby, &target.name).await {
        Ok(c) => Some(c),
        Err(e) => {
            standby.error = Some(e);
            None
        }
    };
    let mut standby_beat: Option<i64> = None;
    if let Some(conn) = standby_conn.as_mut() {
        if let Err(e) =
            read_standby(conn, target, &mut standby, &mut figures, &mut standby_beat).await
        {
            standby.error = Some(format!("{}: {e}", describe(&target.standby, &target.name)));
        }
    }
    match connect(&target.master, &target.name).await {
        Ok(mut conn) => {
            if let Err(e) = read_master(
                &mut conn,
                target,
                &mut master,
                &standby,
                &mut figures,
                standby_beat,
            )
            .await
            {
                master.error = Some(format!("{}: {e}", describe(&target.master, &target.name)));
            }
            let _ = conn.close().await;
        }
        Err(e) => master.error = Some(e),
    }
    if let Some(conn) = standby_conn {
        let _ = conn.close().await;
    }
    (master, standby, figures)
}

async fn read_standby(
    conn: &mut PgConnection,
    target: &Target,
    standby: &mut Side,
    figures: &mut Figures,
    beat: &mut Option<i64>,
) -> Result<(), String> {
    let row = sqlx::query(
        "SELECT pg_is_in_recovery(), current_setting('server_version'), \
         current_setting('default_transaction_read_only') = 'on'",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| sql_error(&e))?;
    let in_recovery: bool = row.get(0);
    standby.role = Some(if in_recovery {
        Role::Standby
    } else {
        Role::Primary
    });
    standby.version = Some(row.get(1));
    standby.read_only = Some(in_recovery || row.get::<bool, _>(2));
    if in_recovery {
        let row = sqlx::query(
            "SELECT pg_last_wal_replay_lsn()::text, pg_is_wal_replay_paused(), \
             CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
                  ELSE EXTRACT(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) END::float8, \
             (SELECT status FROM pg_stat_wal_receiver LIMIT 1)",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| sql_error(&e))?;
        standby.position = row.get(0);
        figures.replay_paused = Some(row.get(1));
        figures.replay_lag_seconds = row.get(2);
        figures.wal_receiver = row.get(3);
    }
    if let Some(table) = &target.heartbeat_table {
        // A missing table (no beat yet) is not an error: the figure stays empty.
        let sql = format!("SELECT at FROM {table} WHERE site = $1");
        if let Ok(row) = sqlx::query(&sql)
            .bind(target.site.clone())
            .fetch_optional(&mut *conn)
            .await
        {
            *beat = row.map(|r| r.get::<i64, _>(0));
        }
    }
    Ok(())
}

async fn read_master(
    conn: &mut PgConnection,
    target: &Target,
    master: &mut Side,
    standby: &Side,
    figures: &mut Figures,
    standby_beat: Option<i64>,
) -> Result<(), String> {
    let row = sqlx::query(
        "SELECT pg_is_in_recovery(), current_setting('server_version'), \
         current_setting('default_transaction_read_only') = 'on', \
         (EXTRACT(epoch FROM clock_timestamp()) * 1000)::bigint",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| sql_error(&e))?;
    let in_recovery: bool = row.get(0);
    master.role = Some(if in_recovery {
        Role::Standby
    } else {
        Role::Primary
    });
    master.version = Some(row.get(1));
    master.read_only = Some(in_recovery || row.get::<bool, _>(2));
    let now_ms: i64 = row.get(3);
    if let Some(at) = standby_beat {
        figures.heartbeat_age_ms = Some((now_ms - at).max(0));
    }
    if in_recovery {
        return Ok(());
    }
    let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| sql_error(&e))?;
    master.position = Some(lsn);
    if let Some(replayed) = &standby.position {
        figures.lag_bytes =
            sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint")
                .bind(replayed.clone())
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| sql_error(&e))?;
    }
    // The standby's row in pg_stat_replication: its connection comes from its tunnel
    // address, which is the host of its URL.
    let standby_host = url::Url::parse(&target.standby.url).ok().and_then(|u| {
        u.host_str()
            .map(|h| h.trim_matches(|c| c == '[' || c == ']').to_owned())
    });
    let rows = sqlx::query("SELECT host(client_addr), state FROM pg_stat_replication")
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| sql_error(&e))?;
    figures.sender_state = rows
        .iter()
        .find(|r| r.get::<Option<String>, _>(0) == standby_host)
        .or(rows.first())
        .map(|r| r.get::<Option<String>, _>(1).unwrap_or_default());
    let slots = sqlx::query(
        "SELECT slot_name::text, active, wal_status FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY slot_name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| sql_error(&e))?;
    figures.slots = slots
        .iter()
        .map(|r| Slot {
            name: r.get(0),
            active: r.get(1),
            wal_status: r.get(2),
        })
        .collect();
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
    conn: &mut PgConnection,
    table: &str,
    site: &str,
    node: &str,
) -> Result<(), sqlx::Error> {
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {table} (site text PRIMARY KEY, node text NOT NULL, at bigint NOT NULL)"
    );
    sqlx::query(&create).execute(&mut *conn).await?;
    let upsert = format!(
        "INSERT INTO {table} (site, node, at) VALUES ($1, $2, (EXTRACT(epoch FROM clock_timestamp()) * 1000)::bigint) \
         ON CONFLICT (site) DO UPDATE SET node = EXCLUDED.node, at = EXCLUDED.at"
    );
    sqlx::query(&upsert)
        .bind(site.to_owned())
        .bind(node.to_owned())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn promote(side: &Endpoint, database: &str, within: Duration) -> Result<(), String> {
    let mut conn = connect(side, database).await?;
    let secs = within.as_secs().clamp(1, 3600) as i32;
    let done: bool = sqlx::query_scalar("SELECT pg_promote(wait => true, wait_seconds => $1)")
        .bind(secs)
        .fetch_one(&mut conn)
        .await
        .map_err(|e| {
            format!(
                "{}: pg_promote: {}",
                describe(side, database),
                sql_error(&e)
            )
        })?;
    let _ = conn.close().await;
    if done {
        Ok(())
    } else {
        Err(format!(
            "{}: pg_promote did not finish within {secs} s",
            describe(side, database)
        ))
    }
}

pub async fn demote(side: &Endpoint, database: &str) -> Result<(), String> {
    let mut conn = connect(side, database).await?;
    let what = describe(side, database);
    sqlx::raw_sql("ALTER SYSTEM SET default_transaction_read_only = on")
        .execute(&mut conn)
        .await
        .map_err(|e| format!("{what}: {}", sql_error(&e)))?;
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut conn)
        .await
        .map_err(|e| format!("{what}: {}", sql_error(&e)))?;
    let _ = conn.close().await;
    Ok(())
}

pub async fn position(side: &Endpoint, database: &str) -> Result<String, String> {
    let mut conn = connect(side, database).await?;
    let lsn: String = sqlx::query_scalar(
        "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| format!("{}: {}", describe(side, database), sql_error(&e)))?;
    let _ = conn.close().await;
    Ok(lsn)
}

pub async fn wait_for(
    side: &Endpoint,
    database: &str,
    lsn: &str,
    within: Duration,
) -> Result<(), String> {
    let mut conn = connect(side, database).await?;
    let what = describe(side, database);
    let deadline = Instant::now() + within;
    loop {
        let done: Option<bool> = sqlx::query_scalar(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END >= $1::pg_lsn",
        )
        .bind(lsn.to_owned())
        .fetch_one(&mut conn)
        .await
        .map_err(|e| format!("{what}: {}", sql_error(&e)))?;
        if done == Some(true) {
            let _ = conn.close().await;
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what}: not caught up to {lsn} within {} s",
                within.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

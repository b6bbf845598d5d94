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

pub async fn execute(side: &Endpoint, database: &str, sql: &str) -> Result<String, String> {
    let mut conn = connect(side, database).await?;
    let what = describe(side, database);
    // The simple query protocol: several statements at once, every value as text.
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
    let answer = execute(
        side,
        database,
        "SELECT pg_is_in_recovery() AND pg_last_wal_receive_lsn() IS NOT NULL \
         AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()",
    )
    .await?;
    Ok(super::truthy(&answer))
}

/// What `pg_controldata` says of a stopped cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub state: String,
    pub timeline: Option<u32>,
    pub wal_log_hints: bool,
    pub checksums: bool,
    /// "Latest checkpoint location": of a cluster shut down cleanly, the last WAL record
    /// it wrote.
    pub checkpoint: Option<String>,
}

impl Control {
    /// `pg_controldata`'s text, read by label.
    pub fn parse(text: &str) -> Control {
        let field = |label: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(label))
                .map(|v| v.trim_start_matches(':').trim().to_owned())
        };
        Control {
            state: field("Database cluster state").unwrap_or_default(),
            timeline: field("Latest checkpoint's TimeLineID").and_then(|t| t.parse().ok()),
            wal_log_hints: field("wal_log_hints setting").as_deref() == Some("on"),
            checksums: field("Data page checksum version").is_some_and(|v| v != "0"),
            checkpoint: field("Latest checkpoint location"),
        }
    }

    /// The cluster last ran as a primary (a standby says "… in recovery").
    pub fn was_primary(&self) -> bool {
        !self.state.contains("recovery")
    }
}

/// The last position of the primary shut down cleanly in `data_dir` (its shutdown
/// checkpoint, which a clean shutdown sends to the connected standbys before it ends):
/// what a standby must have replayed to hold every commit.
pub async fn stopped_position(data_dir: &std::path::Path) -> Result<String, String> {
    let bin = bin_dir(data_dir)?;
    let dir = data_dir.to_string_lossy().into_owned();
    let control =
        Control::parse(&as_owner(data_dir, &bin.join("pg_controldata"), &[&dir], &[]).await?);
    if control.state != "shut down" {
        return Err(format!(
            "{} is not a primary shut down cleanly (its state: {})",
            data_dir.display(),
            control.state
        ));
    }
    control.checkpoint.ok_or_else(|| {
        format!(
            "pg_controldata of {} names no checkpoint",
            data_dir.display()
        )
    })
}

/// The server binaries of the PostgreSQL version whose data is in `data_dir`.
fn bin_dir(data_dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let version = std::fs::read_to_string(data_dir.join("PG_VERSION")).map_err(|e| {
        format!(
            "{}: not a PostgreSQL data directory ({e})",
            data_dir.display()
        )
    })?;
    let dir = std::path::Path::new("/usr/lib/postgresql")
        .join(version.trim())
        .join("bin");
    if dir.join("pg_rewind").is_file() {
        Ok(dir)
    } else {
        Err(format!(
            "{} has no pg_rewind (install postgresql-{})",
            dir.display(),
            version.trim()
        ))
    }
}

/// Runs a PostgreSQL program as the owner of the data directory (it refuses root).
async fn as_owner(
    data_dir: &std::path::Path,
    program: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let mut cmd = tokio::process::Command::new("setpriv");
    cmd.arg(format!("--reuid={}", meta.uid()))
        .arg(format!("--regid={}", meta.gid()))
        .arg("--clear-groups")
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", program.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "{} failed ({}): {}",
            program.file_name().unwrap_or_default().to_string_lossy(),
            out.status,
            text.trim()
        ))
    }
}

/// A libpq connection string value, quoted.
fn conninfo_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Makes the stopped PostgreSQL in `data_dir` a streaming standby of `master`. A former
/// primary is rewound first (`pg_rewind`; it needs `wal_log_hints` or data checksums),
/// after its data directory was copied into `keep_aside` (refused when that file system
/// lacks the room). Writes `standby.signal` and `primary_conninfo`; the caller starts the
/// server. Returns what was done, in words.
pub async fn rejoin(
    data_dir: &std::path::Path,
    master: &Endpoint,
    node: &str,
    keep_aside: &std::path::Path,
    within: Duration,
) -> Result<String, String> {
    let run = rejoin_steps(data_dir, master, node, keep_aside);
    tokio::time::timeout(within, run)
        .await
        .unwrap_or_else(|_| Err(format!("not done within {} s", within.as_secs())))
}

async fn rejoin_steps(
    data_dir: &std::path::Path,
    master: &Endpoint,
    node: &str,
    keep_aside: &std::path::Path,
) -> Result<String, String> {
    let bin = bin_dir(data_dir)?;
    if let Ok(pid) = std::fs::read_to_string(data_dir.join("postmaster.pid")) {
        let pid = pid.lines().next().unwrap_or("").trim().to_owned();
        if std::path::Path::new("/proc").join(&pid).exists() {
            return Err(format!(
                "PostgreSQL still runs on {} (pid {pid}): stop it first (the demote playbook does)",
                data_dir.display()
            ));
        }
    }
    let dir = data_dir.to_string_lossy().into_owned();
    let control =
        Control::parse(&as_owner(data_dir, &bin.join("pg_controldata"), &[&dir], &[]).await?);
    let url = url::Url::parse(&master.url).map_err(|e| format!("bad url: {e}"))?;
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_owned();
    let port = url.port().unwrap_or(5432).to_string();
    let user = url.username().to_owned();
    let password = master.password.clone().unwrap_or_default();
    let mut done = Vec::new();
    let rewind_target = format!("--target-pgdata={dir}");
    let rewind_source = format!(
        "--source-server=host={} port={} user={} dbname=postgres connect_timeout=10",
        conninfo_value(&host),
        port,
        conninfo_value(&user)
    );
    let mut rewind = control.was_primary();
    if rewind {
        // A master promoted moments ago still shows its old timeline in its control file
        // until its first checkpoint, and pg_rewind would then see nothing to rewind.
        execute(master, "postgres", "CHECKPOINT")
            .await
            .map_err(|e| format!("a CHECKPOINT on {} before pg_rewind: {e}", master.node))?;
        // A clean switchover leaves nothing to rewind (this server's history is a prefix of
        // the master's): then neither the copy nor the rewind is needed.
        let needless = (control.wal_log_hints || control.checksums)
            && as_owner(
                data_dir,
                &bin.join("pg_rewind"),
                &["--dry-run", &rewind_target, &rewind_source],
                &[("PGPASSWORD", &password)],
            )
            .await
            .is_ok_and(|out| out.contains("no rewind required"));
        if needless {
            rewind = false;
            done.push(format!(
                "no rewind needed: its history is a prefix of {}'s (a clean switchover)",
                master.node
            ));
        }
    }
    if rewind {
        if !control.wal_log_hints && !control.checksums {
            return Err(format!(
                "{} was a primary and needs pg_rewind, which needs wal_log_hints = on or data checksums (neither is on): \
                 rebuild it from {} with pg_basebackup, and set wal_log_hints = on",
                data_dir.display(),
                master.node
            ));
        }
        let size = tree_size(data_dir);
        let room = rustix::fs::statvfs(
            keep_aside
                .ancestors()
                .find(|p| p.exists())
                .unwrap_or(std::path::Path::new("/")),
        )
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize.max(1)))
        .unwrap_or(0);
        if room < size.saturating_add(size / 10) {
            return Err(format!(
                "not rewinding: keeping the old data directory ({} MB) aside needs room in {} ({} MB free). \
                 Free space there, or copy {} away yourself and rebuild this standby from {}",
                size / 1_000_000,
                keep_aside.display(),
                room / 1_000_000,
                data_dir.display(),
                master.node
            ));
        }
        if let Some(parent) = keep_aside.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let out = tokio::process::Command::new("cp")
            .arg("-a")
            .arg(data_dir)
            .arg(keep_aside)
            .output()
            .await
            .map_err(|e| format!("cp: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "keeping {} aside in {} failed: {}",
                data_dir.display(),
                keep_aside.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        done.push(format!(
            "the old data directory is kept in {}",
            keep_aside.display()
        ));
        // pg_rewind copies the source's configuration files too: this server keeps its own.
        let own: Vec<(std::path::PathBuf, Vec<u8>)> = CONFIG_FILES
            .iter()
            .map(|f| data_dir.join(f))
            .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
            .collect();
        let out = as_owner(
            data_dir,
            &bin.join("pg_rewind"),
            &[&rewind_target, &rewind_source],
            &[("PGPASSWORD", &password)],
        )
        .await?;
        for (path, bytes) in &own {
            write_owned(data_dir, path, bytes)?;
        }
        let last = out.lines().last().unwrap_or("").trim().to_owned();
        done.push(format!("pg_rewind from {}: {last}", master.node));
    }
    // Follow the master: standby.signal and primary_conninfo, owned like the rest.
    let auto = data_dir.join("postgresql.auto.conf");
    let old = std::fs::read_to_string(&auto).unwrap_or_default();
    let mut text: String = old
        .lines()
        .filter(|l| {
            let k = l.trim_start();
            !(k.starts_with("primary_conninfo") || k.starts_with("primary_slot_name"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let conninfo = format!(
        "host={} port={} user={} password={} application_name={}",
        conninfo_value(&host),
        port,
        conninfo_value(&user),
        conninfo_value(&password),
        conninfo_value(node)
    );
    text.push_str(&format!(
        "primary_conninfo = '{}'\n",
        conninfo.replace('\'', "''")
    ));
    write_owned(data_dir, &auto, text.as_bytes())?;
    write_owned(data_dir, &data_dir.join("standby.signal"), b"")?;
    done.push(format!(
        "standby.signal and primary_conninfo written: it streams from {} at {host}:{port} once started",
        master.node
    ));
    Ok(done.join("; "))
}

/// Configuration files a data directory may hold, kept across a rewind.
const CONFIG_FILES: &[&str] = &[
    "postgresql.conf",
    "postgresql.auto.conf",
    "pg_hba.conf",
    "pg_ident.conf",
];

/// Writes `file` with the data directory's owner and mode 0600.
fn write_owned(
    data_dir: &std::path::Path,
    file: &std::path::Path,
    bytes: &[u8],
) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let meta = std::fs::metadata(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let tmp = file.with_extension("orch-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::io::Write::write_all(&mut f, bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, file).map_err(|e| format!("{}: {e}", file.display()))
}

/// The bytes under `dir` (not following symlinks).
fn tree_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => todo.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod control_tests {
    use super::Control;

    #[test]
    fn pg_controldata_is_read_by_label() {
        let text = "pg_control version number:            1300\n\
                    Database cluster state:               shut down\n\
                    Latest checkpoint location:           0/3023BA8\n\
                    Latest checkpoint's REDO location:    0/3023B30\n\
                    Latest checkpoint's TimeLineID:       1\n\
                    wal_log_hints setting:                on\n\
                    Data page checksum version:           0\n";
        let c = Control::parse(text);
        assert_eq!(c.state, "shut down");
        assert_eq!(c.timeline, Some(1));
        assert_eq!(c.checkpoint.as_deref(), Some("0/3023BA8"));
        assert!(c.wal_log_hints && !c.checksums && c.was_primary());
        let standby =
            Control::parse("Database cluster state:               shut down in recovery\n");
        assert!(!standby.was_primary() && !standby.wal_log_hints);
    }
}

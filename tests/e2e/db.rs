//! Database replication checks against real servers replicating through orch's tunnel:
//! PostgreSQL (primary, and a standby made with pg_basebackup) and MariaDB (primary and a
//! GTID replica), each in its node's lab host, listening on the node's tunnel address.

use orch_tests::dbserver::{self, Servers};
use orch_tests::fixture::{write_secret, Pair};
use orch_tests::lab::{Host, Lab};
use orch_tests::{eventually, orch, prerequisites};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const ORCH_PW: &str = "orch-db-pw-4f1c";
const REPL_PW: &str = "repl-pw-77aa";

/// Two lab hosts with their agents, the tunnel up, and `extra` in the config; the DB
/// password file beside each node's config.
fn two_nodes(test: &str, extra: &str) -> (Lab, Pair, Host, Host) {
    let mut lab = Lab::new(test);
    let extra = extra.replace("@LAB@", &lab.dir().display().to_string());
    let pair = Pair::new(lab.dir(), &extra);
    // Each agent serves Prometheus metrics on its own host's loopback.
    for node in ["alice", "bob"] {
        let path = pair.config(node);
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "state_dir = \"state\"\n",
            "state_dir = \"state\"\nmetrics = \"127.0.0.1:9477\"\n",
        );
        std::fs::write(&path, text).unwrap();
    }
    for dir in [&pair.alice, &pair.bob] {
        write_secret(&dir.join("db.pass"), ORCH_PW);
        write_secret(&dir.join("wrong.pass"), "not-the-password-x9");
    }
    let alice = lab.host("alice", &["192.0.2.1/24"]);
    let bob = lab.host("bob", &["192.0.2.2/24"]);
    pair.spawn_agents(&mut lab, &[alice.clone(), bob.clone()]);
    eventually("the tunnel comes up", Duration::from_secs(20), || {
        lab.ping(&alice, "198.51.100.2")
    });
    (lab, pair, alice, bob)
}

/// `orch check SITE --json` run on `host` with `config`: exit code and document.
fn check(lab: &Lab, host: &Host, config: &Path) -> (i32, Value) {
    let out = lab.run(
        host,
        &[
            orch::bin().to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "check",
            "alice-web",
            "--json",
        ],
    );
    let (stdout, stderr) = orch::text(&out);
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("orch check printed no JSON ({e}): {stdout}\n{stderr}"));
    (orch::code(&out), doc)
}

/// Waits until the check of the site's one database satisfies `ok`.
fn until(
    lab: &Lab,
    host: &Host,
    config: &Path,
    what: &str,
    within: Duration,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, within, || {
        let (_, doc) = check(lab, host, config);
        let db = doc["databases"][0].clone();
        if ok(&db) {
            Ok(db)
        } else {
            Err(db.to_string())
        }
    })
}

fn orch_db(lab: &Lab, host: &Host, config: &Path, args: &[&str]) -> String {
    let mut argv = vec![
        orch::bin().to_str().unwrap().to_owned(),
        "--config".into(),
        config.to_str().unwrap().into(),
        "db".into(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = lab.run(host, &argv);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "orch db {args:?}: {stdout}\n{stderr}");
    stdout.trim().to_owned()
}

/// The node's history events of `kind` as (outcome, summary).
fn events(lab: &Lab, host: &Host, config: &Path, kind: &str) -> Vec<(String, String)> {
    let out = lab.run(
        host,
        &[
            orch::bin().to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "history",
            "alice-web",
            "--limit",
            "500",
            "--json",
        ],
    );
    orch::text(&out)
        .0
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == kind)
        .map(|e| {
            (
                e["outcome"].as_str().unwrap_or_default().to_owned(),
                e["summary"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// A config beside `config` whose database password is the wrong one.
fn wrong_password_config(config: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(config).unwrap().replace(
        "password_file = \"db.pass\"",
        "password_file = \"wrong.pass\"",
    );
    let path = config.with_file_name("wrong.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn assert_wrong_credentials_said_clearly(lab: &Lab, host: &Host, config: &Path, refused: &str) {
    let wrong = wrong_password_config(config);
    let out = lab.run(
        host,
        &[
            orch::bin().to_str().unwrap(),
            "--config",
            wrong.to_str().unwrap(),
            "check",
            "alice-web",
        ],
    );
    let (stdout, stderr) = orch::text(&out);
    let all = format!("{stdout}{stderr}");
    assert_eq!(orch::code(&out), 1, "{all}");
    assert!(
        all.contains("database app on alice at 198.51.100.1") && all.contains(refused),
        "the error names the database and node and says why: {all}"
    );
    assert!(
        !all.contains("not-the-password") && !all.contains(ORCH_PW),
        "no secret in any output: {all}"
    );
}

const PG_SITE: &str = r#"
[[sites.alice-web.database]]
name = "app"
kind = "postgres"
url = "postgres://orch@{node}:5432/app"
password_file = "db.pass"
max_lag = "15s"
interval = "2s"

[[sites.alice-web.sync]]
name = "www"
schedule = "0 3 * * *"
path = { alice = "@LAB@/alice-www", bob = "@LAB@/bob-www" }
"#;

#[test]
fn postgres_streaming_over_the_tunnel_is_checked_lag_alerts_and_promote_works() {
    let programs = dbserver::pg_programs();
    let mut needed: Vec<&str> = programs.iter().map(String::as_str).collect();
    needed.extend(["ip", "ping"]);
    if !prerequisites(
        "postgres_streaming_over_the_tunnel_is_checked_lag_alerts_and_promote_works",
        true,
        &needed,
    ) {
        return;
    }
    let (mut lab, pair, alice, bob) = two_nodes("db-postgres", PG_SITE);
    let mut servers = Servers::new();
    let pg_alice = servers.postgres_primary(&mut lab, &alice, "198.51.100.1", ORCH_PW, REPL_PW);
    let pg_bob = servers.postgres_standby(&mut lab, &bob, "198.51.100.1", "198.51.100.2", REPL_PW);
    servers.psql(
        &lab,
        &alice,
        &pg_alice,
        "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000);",
    );
    let (a_conf, b_conf) = (pair.config("alice"), pair.config("bob"));

    // Healthy: streaming, no lag, and the heartbeat the master's agent writes is fresh.
    let db = until(
        &lab,
        &alice,
        &a_conf,
        "a healthy check with a fresh heartbeat",
        Duration::from_secs(60),
        |db| db["verdict"] == "healthy" && db["figures"]["heartbeat_age_ms"].is_i64(),
    );
    eprintln!("healthy: {db}");
    let f = &db["figures"];
    assert_eq!(f["wal_receiver"], "streaming");
    assert_eq!(f["sender_state"], "streaming");
    assert!(f["lag_bytes"].as_i64().unwrap() < 1 << 20, "{f}");
    assert!(f["replay_lag_seconds"].as_f64().unwrap() < 15.0, "{f}");
    assert!(f["heartbeat_age_ms"].as_i64().unwrap() < 15_000, "{f}");
    assert_eq!(f["slots"][0]["wal_status"], "reserved");
    assert_eq!(db["master"]["role"], "primary");
    assert_eq!(db["standby"]["role"], "standby");
    // The agent's own checks reach `orch status` (on the standby's node too).
    eventually(
        "bob's agent reports it healthy",
        Duration::from_secs(30),
        || {
            let status = orch::status_json(&b_conf)?;
            match status["databases"][0]["verdict"].as_str() {
                Some("healthy") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );

    // Everything is in the metrics: a push, the database, the tunnel, the site.
    std::fs::create_dir_all(lab.dir().join("alice-www")).unwrap();
    std::fs::write(lab.dir().join("alice-www/index.html"), "hello\n").unwrap();
    std::fs::create_dir_all(lab.dir().join("bob-www")).unwrap();
    let out = orch::run(&["--config", a_conf.to_str().unwrap(), "push", "alice-web"]);
    assert_eq!(orch::code(&out), 0, "{:?}", orch::text(&out));
    eventually(
        "alice's agent has checked the database",
        Duration::from_secs(30),
        || {
            let status = orch::status_json(&a_conf)?;
            match status["databases"][0]["figures"]["heartbeat_age_ms"].as_i64() {
                Some(_) if status["databases"][0]["verdict"] == "healthy" => Ok(()),
                _ => Err(format!("{:#}", status["databases"])),
            }
        },
    );
    scrape_every_family(&lab, &alice);

    assert_wrong_credentials_said_clearly(&lab, &alice, &a_conf, "password authentication failed");

    // Lag: replay paused on the standby while the master writes.
    let alerts_before = events(&lab, &alice, &a_conf, "alert").len();
    servers.psql(&lab, &bob, &pg_bob, "SELECT pg_wal_replay_pause();");
    for _ in 0..3 {
        servers.psql(
            &lab,
            &alice,
            &pg_alice,
            "INSERT INTO t SELECT generate_series(1, 5000);",
        );
    }
    let db = until(
        &lab,
        &alice,
        &a_conf,
        "the paused replay shows as lag past max_lag",
        Duration::from_secs(60),
        |db| db["verdict"] == "lagging" && db["problems"].to_string().contains("max_lag"),
    );
    eprintln!("lagging: {db}");
    assert_eq!(db["figures"]["replay_paused"], true);
    assert!(db["figures"]["lag_bytes"].as_i64().unwrap() > 0, "{db}");
    let problems = db["problems"].to_string();
    assert!(problems.contains("replay is paused"), "{problems}");
    assert!(problems.contains("max_lag"), "{problems}");
    eventually("the agent raises an alert", Duration::from_secs(30), || {
        let alerts = events(&lab, &alice, &a_conf, "alert");
        match alerts
            .iter()
            .skip(alerts_before)
            .find(|(_, s)| s.contains("lagging"))
        {
            Some(_) => Ok(()),
            None => Err(format!("{alerts:?}")),
        }
    });
    servers.psql(&lab, &bob, &pg_bob, "SELECT pg_wal_replay_resume();");
    until(
        &lab,
        &alice,
        &a_conf,
        "healthy again after the replay resumes",
        Duration::from_secs(60),
        |db| db["verdict"] == "healthy",
    );
    eventually("the alert is resolved", Duration::from_secs(30), || {
        let alerts = events(&lab, &alice, &a_conf, "alert");
        match alerts
            .iter()
            .skip(alerts_before)
            .find(|(_, s)| s.starts_with("RESOLVED"))
        {
            Some(_) => Ok(()),
            None => Err(format!("{alerts:?}")),
        }
    });

    // Broken: the standby's WAL receiver is cut.
    let conninfo = servers.psql(&lab, &bob, &pg_bob, "SHOW primary_conninfo;");
    servers.psql_each(
        &lab,
        &bob,
        &pg_bob,
        &[
            "ALTER SYSTEM SET primary_conninfo = ''",
            "SELECT pg_reload_conf()",
        ],
    );
    let db = until(
        &lab,
        &alice,
        &a_conf,
        "a cut WAL receiver shows as broken",
        Duration::from_secs(30),
        |db| db["verdict"] == "broken",
    );
    assert!(
        db["problems"].to_string().contains("no WAL receiver"),
        "{db}"
    );
    let (code, _) = check(&lab, &alice, &a_conf);
    assert_eq!(code, 1, "orch check fails while replication is broken");
    servers.psql_each(
        &lab,
        &bob,
        &pg_bob,
        &[
            &format!(
                "ALTER SYSTEM SET primary_conninfo = '{}'",
                conninfo.replace('\'', "''")
            ),
            "SELECT pg_reload_conf()",
        ],
    );
    until(
        &lab,
        &alice,
        &a_conf,
        "streaming again",
        Duration::from_secs(60),
        |db| db["verdict"] == "healthy",
    );

    // Switchover: the master's position reached by the standby, then promote.
    let lsn = orch_db(&lab, &bob, &b_conf, &["position", "alice-web", "app"]);
    assert!(lsn.contains('/'), "an LSN: {lsn}");
    orch_db(
        &lab,
        &bob,
        &b_conf,
        &["wait", "alice-web", "app", &lsn, "--timeout", "30s"],
    );
    let said = orch_db(&lab, &bob, &b_conf, &["promote", "alice-web", "app"]);
    assert!(said.contains("on bob is writable"), "{said}");
    assert_eq!(
        servers.psql(&lab, &bob, &pg_bob, "SELECT pg_is_in_recovery();"),
        "f"
    );
    servers.psql(
        &lab,
        &bob,
        &pg_bob,
        "CREATE TABLE after_promote (x int); INSERT INTO after_promote VALUES (1);",
    );
    let db = until(
        &lab,
        &alice,
        &a_conf,
        "two primaries are reported",
        Duration::from_secs(20),
        |db| db["verdict"] == "broken",
    );
    assert!(
        db["problems"]
            .to_string()
            .contains("standby bob is a primary"),
        "{db}"
    );
}

const MARIADB_SITE: &str = r#"
[[sites.alice-web.database]]
name = "app"
kind = "mysql"
url = "mysql://orch@{node}:3306/app"
password_file = "db.pass"
max_lag = "15s"
interval = "2s"
"#;

#[test]
fn mariadb_replication_over_the_tunnel_is_checked_and_promote_works() {
    let mut needed = dbserver::MARIADB_PROGRAMS.to_vec();
    needed.extend(["ip", "ping"]);
    if !prerequisites(
        "mariadb_replication_over_the_tunnel_is_checked_and_promote_works",
        true,
        &needed,
    ) {
        return;
    }
    let (mut lab, pair, alice, bob) = two_nodes("db-mariadb", MARIADB_SITE);
    let mut servers = Servers::new();
    let my_alice = servers.mariadb_primary(&mut lab, &alice, "198.51.100.1", ORCH_PW, REPL_PW);
    let my_bob = servers.mariadb_replica(&mut lab, &bob, "198.51.100.1", "198.51.100.2", REPL_PW);
    servers.mariadb(
        &lab,
        &alice,
        &my_alice,
        "CREATE TABLE app.t (x INT PRIMARY KEY); INSERT INTO app.t VALUES (1), (2), (3);",
    );
    let (a_conf, b_conf) = (pair.config("alice"), pair.config("bob"));

    let db = until(
        &lab,
        &alice,
        &a_conf,
        "a healthy check with a fresh heartbeat",
        Duration::from_secs(60),
        |db| db["verdict"] == "healthy" && db["figures"]["heartbeat_age_ms"].is_i64(),
    );
    eprintln!("healthy: {db}");
    let f = &db["figures"];
    assert_eq!(f["io_running"], "Yes");
    assert_eq!(f["sql_running"], "Yes");
    // MariaDB counts from the event it is applying in whole seconds, so a
    // heartbeat row applied as the check runs can read 1 s on a caught-up
    // replica; what matters is that it is a figure, and a small one.
    assert!(
        f["seconds_behind"].as_i64().is_some_and(|s| s <= 1),
        "a caught-up replica is 0 or 1 s behind: {f}"
    );
    assert!(f["heartbeat_age_ms"].as_i64().unwrap() < 15_000, "{f}");
    assert_eq!(db["standby"]["read_only"], true);
    assert_eq!(db["master"]["read_only"], false);
    assert!(
        db["master"]["position"]
            .as_str()
            .unwrap()
            .starts_with("0-1-"),
        "{db}"
    );
    // Healthy says the threads run and the lag is small, not that the last insert is
    // applied yet (the standby may be a transaction or two behind): wait for the rows.
    eventually(
        "the rows came through the tunnel",
        Duration::from_secs(30),
        || match servers.mariadb(&lab, &bob, &my_bob, "SELECT COUNT(*) FROM app.t") {
            n if n == "3" => Ok(()),
            n => Err(format!("{n} rows on the standby")),
        },
    );

    // The human forms: `orch check` and the agent's `orch status`.
    let out = lab.run(
        &alice,
        &[
            orch::bin().to_str().unwrap(),
            "--config",
            a_conf.to_str().unwrap(),
            "check",
            "alice-web",
        ],
    );
    let (text, _) = orch::text(&out);
    eprintln!("{text}");
    assert!(
        text.contains("database alice-web/app (mysql): HEALTHY (now)"),
        "{text}"
    );
    assert!(
        ["0", "1"]
            .iter()
            .any(|s| text.contains(&format!("IO thread Yes, SQL thread Yes, {s} s behind"))),
        "{text}"
    );
    eventually(
        "the agent's status shows the check",
        Duration::from_secs(30),
        || {
            let out = lab.run(
                &alice,
                &[
                    orch::bin().to_str().unwrap(),
                    "--config",
                    a_conf.to_str().unwrap(),
                    "status",
                ],
            );
            let text = orch::text(&out).0;
            if text.contains("database alice-web/app (mysql): HEALTHY (checked") {
                Ok(())
            } else {
                Err(text)
            }
        },
    );

    assert_wrong_credentials_said_clearly(&lab, &alice, &a_conf, "Access denied for user 'orch'");

    // Broken: replication stopped on the replica.
    servers.mariadb(&lab, &bob, &my_bob, "STOP SLAVE;");
    let db = until(
        &lab,
        &alice,
        &a_conf,
        "stopped replication shows as broken",
        Duration::from_secs(30),
        |db| db["verdict"] == "broken",
    );
    let problems = db["problems"].to_string();
    assert!(problems.contains("IO thread is not running"), "{problems}");
    assert!(problems.contains("NULL"), "{problems}");
    assert!(db["figures"]["seconds_behind"].is_null(), "{db}");
    servers.mariadb(&lab, &bob, &my_bob, "START SLAVE;");
    until(
        &lab,
        &alice,
        &a_conf,
        "replicating again",
        Duration::from_secs(30),
        |db| db["verdict"] == "healthy",
    );

    // Switchover: wait for the master's GTID position, then promote.
    servers.mariadb(&lab, &alice, &my_alice, "INSERT INTO app.t VALUES (4);");
    let gtid = orch_db(&lab, &bob, &b_conf, &["position", "alice-web", "app"]);
    orch_db(
        &lab,
        &bob,
        &b_conf,
        &["wait", "alice-web", "app", &gtid, "--timeout", "30s"],
    );
    assert_eq!(
        servers.mariadb(&lab, &bob, &my_bob, "SELECT COUNT(*) FROM app.t"),
        "4"
    );
    let said = orch_db(&lab, &bob, &b_conf, &["promote", "alice-web", "app"]);
    assert!(said.contains("on bob is writable"), "{said}");
    assert_eq!(
        servers.mariadb(&lab, &bob, &my_bob, "SELECT @@global.read_only"),
        "0"
    );
    assert_eq!(
        servers.mariadb(&lab, &bob, &my_bob, "SHOW SLAVE STATUS"),
        "",
        "no replication left on the promoted node"
    );
    let db = until(
        &lab,
        &alice,
        &a_conf,
        "the promoted replica is reported",
        Duration::from_secs(20),
        |db| db["verdict"] == "broken",
    );
    assert!(
        db["problems"]
            .to_string()
            .contains("standby bob is a primary"),
        "{db}"
    );
    // Demote puts the old master's database in read-only mode.
    let said = orch_db(&lab, &alice, &a_conf, &["demote", "alice-web", "app"]);
    assert!(said.contains("on alice refuses writes"), "{said}");
    assert_eq!(
        servers.mariadb(&lab, &alice, &my_alice, "SELECT @@global.read_only"),
        "1"
    );
}

/// `GET url` from `host`: (status code, body).
fn http_get(lab: &Lab, host: &Host, url: &str) -> (u16, String) {
    let code = format!(
        "import urllib.request, urllib.error\n\
         try:\n    r = urllib.request.urlopen('{url}', timeout=5); print(r.status); print(r.read().decode(), end='')\n\
         except urllib.error.HTTPError as e:\n    print(e.code)"
    );
    let out = lab.run(host, &["/usr/bin/python3", "-c", &code]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, body) = text.split_once('\n').unwrap_or((text.as_str(), ""));
    let status = status
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    (status, body.to_owned())
}

/// Scrapes alice's metrics endpoint: well-formed text format, and a sample of every
/// family the agent promises (tunnel, peer, pushes, databases, failover, outbox).
fn scrape_every_family(lab: &Lab, alice: &Host) {
    let (code, body) = http_get(lab, alice, "http://127.0.0.1:9477/metrics");
    assert_eq!(code, 200, "{body}");
    let mut typed = std::collections::BTreeSet::new();
    let mut sampled = std::collections::BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["gauge", "counter"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_owned()), "{name} declared twice");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.starts_with("orch_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        assert!(typed.contains(name), "{name} sampled before its # TYPE");
        if series.contains('{') {
            assert!(series.ends_with('}'), "{line}");
        }
        sampled.insert(series.to_owned(), value);
    }
    let families = [
        "orch_agent_info",
        "orch_agent_uptime_seconds",
        "orch_tunnel_up",
        "orch_tunnel_last_handshake_age_seconds",
        "orch_tunnel_last_received_age_seconds",
        "orch_tunnel_received_bytes_total",
        "orch_tunnel_sent_bytes_total",
        "orch_tunnel_handshakes_total",
        "orch_tunnel_roams_total",
        "orch_tunnel_rejected_packets_total",
        "orch_peer_reachable",
        "orch_push_last_success",
        "orch_push_last_timestamp_seconds",
        "orch_push_last_duration_seconds",
        "orch_push_last_sent_bytes",
        "orch_push_last_tree_bytes",
        "orch_push_last_changed_files",
        "orch_push_last_deletions",
        "orch_database_healthy",
        "orch_database_replication_lag_seconds",
        "orch_database_replication_lag_bytes",
        "orch_database_heartbeat_age_seconds",
        "orch_database_check_timestamp_seconds",
        "orch_site_master",
        "orch_site_epoch",
        "orch_failover_state",
        "orch_failover_armed",
        "orch_outbox_messages",
    ];
    for family in families {
        assert!(
            sampled.keys().any(|s| s.split('{').next() == Some(family)),
            "no sample of {family} in:\n{body}"
        );
    }
    let value = |series: &str| {
        *sampled
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
    };
    assert_eq!(value(r#"orch_tunnel_up{peer="bob"}"#), 1.0);
    assert_eq!(value(r#"orch_peer_reachable{peer="bob"}"#), 1.0);
    assert_eq!(
        value(r#"orch_push_last_success{site="alice-web",job="www"}"#),
        1.0
    );
    assert_eq!(
        value(r#"orch_push_last_changed_files{site="alice-web",job="www"}"#),
        1.0
    );
    assert_eq!(
        value(r#"orch_database_healthy{site="alice-web",database="app",engine="postgres"}"#),
        1.0
    );
    assert_eq!(value(r#"orch_site_master{site="alice-web"}"#), 1.0);
    assert_eq!(value(r#"orch_site_master{site="bob-cloud"}"#), 0.0);
    assert_eq!(value(r#"orch_site_epoch{site="alice-web"}"#), 1.0);
    assert!(value(r#"orch_tunnel_received_bytes_total{peer="bob"}"#) > 0.0);
    let (code, _) = http_get(lab, alice, "http://127.0.0.1:9477/other");
    assert_eq!(code, 404);
}

//! Judging is unit-tested; rendering is pinned by golden files: OK and FAIL in
//! `orchestrator/tests/golden/`, WARN in `docs/report-sample.*` (the sample readers see).
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p orchestrator report` and read the diff.

use super::*;
use agent::db::{Engine, Figures, Report, Side, Slot};
use std::path::PathBuf;

const NOW: i64 = 1_795_667_400_000; // 2026-11-26 05:30 +01:00

fn push(job: &str, outcome: Outcome, errors: &[&str]) -> PushRun {
    PushRun {
        site: "alice-web".into(),
        job: job.into(),
        started_at: NOW - 90 * 60 * 1000,
        duration_ms: 12_400,
        outcome,
        files_total: 20_113,
        files_changed: 214,
        bytes_total: 8_412_000_000,
        bytes_sent: 18_950_000,
        deletions: 3,
        diverged: 0,
        errors: errors.iter().map(|e| e.to_string()).collect(),
    }
}

/// Two weeks of nightly pushes of both jobs (03:00 local, +01:00), growing, and the one
/// of `push()` this morning; `failed_days_ago` marks that night's www push failed.
fn recent(failed_days_ago: Option<i64>) -> Vec<PushRun> {
    let mut runs = Vec::new();
    for back in (1..14).rev() {
        for (job, scale) in [("mail", 1), ("www", 3)] {
            let mut p = push(job, Outcome::Ok, &[]);
            p.started_at = NOW - back * 86_400_000 - 150 * 60 * 1000;
            p.duration_ms = (4_000 + (14 - back) * 700) * scale;
            p.bytes_sent = (2_000_000 + (14 - back) * 900_000) * scale;
            if job == "www" && failed_days_ago == Some(back) {
                p.outcome = Outcome::Fail;
            }
            runs.push(p);
        }
    }
    runs.push(push("mail", Outcome::Ok, &[]));
    runs.push(push("www", Outcome::Ok, &[]));
    runs
}

fn postgres(verdict: Verdict, problems: &[&str]) -> Report {
    Report {
        site: "alice-web".into(),
        name: "app".into(),
        engine: Engine::Postgres,
        checked_at: NOW - 40_000,
        max_lag_seconds: 60.0,
        master: Side {
            node: "alice".into(),
            role: Some(db::Role::Primary),
            position: Some("0/3000148".into()),
            ..Side::default()
        },
        standby: Side {
            node: "bob".into(),
            role: Some(db::Role::Standby),
            read_only: Some(true),
            position: Some("0/3000148".into()),
            ..Side::default()
        },
        figures: Figures {
            wal_receiver: Some("streaming".into()),
            sender_state: Some("streaming".into()),
            lag_bytes: Some(if verdict == Verdict::Healthy {
                0
            } else {
                48_213_000
            }),
            replay_lag_seconds: Some(if verdict == Verdict::Healthy {
                0.0
            } else {
                95.0
            }),
            replay_paused: Some(false),
            slots: vec![Slot {
                name: "bob".into(),
                active: true,
                wal_status: Some("reserved".into()),
            }],
            heartbeat_age_ms: Some(if verdict == Verdict::Healthy {
                3_200
            } else {
                97_000
            }),
            ..Figures::default()
        },
        verdict,
        problems: problems.iter().map(|p| p.to_string()).collect(),
    }
}

fn mariadb() -> Report {
    Report {
        site: "alice-web".into(),
        name: "shop".into(),
        engine: Engine::Mysql,
        checked_at: NOW - 20_000,
        max_lag_seconds: 60.0,
        master: Side {
            node: "alice".into(),
            role: Some(db::Role::Primary),
            read_only: Some(false),
            position: Some("0-1-5123".into()),
            ..Side::default()
        },
        standby: Side {
            node: "bob".into(),
            role: Some(db::Role::Standby),
            read_only: Some(true),
            position: Some("0-1-5123".into()),
            ..Side::default()
        },
        figures: Figures {
            io_running: Some("Yes".into()),
            sql_running: Some("Yes".into()),
            seconds_behind: Some(0),
            replica_configured: Some(true),
            heartbeat_age_ms: Some(4_100),
            ..Figures::default()
        },
        verdict: Verdict::Healthy,
        problems: vec![],
    }
}

fn ok_facts() -> Facts {
    Facts {
        site: "alice-web".into(),
        cluster: "home".into(),
        node: "alice".into(),
        master: "alice".into(),
        standby: "bob".into(),
        epoch: 1,
        generated_at: NOW,
        utc_offset_secs: 3600,
        jobs: vec!["mail".into(), "www".into()],
        pushes: vec![
            push("mail", Outcome::Ok, &[]),
            push("www", Outcome::Ok, &[]),
        ],
        databases: vec![postgres(Verdict::Healthy, &[]), mariadb()],
        tunnel: Tunnel {
            peer: "bob".into(),
            up: true,
            peer_agent: true,
            endpoint: Some("203.0.113.7:51820".into()),
            last_handshake_secs: Some(74),
            rx_bytes: 61_200_000,
            tx_bytes: 9_870_000_000,
        },
        dns: Dns::Records(vec![
            DnsRecord {
                name: "www.example.org".into(),
                kind: "A".into(),
                values: vec!["198.51.100.20".into()],
            },
            DnsRecord {
                name: "_orch.alice-web.example.org".into(),
                kind: "TXT".into(),
                values: vec!["master=alice epoch=1".into()],
            },
        ]),
        failover_blockers: Vec::new(),
        recent: recent(None),
        space: Ok(vec![
            Space {
                job: "mail".into(),
                node: "bob".into(),
                path: "/srv/backup/alice-mail".into(),
                free_bytes: 1_210_000_000_000,
                total_bytes: 3_940_000_000_000,
            },
            Space {
                job: "www".into(),
                node: "bob".into(),
                path: "/srv/backup/alice-www".into(),
                free_bytes: 1_210_000_000_000,
                total_bytes: 3_940_000_000_000,
            },
        ]),
    }
}

/// Lagging database, one push with an error, low space: WARN.
fn warn_facts() -> Facts {
    let mut f = ok_facts();
    f.pushes[1] = push(
        "www",
        Outcome::Warn,
        &["uploads/2026/11/cat <1>.jpg: permission denied on the source"],
    );
    f.pushes[1].diverged = 2;
    f.databases[0] = postgres(
        Verdict::Lagging,
        &["replay lag 95.0 s is over max_lag 60 s"],
    );
    if let Ok(spaces) = &mut f.space {
        spaces[0].free_bytes = 310_000_000_000;
    }
    f
}

/// Broken replication, a failed push, the tunnel down: FAIL and not ready.
fn fail_facts() -> Facts {
    let mut f = ok_facts();
    f.pushes[0] = push(
        "mail",
        Outcome::Fail,
        &["refused: the push would delete 4 210 files (42%), over max_delete 25%; run `orch push alice-web --job mail --force` if that is intended"],
    );
    f.databases[1].verdict = Verdict::Broken;
    f.databases[1].figures.io_running = Some("No".into());
    f.databases[1].figures.seconds_behind = None;
    f.databases[1].problems = vec![
        "replica IO thread is No: error reconnecting to master 'repl@198.51.100.1:3306'".into(),
    ];
    f.tunnel.up = false;
    f.tunnel.peer_agent = false;
    f.tunnel.last_handshake_secs = Some(1_260);
    f.space = Err("the agent on bob does not answer".into());
    f
}

fn golden(name: &str, actual: &str) {
    golden_at(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name),
        actual,
    );
}

fn golden_at(path: &std::path::Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (create it with UPDATE_GOLDEN=1 and read it)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs from the rendering; if the change is intended, run with UPDATE_GOLDEN=1 \
         and review the diff.\n--- rendered ---\n{actual}",
        path.display()
    );
}

#[test]
fn ok_report_renders_as_the_golden_file() {
    let r = render(&ok_facts());
    assert_eq!(r.status, Status::Ok);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!(
        r.subject,
        "[orch] alice-web nightly replication: OK \u{2014} 428 files, 37.9 MB in 25 s"
    );
    golden(
        "report-ok.txt",
        &format!("Subject: {}\n\n{}", r.subject, r.text),
    );
    golden("report-ok.html", &r.html);
}

#[test]
fn warn_report_renders_as_the_golden_file_and_the_docs_sample() {
    let r = render(&warn_facts());
    assert_eq!(r.status, Status::Warn);
    assert!(
        r.subject.contains(": WARN \u{2014} 428 files"),
        "{}",
        r.subject
    );
    let sections: Vec<Section> = r.findings.iter().map(|f| f.section).collect();
    assert_eq!(
        sections,
        [Section::Pushes, Section::Databases, Section::Space]
    );
    assert!(r.text.contains("Failover readiness: READY"), "{}", r.text);
    // The WARN report's golden files are the sample in docs/, so that stays true.
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs");
    golden_at(
        &docs.join("report-sample.txt"),
        &format!("Subject: {}\n\n{}", r.subject, r.text),
    );
    golden_at(&docs.join("report-sample.html"), &r.html);
}

#[test]
fn fail_report_renders_as_the_golden_file_and_is_not_ready() {
    let f = fail_facts();
    let r = render(&f);
    assert_eq!(r.status, Status::Fail);
    let (ready, line) = readiness(&f, &r.findings);
    assert!(!ready);
    assert!(
        line.starts_with("NOT READY: push job mail failed"),
        "{line}"
    );
    assert!(line.contains("the tunnel to bob is down"), "{line}");
    // HTML special characters in data are escaped, never markup.
    assert!(
        r.html.contains("'repl@198.51.100.1:3306'") && !r.html.contains("<repl"),
        "{}",
        r.html
    );
    golden(
        "report-fail.txt",
        &format!("Subject: {}\n\n{}", r.subject, r.text),
    );
    golden("report-fail.html", &r.html);
}

#[test]
fn html_is_escaped() {
    // maud escapes every value it interpolates: a hostile name is text, never markup.
    let mut f = ok_facts();
    f.site = "<script>\"a\" & b</script>".into();
    f.jobs[0] = "<img src=x onerror=alert(1)>".into();
    let r = render(&f);
    assert!(!r.html.contains("<script>"), "{}", r.html);
    assert!(!r.html.contains("<img"), "{}", r.html);
    assert!(
        r.html
            .contains("&lt;script&gt;&quot;a&quot; &amp; b&lt;/script&gt;"),
        "{}",
        r.html
    );
    let r = render(&warn_facts());
    assert!(r.html.contains("cat &lt;1&gt;.jpg"), "{}", r.html);
    assert!(!r.html.contains("cat <1>"));
}

#[test]
fn sections_show_only_when_their_data_exists() {
    let mut f = ok_facts();
    f.jobs.clear();
    f.pushes.clear();
    f.databases.clear();
    f.dns = Dns::NotConfigured;
    f.space = Ok(vec![]);
    let r = render(&f);
    assert_eq!(r.status, Status::Ok);
    assert_eq!(
        r.subject,
        "[orch] alice-web nightly replication: OK \u{2014} no sync jobs"
    );
    assert!(r.text.contains("no sync jobs configured"), "{}", r.text);
    assert!(r.text.contains("no databases configured"), "{}", r.text);

    // Jobs configured but never run: a warning, and the subject says so.
    let mut f = ok_facts();
    f.pushes.clear();
    let r = render(&f);
    assert_eq!(r.status, Status::Warn);
    assert!(r.subject.ends_with("no push has run yet"), "{}", r.subject);
    let (ready, line) = readiness(&f, &r.findings);
    assert!(!ready);
    assert_eq!(
        line,
        "NOT READY: bob holds no copy of mail yet; bob holds no copy of www yet"
    );
}

#[test]
fn a_txt_record_naming_another_master_fails() {
    let mut f = ok_facts();
    f.dns = Dns::Records(vec![
        DnsRecord {
            name: "www.example.org".into(),
            kind: "A".into(),
            values: vec!["203.0.113.9".into()],
        },
        DnsRecord {
            name: "_orch.alice-web.example.org".into(),
            kind: "TXT".into(),
            values: vec!["master=bob epoch=2".into()],
        },
    ]);
    let findings = judge(&f);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].status, Status::Fail);
    assert!(findings[0].text.contains("names bob as master"));
    // DNS alone does not make the standby unable to take over.
    assert!(readiness(&f, &findings).0);
}

#[test]
fn the_failover_guards_make_it_not_ready() {
    let mut f = ok_facts();
    f.failover_blockers = vec![
        "this node's database is 95.0 s (main; limit max_lag_on_failover = 30s) behind".into(),
        "automatic failover is disarmed after the last one until `orch ack alice-web`".into(),
    ];
    let findings = judge(&f);
    let (ready, line) = readiness(&f, &findings);
    assert!(!ready);
    assert!(
        line.starts_with("NOT READY: this node's database is 95.0 s"),
        "{line}"
    );
    assert!(line.contains("until `orch ack alice-web`"), "{line}");
}

#[test]
fn the_chart_sums_each_local_day_and_marks_a_failed_one() {
    let mut f = ok_facts();
    f.recent = recent(Some(3));
    let days = days(&f);
    assert_eq!(days.len(), CHART_DAYS);
    assert_eq!(
        days[CHART_DAYS - 1].date,
        "11-26",
        "the report's own day last"
    );
    assert_eq!(days[0].date, "11-13");
    // The first day is 13 days back (11-13): its 03:00 pushes are in.
    assert_eq!(days[0].pushes, 2);
    let today = &days[CHART_DAYS - 1];
    assert_eq!((today.pushes, today.duration_ms), (2, 2 * 12_400));
    let night = &days[CHART_DAYS - 2]; // yesterday: 1 day back
    assert_eq!(night.pushes, 2);
    assert_eq!(night.duration_ms, (4_000 + 13 * 700) * 4);
    assert_eq!(night.bytes_sent, (2_000_000 + 13 * 900_000) * 4);
    assert!(!night.failed);
    assert!(days[CHART_DAYS - 4].failed, "3 days back failed");
    assert_eq!(days.iter().filter(|d| d.failed).count(), 1);
    // The failed day's bar is red in the HTML, and every bar carries its figures.
    let r = render(&f);
    assert!(r.html.contains("fill=\"#cf222e\""), "{}", r.html);
    assert!(r.html.contains("<title>11-23: 2 push(es)"), "{}", r.html);
    assert_eq!(r.html.matches("<rect ").count(), 2 * CHART_DAYS);
}

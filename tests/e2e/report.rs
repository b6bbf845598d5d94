//! Reports and alerts end to end: the report mailed through a real SMTP server (aiosmtpd)
//! with both parts; a node that cannot reach its SMTP server hands the report, and later
//! its tunnel-down alert and the "resolved" mail, to the peer's agent, which delivers each
//! once; webhooks in ntfy's, gotify's and a plain JSON shape.

use orch_tests::fixture::Pair;
use orch_tests::lab::{Host, Lab};
use orch_tests::{eventually, free_port, orch, prerequisites, smtp_command};
use orchestrator::config::{Notify, NotifyKind};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";

fn tool(name: &str) -> String {
    format!("{}/tools/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub(crate) use orch_tests::mailbox;

pub(crate) fn with_subject<'a>(mails: &'a [Value], prefix: &str) -> Vec<&'a Value> {
    mails
        .iter()
        .filter(|m| {
            m["subject"]
                .as_str()
                .unwrap_or_default()
                .starts_with(prefix)
        })
        .collect()
}

fn orch_in(lab: &Lab, host: &Host, config: &Path, args: &[&str]) -> Output {
    let mut argv = vec![
        orch::bin().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    argv.extend_from_slice(args);
    lab.run(host, &argv)
}

fn outbox(config: &Path) -> Value {
    orch::status_json(config).unwrap()["outbox"].clone()
}

#[test]
fn reports_are_mailed_and_relayed_through_the_peer_when_smtp_is_unreachable() {
    let test = "reports_are_mailed_and_relayed_through_the_peer_when_smtp_is_unreachable";
    if !prerequisites(test, true, &["ip", PYTHON]) {
        return;
    }
    let mut lab = Lab::new(test);
    let port = free_port();
    let dir = lab.dir().to_owned();
    std::fs::create_dir_all(dir.join("bob-www")).unwrap();
    let pair = Pair::new(
        &dir,
        &format!(
            r#"
[mail]
transport = "smtp"
host = "127.0.0.1"
port = {port}
tls = "none"
from = "orch@example.org"
to = ["alice@example.org", "bob@example.org"]
hand_off_after = "3s"
tunnel_alert_after = "2s"

[[sites.alice-web.sync]]
name = "www"
schedule = "0 3 * * *"
path = {{ alice = "{a}", bob = "{b}" }}
"#,
            a = dir.join("alice-www").display(),
            b = dir.join("bob-www").display(),
        ),
    );
    let (a_conf, b_conf) = (pair.config("alice"), pair.config("bob"));
    let alice = lab.host("alice", &["192.0.2.1/24"]);
    let bob = lab.host("bob", &["192.0.2.2/24"]);
    // The SMTP server listens on bob's own loopback: bob reaches it, alice cannot.
    let maildir = dir.join("maildir");
    lab.spawn(&bob, "aiosmtpd", smtp_command(port, &maildir));
    let probe = format!("import socket; socket.create_connection(('127.0.0.1', {port}), 1)");
    eventually(
        "the SMTP server listens in bob",
        Duration::from_secs(20),
        || {
            let out = lab.run(&bob, &[PYTHON, "-c", &probe]);
            out.status
                .success()
                .then_some(())
                .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
        },
    );
    assert!(
        !lab.run(&alice, &[PYTHON, "-c", &probe]).status.success(),
        "alice must not reach bob's SMTP server"
    );
    let [_, bob_agent] = pair.spawn_agents(&mut lab, &[alice.clone(), bob.clone()]);
    eventually("the tunnel comes up", Duration::from_secs(20), || {
        lab.ping(&alice, "198.51.100.2").map_err(|e| {
            format!(
                "{e}\nalice: {}\nbob: {}",
                lab.log("agent-alice"),
                lab.log("agent-bob")
            )
        })
    });

    let both_see_each_other = |what: &str| {
        eventually(what, Duration::from_secs(30), || {
            for conf in [&a_conf, &b_conf] {
                let s = orch::status_json(conf)?;
                if s["tunnel"]["up"] != true || s["peer"]["reachable"] != true {
                    return Err(format!("{:#}\n{:#}", s["tunnel"], s["peer"]));
                }
            }
            Ok(())
        })
    };
    both_see_each_other("both agents see the tunnel up and the peer's agent");

    // Bob reports its site: delivered, with the subject and both parts.
    let out = orch_in(&lab, &bob, &b_conf, &["report", "bob-cloud", "--send"]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{stdout}\n{stderr}");
    let mails = mailbox(&maildir);
    assert!(
        stdout.starts_with("sent: [orch] bob-cloud nightly replication: OK"),
        "{stdout}{mails:#?}"
    );
    assert_eq!(mails.len(), 1, "{mails:?}");
    let m = &mails[0];
    assert_eq!(
        m["subject"],
        "[orch] bob-cloud nightly replication: OK \u{2014} no sync jobs"
    );
    assert_eq!(m["content_type"], "multipart/alternative");
    let text = m["parts"]["text/plain"].as_str().unwrap();
    let html = m["parts"]["text/html"].as_str().unwrap();
    assert!(text.contains("Site bob-cloud (cluster lab): OK"), "{text}");
    assert!(text.contains("Failover readiness: READY"), "{text}");
    assert!(
        html.contains("<!DOCTYPE html>") && html.contains("bob-cloud"),
        "{html}"
    );
    assert_eq!(m["to"], "alice@example.org, bob@example.org");

    // Alice's report shows bob's free space, asked of bob's agent over the tunnel.
    let out = orch_in(&lab, &alice, &a_conf, &["report", "alice-web"]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with(
            "Subject: [orch] alice-web nightly replication: WARN \u{2014} no push has run yet"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("FREE SPACE ON BOB"), "{stdout}");
    let space_row = stdout
        .lines()
        .find(|l| l.contains(&dir.join("bob-www").display().to_string()))
        .unwrap_or_else(|| panic!("no free space row for bob's copy: {stdout}"));
    assert!(space_row.trim_start().starts_with("www"), "{space_row}");
    assert!(
        stdout.contains("NOT READY: bob holds no copy of www yet"),
        "{stdout}"
    );
    assert!(stdout.contains("to bob: up"), "{stdout}");

    // Alice sends hers: her SMTP server is unreachable, so it is kept, then handed to bob.
    let out = orch_in(&lab, &alice, &a_conf, &["report", "alice-web", "--send"]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("not delivered yet"), "{stderr}");
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
    assert!(stderr.contains("handed to bob's agent"), "{stderr}");
    let relayed = eventually(
        "bob delivers alice's report",
        Duration::from_secs(60),
        || {
            let mails = mailbox(&maildir);
            let found: Vec<Value> = with_subject(&mails, "[orch] alice-web nightly replication")
                .into_iter()
                .cloned()
                .collect();
            if found.is_empty() {
                Err(format!("{} messages", mails.len()))
            } else {
                Ok(found)
            }
        },
    );
    assert_eq!(relayed.len(), 1);
    assert!(
        relayed[0]["message_id"]
            .as_str()
            .unwrap()
            .ends_with("@alice.orch>"),
        "the message alice wrote, under her id: {}",
        relayed[0]["message_id"]
    );
    assert!(relayed[0]["parts"]["text/html"].is_string());
    eventually("both outboxes are settled", Duration::from_secs(30), || {
        let (a, b) = (outbox(&a_conf), outbox(&b_conf));
        if a["pending"] == 0 && a["handed_off"] == 1 && b["pending"] == 0 && b["sent"] == 2 {
            Ok(())
        } else {
            Err(format!("alice {a}, bob {b}"))
        }
    });

    // Bob's agent stops: alice alerts the tunnel down; the alert waits (no SMTP, no peer),
    // and when bob is back it is handed over and delivered, then the "resolved" mail too.
    let log = lab.log_path("agent-bob");
    lab.proc(bob_agent)
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
        .expect("bob's agent stops on SIGTERM");
    eventually(
        "alice alerts the tunnel down",
        Duration::from_secs(60),
        || {
            let out = orch_in(
                &lab,
                &alice,
                &a_conf,
                &["history", "--json", "--limit", "50"],
            );
            let text = orch::text(&out).0;
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|e| {
                    e["kind"] == "alert"
                        && e["summary"]
                            .as_str()
                            .unwrap_or_default()
                            .starts_with("ALERT alice: the tunnel to bob has been down")
                })
                .map(|_| ())
                .ok_or(text)
        },
    );
    std::fs::rename(&log, dir.join("agent-bob-first.log")).unwrap();
    pair.spawn_agent(&mut lab, &bob, "bob");
    let mails = eventually(
        "the alert and its resolution arrive through bob",
        Duration::from_secs(120),
        || {
            let mails = mailbox(&maildir);
            let alert = with_subject(&mails, "[orch] ALERT alice: the tunnel to bob").len();
            let resolved = with_subject(&mails, "[orch] RESOLVED alice: the tunnel to bob").len();
            if alert >= 1 && resolved >= 1 {
                Ok(mails)
            } else {
                Err(format!(
                    "alert {alert}, resolved {resolved} of {} messages",
                    mails.len()
                ))
            }
        },
    );
    eventually(
        "both outboxes are settled again",
        Duration::from_secs(60),
        || {
            let (a, b) = (outbox(&a_conf), outbox(&b_conf));
            if a["pending"] == 0 && b["pending"] == 0 {
                Ok(())
            } else {
                Err(format!("alice {a}, bob {b}"))
            }
        },
    );
    // Settled outboxes send nothing more: each message arrived exactly once.
    let mails = mailbox(&maildir).len().max(mails.len());
    let all = mailbox(&maildir);
    assert_eq!(all.len(), mails);
    for prefix in [
        "[orch] bob-cloud nightly",
        "[orch] alice-web nightly",
        "[orch] ALERT alice: the tunnel",
        "[orch] RESOLVED alice: the tunnel",
    ] {
        assert_eq!(with_subject(&all, prefix).len(), 1, "{prefix}: {all:#?}");
    }
    assert_eq!(all.len(), 4, "{all:#?}");
}

#[test]
fn alert_webhooks_speak_ntfy_gotify_and_json() {
    if !prerequisites(
        "alert_webhooks_speak_ntfy_gotify_and_json",
        false,
        &[PYTHON],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = tmp.path().join("hooks.jsonl");
    let token = "tk_9f2c0a7e1b";
    let _server = orch_tests::process::Proc::spawn(
        "notifyapi",
        Command::new(PYTHON)
            .arg(tool("notifyapi.py"))
            .arg(port.to_string())
            .arg(token)
            .arg(&log),
        &tmp.path().join("notifyapi.log"),
    );
    eventually(
        "the webhook server listens",
        Duration::from_secs(20),
        || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
    let token_file = tmp.path().join("token");
    orch_tests::fixture::write_secret(&token_file, token);
    let wrong_file = tmp.path().join("wrong");
    orch_tests::fixture::write_secret(&wrong_file, "tk_wrong");
    let notify = |kind, path: &str, file: &Path| Notify {
        kind,
        url: format!("http://127.0.0.1:{port}{path}").parse().unwrap(),
        token_file: Some(file.to_owned()),
    };
    let hook = orchestrator::notify::Webhook {
        subject: "[orch] ALERT alice-web: database app is broken: no WAL receiver",
        text: "database app is broken: no WAL receiver\n",
        what: orchestrator::notify::Event::Alert,
        site: Some("alice-web"),
        node: "bob",
        cluster: "home",
        at: 1_795_667_400_000,
    };
    let http = reqwest::Client::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (kind, path) in [
            (NotifyKind::Ntfy, "/ntfy/orch-home"),
            (NotifyKind::Gotify, "/gotify"),
            (NotifyKind::Json, "/hook"),
        ] {
            orchestrator::notify::post(&http, &notify(kind, path, &token_file), &hook)
                .await
                .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            let err = orchestrator::notify::post(&http, &notify(kind, path, &wrong_file), &hook)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("answered 40"), "{kind:?}: {err}");
            assert!(!err.contains("tk_wrong"), "no secret in errors: {err}");
        }
    });
    let got: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 3, "{got:#?}");
    let ntfy = &got[0];
    assert_eq!(ntfy["path"], "/ntfy/orch-home");
    assert_eq!(
        ntfy["headers"]["title"],
        "ALERT alice-web: database app is broken: no WAL receiver"
    );
    assert_eq!(ntfy["headers"]["priority"], "high");
    assert_eq!(ntfy["headers"]["tags"], "warning");
    assert_eq!(ntfy["body"], "database app is broken: no WAL receiver\n");
    let gotify = &got[1];
    assert_eq!(gotify["path"], "/gotify/message");
    assert_eq!(gotify["json"]["priority"], 8);
    assert_eq!(
        gotify["json"]["message"],
        "database app is broken: no WAL receiver\n"
    );
    let json = &got[2];
    assert_eq!(json["json"]["event"], "alert");
    assert_eq!(json["json"]["site"], "alice-web");
    assert_eq!(json["json"]["node"], "bob");
    assert_eq!(json["json"]["at"], "2026-11-26T04:30:00Z");
}

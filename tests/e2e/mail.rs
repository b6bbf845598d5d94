//! Mail through a real SMTP server (aiosmtpd, Debian's python3-aiosmtpd): the outbox keeps
//! a message while the server is down and delivers it once when it is back; STARTTLS to a
//! server whose certificate a private CA signed works when that CA file is configured, and
//! only then.

use orch_tests::process::Proc;
use orch_tests::{eventually, free_port, prerequisites};
use orchestrator::config::{Mail, MailTls, MailTransport};
use orchestrator::mail::{self, Mailer, Round};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";

/// aiosmtpd on 127.0.0.1:`port`, storing what it receives in the maildir `dir`.
fn smtp_server(dir: &Path, port: u16, tls: Option<(&Path, &Path)>) -> Proc {
    let mut cmd = Command::new(PYTHON);
    cmd.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")]);
    if let Some((cert, key)) = tls {
        cmd.arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
    }
    cmd.args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(dir.join("maildir"));
    let proc = Proc::spawn("aiosmtpd", &mut cmd, &dir.join("aiosmtpd.log"));
    eventually("the SMTP server listens", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    proc
}

fn received(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("maildir/new"))
        .map(|d| {
            d.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

fn smtp_config(port: u16, tls: MailTls, ca_file: Option<PathBuf>) -> Mail {
    Mail {
        transport: MailTransport::Smtp,
        host: Some("127.0.0.1".into()),
        port,
        tls,
        ca_file,
        username: None,
        password_file: None,
        from: Some("orch@example.org".into()),
        to: vec!["alice@example.org".into(), "bob@example.org".into()],
        ..Mail::file()
    }
}

#[test]
fn a_message_waits_in_the_outbox_while_smtp_is_down_and_is_delivered_once() {
    if !prerequisites(
        "a_message_waits_in_the_outbox_while_smtp_is_down_and_is_delivered_once",
        false,
        &[PYTHON],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = agent::state::Store::open(&tmp.path().join("state"))
            .await
            .unwrap();
        let mailer = Mailer::new(&smtp_config(port, MailTls::None, None), tmp.path()).unwrap();
        let id = mail::new_message_id("alice");
        let message = mailer
            .compose(
                &id,
                "[orch] alice-web nightly replication: OK",
                "all good",
                Some("<p>all good</p>"),
            )
            .unwrap();
        assert!(mail::queue(
            &store,
            "alice",
            Some("alice-web"),
            &id,
            "subject",
            &message,
            1_000
        )
        .await
        .unwrap());

        // Down: kept, with the reason, for a retry after the backoff.
        let round = mail::deliver_due(&store, &mailer, None, 1_000)
            .await
            .unwrap();
        assert_eq!(round.sent, 0);
        assert!(
            round.failed[0].contains("SMTP server 127.0.0.1"),
            "{round:?}"
        );
        assert_eq!(
            mail::deliver_due(&store, &mailer, None, 2_000)
                .await
                .unwrap(),
            Round::default(),
            "not before the backoff"
        );

        // Back: delivered, once.
        let _server = smtp_server(tmp.path(), port, None);
        let round = mail::deliver_due(&store, &mailer, None, 1_000 + 30_000)
            .await
            .unwrap();
        assert_eq!(
            round,
            Round {
                sent: 1,
                ..Round::default()
            }
        );
        assert_eq!(
            mail::deliver_due(&store, &mailer, None, 10_000_000)
                .await
                .unwrap(),
            Round::default()
        );
        let got = received(tmp.path());
        assert_eq!(got.len(), 1, "exactly one message arrived");
        assert!(
            got[0].contains("Subject: [orch] alice-web nightly replication: OK"),
            "{}",
            got[0]
        );
        assert!(got[0].contains("Content-Type: text/plain"), "{}", got[0]);
        assert!(got[0].contains("Content-Type: text/html"), "{}", got[0]);
        assert!(
            got[0].contains(&format!("Message-ID: <{id}>")),
            "{}",
            got[0]
        );
    });
}

#[test]
fn starttls_with_a_private_ca_needs_its_ca_file() {
    if !prerequisites(
        "starttls_with_a_private_ca_needs_its_ca_file",
        false,
        &[PYTHON, "openssl"],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A private CA (the CA file orch is given) and the server's certificate it signed.
    let d = tmp.path();
    let ca = d.join("ca.pem");
    let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
    let ext = d.join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=lab CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "cert.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "cert.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    let port = free_port();
    let _server = smtp_server(tmp.path(), port, Some((&cert, &key)));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Without the CA: refused, the certificate named as the reason.
        let untrusted =
            Mailer::new(&smtp_config(port, MailTls::Starttls, None), tmp.path()).unwrap();
        let message = untrusted
            .compose(&mail::new_message_id("alice"), "[orch] tls", "text", None)
            .unwrap();
        let err = untrusted.send("x", &message).await.unwrap_err();
        eprintln!("untrusted: {err}");
        assert!(err.to_lowercase().contains("certificate"), "{err}");
        assert!(received(tmp.path()).is_empty());

        let trusted = Mailer::new(
            &smtp_config(port, MailTls::Starttls, Some(ca.clone())),
            tmp.path(),
        )
        .unwrap();
        trusted.send("y", &message).await.unwrap();
        let got = received(tmp.path());
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("Subject: [orch] tls"), "{}", got[0]);
    });
}

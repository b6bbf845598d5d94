//! The HTTP DNS providers and the `command` provider, each against a local server that
//! implements that provider's documented requests, responses and authentication
//! (`tests/tools/dnsapi.py`) and publishes to a real BIND, where orch verifies every change.

use orch_tests::bind::Bind;
use orch_tests::fixture::write_secret;
use orch_tests::process::Proc;
use orch_tests::{eventually, prerequisites};
use orchestrator::config::{DnsKind, DnsProvider};
use orchestrator::dns::managed::Managed;
use orchestrator::dns::{DnsError, Kind, Provider, Swap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";

fn tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/dnsapi.py")
}

fn v(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

/// `dig +short` lines, sorted.
fn dug(bind: &Bind, name: &str, kind: &str) -> Vec<String> {
    let mut lines: Vec<String> = bind
        .dig(name, kind)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

fn blank(kind: DnsKind, name: &str) -> DnsProvider {
    DnsProvider::new(name, kind)
}

/// A provider stand-in serving on a loopback port; stopped when dropped.
struct Mock {
    _proc: Proc,
    port: u16,
}

impl Mock {
    fn start(dir: &Path, kind: &str, bind: &Bind, args: &[&str]) -> Mock {
        std::fs::create_dir_all(dir).unwrap();
        let port_file = dir.join(format!("{kind}.port"));
        let mut cmd = Command::new(PYTHON);
        cmd.arg(tool())
            .args(["serve", "--kind", kind, "--zone", &bind.zone])
            .arg("--bind")
            .arg(format!("{}:{}", bind.addr, bind.port))
            .arg("--key")
            .arg(&bind.key_file)
            .arg("--port-file")
            .arg(&port_file)
            .args(args);
        let proc = Proc::spawn(kind, &mut cmd, &dir.join(format!("{kind}.log")));
        let port = eventually(
            &format!("the {kind} stand-in listens"),
            Duration::from_secs(20),
            || {
                std::fs::read_to_string(&port_file)
                    .map_err(|e| e.to_string())
                    .and_then(|t| t.trim().parse::<u16>().map_err(|e| e.to_string()))
            },
        );
        Mock { _proc: proc, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn managed(config: &DnsProvider) -> Managed {
    let mut m = Managed::new(config).unwrap();
    m.set_propagation(Duration::from_secs(20));
    m
}

fn secret(dir: &Path, name: &str, value: &str) -> PathBuf {
    let path = dir.join(name);
    write_secret(&path, value);
    path
}

fn start_bind(dir: &Path, zone: &str) -> Bind {
    Bind::start_local(&dir.join("bind"), zone, &[])
}

/// The compare-and-swap contract, through `ours`, with `theirs` playing someone else
/// using the same account.
async fn exercise(ours: &Managed, theirs: &Managed, bind: &Bind, ttl: u32) {
    let www = "www.example.org";
    assert_eq!(ours.get(www, Kind::A).await.unwrap(), Vec::<String>::new());

    // Create: only if absent; verified at BIND before it returns.
    let swap = ours
        .compare_and_swap(www, Kind::A, &[], &v(&["192.0.2.10"]), ttl)
        .await
        .unwrap();
    assert_eq!(swap, Swap::Swapped);
    assert_eq!(dug(bind, www, "A"), v(&["192.0.2.10"]));
    assert_eq!(ours.get(www, Kind::A).await.unwrap(), v(&["192.0.2.10"]));
    let again = ours
        .compare_and_swap(www, Kind::A, &[], &v(&["192.0.2.99"]), ttl)
        .await
        .unwrap();
    assert_eq!(
        again,
        Swap::Conflict {
            current: v(&["192.0.2.10"])
        }
    );

    // Someone else moves it: our swap from the old value is refused, nothing changes.
    theirs
        .set(www, Kind::A, &v(&["192.0.2.20"]), ttl)
        .await
        .unwrap();
    let swap = ours
        .compare_and_swap(www, Kind::A, &v(&["192.0.2.10"]), &v(&["192.0.2.40"]), ttl)
        .await
        .unwrap();
    assert_eq!(
        swap,
        Swap::Conflict {
            current: v(&["192.0.2.20"])
        }
    );
    assert_eq!(dug(bind, www, "A"), v(&["192.0.2.20"]));

    // From what is there, to two values, then back to one.
    let two = v(&["192.0.2.30", "192.0.2.31"]);
    assert_eq!(
        ours.compare_and_swap(www, Kind::A, &v(&["192.0.2.20"]), &two, ttl)
            .await
            .unwrap(),
        Swap::Swapped
    );
    assert_eq!(dug(bind, www, "A"), two);
    assert_eq!(
        ours.compare_and_swap(www, Kind::A, &two, &v(&["192.0.2.31"]), ttl)
            .await
            .unwrap(),
        Swap::Swapped
    );
    assert_eq!(dug(bind, www, "A"), v(&["192.0.2.31"]));

    // The site's ownership record (TXT, with a space) and AAAA.
    let txt = "_orch.web.example.org";
    assert_eq!(
        ours.compare_and_swap(txt, Kind::Txt, &[], &v(&["master=alice epoch=1"]), ttl)
            .await
            .unwrap(),
        Swap::Swapped
    );
    assert_eq!(
        ours.compare_and_swap(
            txt,
            Kind::Txt,
            &v(&["master=alice epoch=1"]),
            &v(&["master=bob epoch=2"]),
            ttl
        )
        .await
        .unwrap(),
        Swap::Swapped
    );
    assert_eq!(dug(bind, txt, "TXT"), v(&["\"master=bob epoch=2\""]));
    assert_eq!(
        ours.get(txt, Kind::Txt).await.unwrap(),
        v(&["master=bob epoch=2"])
    );
    assert_eq!(
        ours.compare_and_swap(www, Kind::Aaaa, &[], &v(&["2001:db8::10"]), ttl)
            .await
            .unwrap(),
        Swap::Swapped
    );
    assert_eq!(dug(bind, www, "AAAA"), v(&["2001:db8::10"]));
    assert_eq!(
        ours.published(www, Kind::Aaaa).await.unwrap(),
        v(&["2001:db8::10"])
    );
}

/// A wrong credential: the provider's own words in the error, no secret in it, and the
/// record untouched.
async fn refused(wrong: &Managed, bind: &Bind, said: &str, secrets: &[&str]) -> String {
    let before = dug(bind, "www.example.org", "A");
    let err = wrong
        .compare_and_swap(
            "www.example.org",
            Kind::A,
            &before,
            &v(&["192.0.2.66"]),
            3600,
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    eprintln!("wrong credential: {text}");
    assert!(matches!(err, DnsError::Api { .. }), "{err:?}");
    assert!(text.contains(said), "expected `{said}` in: {text}");
    for s in secrets {
        assert!(!text.contains(s), "a secret was shown: {text}");
    }
    assert_eq!(dug(bind, "www.example.org", "A"), before);
    text
}

fn lab_ready(test: &str) -> bool {
    prerequisites(
        test,
        true,
        &["named", "tsig-keygen", "nsupdate", "dig", PYTHON],
    )
}

#[test]
fn cloudflare_swaps_with_an_api_token_and_refuses_a_wrong_one() {
    if !lab_ready("cloudflare_swaps_with_an_api_token_and_refuses_a_wrong_one") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bind = start_bind(tmp.path(), "example.org");
    let token = "cf-token-5f2b9a7c1e";
    let mock = Mock::start(tmp.path(), "cloudflare", &bind, &["--token", token]);
    let mut config = blank(DnsKind::Cloudflare, "cf");
    config.zone = Some("example.org".into());
    config.api_url = Some(mock.url("/client/v4"));
    config.nameservers = vec![format!("{}:{}", bind.addr, bind.port)];
    config.token_file = Some(secret(tmp.path(), "cf.token", token));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        exercise(&managed(&config), &managed(&config), &bind, 300).await;
        config.token_file = Some(secret(tmp.path(), "cf.wrong", "not-the-token-0000"));
        let text = refused(
            &managed(&config),
            &bind,
            "Authentication error (code 10000)",
            &["not-the-token"],
        )
        .await;
        assert!(text.contains("token_file"), "the fix is named: {text}");
    });
}

#[test]
fn ovh_signs_each_call_refreshes_the_zone_and_refuses_a_wrong_consumer_key() {
    if !lab_ready("ovh_signs_each_call_refreshes_the_zone_and_refuses_a_wrong_consumer_key") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bind = start_bind(tmp.path(), "example.org");
    let (ak, a_secret, ck) = (
        "7kbG7Bk7S9Nt7ZSV",
        "EXEgWIz07P0HYwtQDs7cNIqCiQaWSuHF",
        "MtSwSrPpNjqfVSmJhLbPyr2i45lSwPU1",
    );
    let mock = Mock::start(
        tmp.path(),
        "ovh",
        &bind,
        &[
            "--application-key",
            ak,
            "--application-secret",
            a_secret,
            "--consumer-key",
            ck,
        ],
    );
    let mut config = blank(DnsKind::Ovh, "ovh");
    config.zone = Some("example.org".into());
    config.api_url = Some(mock.url("/1.0"));
    config.nameservers = vec![format!("{}:{}", bind.addr, bind.port)];
    config.application_key = Some(ak.into());
    config.application_secret_file = Some(secret(tmp.path(), "ovh.as", a_secret));
    config.consumer_key_file = Some(secret(tmp.path(), "ovh.ck", ck));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        exercise(&managed(&config), &managed(&config), &bind, 300).await;
        // A wrong application secret: the signature does not match.
        let mut wrong = config.clone();
        wrong.application_secret_file =
            Some(secret(tmp.path(), "ovh.as.wrong", "WRONGWRONGWRONGWRONG"));
        refused(
            &managed(&wrong),
            &bind,
            "Invalid signature (INVALID_SIGNATURE)",
            &["WRONGWRONG", a_secret],
        )
        .await;
        let mut wrong = config.clone();
        wrong.consumer_key_file = Some(secret(tmp.path(), "ovh.ck.wrong", "ck-revoked-000000"));
        refused(
            &managed(&wrong),
            &bind,
            "This credential is not valid (INVALID_CREDENTIAL)",
            &["ck-revoked", a_secret],
        )
        .await;
    });
}

#[test]
fn gandi_replaces_rrsets_with_a_personal_access_token() {
    if !lab_ready("gandi_replaces_rrsets_with_a_personal_access_token") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bind = start_bind(tmp.path(), "example.org");
    let token = "gandi-pat-0a1b2c3d4e5f";
    let mock = Mock::start(tmp.path(), "gandi", &bind, &["--token", token]);
    let mut config = blank(DnsKind::Gandi, "gandi");
    config.zone = Some("example.org".into());
    config.api_url = Some(mock.url("/v5/livedns"));
    config.nameservers = vec![format!("{}:{}", bind.addr, bind.port)];
    config.token_file = Some(secret(tmp.path(), "gandi.token", token));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ours = managed(&config);
        exercise(&ours, &managed(&config), &bind, 300).await;
        // Gandi's own validation comes through: its minimum TTL is 300 s.
        let err = ours
            .compare_and_swap("low.example.org", Kind::A, &[], &v(&["192.0.2.5"]), 60)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("rrset_ttl: must be at least 300"), "{err}");
        config.token_file = Some(secret(tmp.path(), "gandi.wrong", "pat-expired-1234"));
        refused(&managed(&config), &bind, "Unauthorized", &["pat-expired"]).await;
    });
}

#[test]
fn desec_writes_rrsets_in_bulk_and_shows_its_ttl_rule() {
    if !lab_ready("desec_writes_rrsets_in_bulk_and_shows_its_ttl_rule") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bind = start_bind(tmp.path(), "example.org");
    let token = "desec-token-9z8y7x6w";
    let mock = Mock::start(tmp.path(), "desec", &bind, &["--token", token]);
    let mut config = blank(DnsKind::Desec, "desec");
    config.zone = Some("example.org".into());
    config.api_url = Some(mock.url("/api/v1"));
    config.nameservers = vec![format!("{}:{}", bind.addr, bind.port)];
    config.token_file = Some(secret(tmp.path(), "desec.token", token));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ours = managed(&config);
        exercise(&ours, &managed(&config), &bind, 3600).await;
        let err = ours
            .compare_and_swap("low.example.org", Kind::A, &[], &v(&["192.0.2.5"]), 60)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ttl: Ensure this value is greater than or equal to 3600."),
            "{err}"
        );
        // The apex.
        assert_eq!(
            ours.compare_and_swap("example.org", Kind::A, &[], &v(&["192.0.2.8"]), 3600)
                .await
                .unwrap(),
            Swap::Swapped
        );
        assert_eq!(dug(&bind, "example.org", "A"), v(&["192.0.2.8"]));
        config.token_file = Some(secret(tmp.path(), "desec.wrong", "desec-old-token"));
        refused(
            &managed(&config),
            &bind,
            "HTTP 401 Unauthorized: Invalid token.",
            &["desec-old-token"],
        )
        .await;
    });
}

#[test]
fn duckdns_keeps_a_name_and_reads_it_back_from_the_authoritative_server() {
    if !lab_ready("duckdns_keeps_a_name_and_reads_it_back_from_the_authoritative_server") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bind = start_bind(tmp.path(), "duckdns.org");
    let token = "a7c4d0ad-114e-40ef-ba1d-d217904a50f2";
    let mock = Mock::start(
        tmp.path(),
        "duckdns",
        &bind,
        &["--token", token, "--domains", "alice-home"],
    );
    let mut config = blank(DnsKind::Duckdns, "duck");
    config.api_url = Some(mock.url(""));
    config.nameservers = vec![format!("{}:{}", bind.addr, bind.port)];
    config.token_file = Some(secret(tmp.path(), "duck.token", token));
    let name = "alice-home.duckdns.org";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let duck = managed(&config);
        duck.set(name, Kind::A, &v(&["192.0.2.44"]), 60)
            .await
            .unwrap();
        assert_eq!(dug(&bind, name, "A"), v(&["192.0.2.44"]));
        duck.set(name, Kind::Aaaa, &v(&["2001:db8::44"]), 60)
            .await
            .unwrap();
        assert_eq!(dug(&bind, name, "AAAA"), v(&["2001:db8::44"]));
        // The record moved behind our back: the swap sees it at the authoritative server.
        bind.set_a("alice-home", "192.0.2.45");
        assert_eq!(
            duck.compare_and_swap(name, Kind::A, &v(&["192.0.2.44"]), &v(&["192.0.2.46"]), 60)
                .await
                .unwrap(),
            Swap::Conflict {
                current: v(&["192.0.2.45"])
            }
        );
        let err = duck
            .set("bob-home.duckdns.org", Kind::A, &v(&["192.0.2.9"]), 60)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("refused (KO)"), "{err}");
        config.token_file = Some(secret(
            tmp.path(),
            "duck.wrong",
            "00000000-dead-beef-0000-000000000000",
        ));
        let wrong = managed(&config);
        let err = wrong
            .set(name, Kind::A, &v(&["192.0.2.47"]), 60)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("refused (KO): check token_file"), "{err}");
        assert!(
            !err.contains("dead-beef") && !err.contains(token),
            "no token in: {err}"
        );
        assert_eq!(dug(&bind, name, "A"), v(&["192.0.2.45"]));
    });
}

#[test]
fn dyndns2_updates_with_basic_auth_and_names_each_refusal() {
    if !lab_ready("dyndns2_updates_with_basic_auth_and_names_each_refusal") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bind = start_bind(tmp.path(), "example.org");
    let mock = Mock::start(
        tmp.path(),
        "dyndns2",
        &bind,
        &[
            "--username",
            "alice",
            "--password",
            "s3cret-pass",
            "--domains",
            "alice.example.org",
        ],
    );
    let mut config = blank(DnsKind::Dyndns2, "noip");
    config.server = Some(mock.url(""));
    config.username = Some("alice".into());
    config.password_file = Some(secret(tmp.path(), "noip.pass", "s3cret-pass"));
    config.nameservers = vec![format!("{}:{}", bind.addr, bind.port)];
    let name = "alice.example.org";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dyn2 = managed(&config);
        dyn2.set(name, Kind::A, &v(&["192.0.2.50"]), 60)
            .await
            .unwrap();
        assert_eq!(dug(&bind, name, "A"), v(&["192.0.2.50"]));
        assert_eq!(
            dyn2.compare_and_swap(name, Kind::A, &v(&["192.0.2.50"]), &v(&["192.0.2.51"]), 60)
                .await
                .unwrap(),
            Swap::Swapped
        );
        assert_eq!(dug(&bind, name, "A"), v(&["192.0.2.51"]));
        let err = dyn2
            .set("carol.example.org", Kind::A, &v(&["192.0.2.9"]), 60)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nohost: carol.example.org does not exist"),
            "{err}"
        );
        let err = dyn2
            .compare_and_swap(name, Kind::Txt, &[], &v(&["x"]), 60)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot set TXT"), "{err}");
        config.password_file = Some(secret(tmp.path(), "noip.wrong", "wrong-pass"));
        let err = managed(&config)
            .set(name, Kind::A, &v(&["192.0.2.52"]), 60)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("badauth: the server refused user `alice`"),
            "{err}"
        );
        assert!(!err.contains("wrong-pass"), "{err}");
        assert_eq!(dug(&bind, name, "A"), v(&["192.0.2.51"]));
    });
}

#[test]
fn command_provider_follows_its_documented_interface_and_is_verified() {
    if !lab_ready("command_provider_follows_its_documented_interface_and_is_verified") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bind = start_bind(tmp.path(), "example.org");
    let mut config = blank(DnsKind::Command, "hook");
    config.zone = Some("example.org".into());
    config.nameservers = vec![format!("{}:{}", bind.addr, bind.port)];
    config.command = Some(vec![
        PYTHON.into(),
        tool().to_string_lossy().into_owned(),
        "hook".into(),
        "--zone".into(),
        "example.org".into(),
        "--bind".into(),
        format!("{}:{}", bind.addr, bind.port),
        "--key".into(),
        bind.key_file.to_string_lossy().into_owned(),
        "--state".into(),
        tmp.path().join("hook.json").to_string_lossy().into_owned(),
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        exercise(&managed(&config), &managed(&config), &bind, 300).await;
    });
    // The program's failure, with its stderr; a change it claims but the authoritative
    // server never shows is not taken as done.
    let with_env = |key: &str, value: &str| {
        let mut c = config.clone();
        let mut argv = vec!["/usr/bin/env".to_owned(), format!("{key}={value}")];
        argv.extend(c.command.take().unwrap());
        c.command = Some(argv);
        c
    };
    rt.block_on(async {
        let failing = managed(&with_env("HOOK_FAIL", "quota exceeded"));
        let err = failing
            .get("www.example.org", Kind::A)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("get failed (exit 1): the provider said no: quota exceeded"),
            "{err}"
        );

        let silent_config = with_env("HOOK_NO_PUBLISH", "1");
        let mut silent = managed(&silent_config);
        silent.set_propagation(Duration::from_secs(3));
        let err = silent
            .compare_and_swap(
                "www.example.org",
                Kind::A,
                &v(&["192.0.2.31"]),
                &v(&["192.0.2.32"]),
                300,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, DnsError::Unverified { .. }), "{err:?}");
        assert!(
            err.to_string().contains("still has [\"192.0.2.31\"]"),
            "{err}"
        );
    });
}

#[test]
fn authoritative_servers_are_found_through_a_resolver() {
    if !lab_ready("authoritative_servers_are_found_through_a_resolver") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bind = Bind::start_local(
        &tmp.path().join("bind"),
        "example.org",
        &[("www", "192.0.2.61")],
    );
    let server: std::net::SocketAddr = format!("{}:{}", bind.addr, bind.port).parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The zone's SOA owner, its NS (ns.example.org), that name's address.
        let auth = orchestrator::dns::authoritative::Authoritative::with_resolvers(
            vec![server],
            bind.port,
        );
        assert_eq!(auth.servers("www.example.org").await.unwrap(), vec![server]);
        assert_eq!(
            auth.servers("missing.deep.example.org").await.unwrap(),
            vec![server]
        );
        assert_eq!(
            auth.get("www.example.org", Kind::A).await.unwrap(),
            v(&["192.0.2.61"])
        );
        assert_eq!(
            auth.get("missing.example.org", Kind::A).await.unwrap(),
            Vec::<String>::new()
        );
    });
}

//! DNS providers against real servers: RFC 2136 with TSIG against BIND.

use orch_tests::bind::Bind;
use orch_tests::fixture::write_secret;
use orch_tests::prerequisites;
use orchestrator::config::{DnsKind, DnsProvider};
use orchestrator::dns::rfc2136::Rfc2136;
use orchestrator::dns::{DnsError, Kind, Provider, Swap};
use std::path::Path;

fn provider_config(bind: &Bind, secret_file: &Path) -> DnsProvider {
    DnsProvider {
        server: Some(format!("{}:{}", bind.addr, bind.port)),
        zone: Some(bind.zone.clone()),
        tsig_name: Some(bind.key_name.clone()),
        tsig_algorithm: Some("hmac-sha256".into()),
        tsig_secret_file: Some(secret_file.to_owned()),
        ..DnsProvider::new("lab", DnsKind::Rfc2136)
    }
}

fn v(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

#[test]
fn rfc2136_creates_swaps_and_refuses_to_swap_a_moved_record() {
    if !prerequisites(
        "rfc2136_creates_swaps_and_refuses_to_swap_a_moved_record",
        true,
        &["named", "tsig-keygen", "nsupdate", "dig"],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bind = Bind::start_local(
        &tmp.path().join("bind"),
        "example.org",
        &[("alice", "192.0.2.1")],
    );
    let secret = tmp.path().join("tsig.secret");
    write_secret(&secret, &bind.secret);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dns = Rfc2136::new(&provider_config(&bind, &secret))
            .await
            .unwrap();
        let www = "www.example.org";

        // Create: only if absent.
        assert_eq!(dns.get(www, Kind::A).await.unwrap(), Vec::<String>::new());
        assert_eq!(
            dns.compare_and_swap(www, Kind::A, &[], &v(&["192.0.2.10"]), 60)
                .await
                .unwrap(),
            Swap::Swapped
        );
        assert_eq!(bind.dig(www, "A"), "192.0.2.10");
        let again = dns
            .compare_and_swap(www, Kind::A, &[], &v(&["192.0.2.99"]), 60)
            .await
            .unwrap();
        assert_eq!(
            again,
            Swap::Conflict {
                current: v(&["192.0.2.10"])
            },
            "a create over an existing record"
        );

        // Swap from what is there.
        assert_eq!(
            dns.compare_and_swap(www, Kind::A, &v(&["192.0.2.10"]), &v(&["192.0.2.20"]), 60)
                .await
                .unwrap(),
            Swap::Swapped
        );
        assert_eq!(bind.dig(www, "A"), "192.0.2.20");

        // Someone else moves it: our swap is refused and changes nothing.
        bind.set_a("www", "192.0.2.30");
        let swap = dns
            .compare_and_swap(www, Kind::A, &v(&["192.0.2.20"]), &v(&["192.0.2.40"]), 60)
            .await
            .unwrap();
        assert_eq!(
            swap,
            Swap::Conflict {
                current: v(&["192.0.2.30"])
            }
        );
        assert_eq!(bind.dig(www, "A"), "192.0.2.30");

        // TXT (the site's _orch record) and AAAA.
        let txt = "_orch.web.example.org";
        assert_eq!(
            dns.compare_and_swap(txt, Kind::Txt, &[], &v(&["master=alice epoch=1"]), 60)
                .await
                .unwrap(),
            Swap::Swapped
        );
        assert_eq!(
            dns.compare_and_swap(
                txt,
                Kind::Txt,
                &v(&["master=alice epoch=1"]),
                &v(&["master=bob epoch=2"]),
                60
            )
            .await
            .unwrap(),
            Swap::Swapped
        );
        assert_eq!(bind.dig(txt, "TXT"), "\"master=bob epoch=2\"");
        assert_eq!(
            dns.compare_and_swap(www, Kind::Aaaa, &[], &v(&["2001:db8::10"]), 60)
                .await
                .unwrap(),
            Swap::Swapped
        );
        assert_eq!(
            dns.get(www, Kind::Aaaa).await.unwrap(),
            v(&["2001:db8::10"])
        );

        // Dynamic DNS of a node's own name: set, whatever was there.
        dns.set("alice.example.org", Kind::A, &v(&["192.0.2.77"]), 60)
            .await
            .unwrap();
        assert_eq!(bind.dig("alice.example.org", "A"), "192.0.2.77");
    });
}

#[test]
fn rfc2136_with_the_wrong_key_says_so_and_changes_nothing() {
    if !prerequisites(
        "rfc2136_with_the_wrong_key_says_so_and_changes_nothing",
        true,
        &["named", "tsig-keygen", "dig"],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bind = Bind::start_local(
        &tmp.path().join("bind"),
        "example.org",
        &[("www", "192.0.2.1")],
    );
    let secret = tmp.path().join("wrong.secret");
    write_secret(
        &secret,
        "c2VjcmV0LXRoYXQtYmluZC1kb2VzLW5vdC1rbm93LTAxMjM0NTY3ODk=",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(async {
        let dns = Rfc2136::new(&provider_config(&bind, &secret))
            .await
            .unwrap();
        dns.compare_and_swap(
            "www.example.org",
            Kind::A,
            &v(&["192.0.2.1"]),
            &v(&["192.0.2.66"]),
            60,
        )
        .await
        .unwrap_err()
    });
    let text = format!("{err}");
    eprintln!("wrong key: {text}");
    assert!(matches!(err, DnsError::Server { .. }), "{err:?}");
    assert!(
        text.contains("TSIG key `orch-key`") || text.contains("NOTAUTH"),
        "{text}"
    );
    assert!(
        !text.contains("c2VjcmV0"),
        "the secret is never shown: {text}"
    );
    assert_eq!(bind.dig("www.example.org", "A"), "192.0.2.1");
}

#[test]
fn dns_show_reads_the_sites_records_at_the_authoritative_server() {
    if !prerequisites(
        "dns_show_reads_the_sites_records_at_the_authoritative_server",
        true,
        &["named", "tsig-keygen", "nsupdate", "dig"],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bind = Bind::start_local(
        &tmp.path().join("bind"),
        "example.org",
        &[("www", "192.0.2.1")],
    );
    let pair = orch_tests::fixture::Pair::new(
        tmp.path(),
        &format!(
            "\n[dns.main]\nkind = \"rfc2136\"\nserver = \"{}:{}\"\nzone = \"example.org\"\ntsig_name = \"{}\"\ntsig_secret_file = \"tsig.secret\"\n",
            bind.addr, bind.port, bind.key_name
        ),
    );
    let config = pair.config("alice");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[sites.alice-web]\n",
        "[sites.alice-web]\ndns = \"main\"\nrecords = [\"www.example.org\"]\n",
    );
    std::fs::write(&config, text).unwrap();
    write_secret(&pair.alice.join("tsig.secret"), &bind.secret);

    let out = orch_tests::orch::run(&[
        "--config",
        config.to_str().unwrap(),
        "dns",
        "show",
        "alice-web",
        "--json",
    ]);
    let (stdout, stderr) = orch_tests::orch::text(&out);
    assert_eq!(orch_tests::orch::code(&out), 0, "{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let got: Vec<(String, String, serde_json::Value)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["type"].as_str().unwrap().into(),
                r["values"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "www.example.org".into(),
                "A".into(),
                serde_json::json!(["192.0.2.1"])
            ),
            (
                "www.example.org".into(),
                "AAAA".into(),
                serde_json::json!([])
            ),
            (
                "_orch.alice-web.example.org".into(),
                "TXT".into(),
                serde_json::json!([])
            ),
        ]
    );
    let out = orch_tests::orch::run(&[
        "--config",
        config.to_str().unwrap(),
        "dns",
        "show",
        "alice-web",
    ]);
    assert!(
        orch_tests::orch::text(&out)
            .0
            .contains("www.example.org              A     192.0.2.1"),
        "{}",
        orch_tests::orch::text(&out).0
    );

    // `orch check` carries the same rows, and fails when the server cannot be asked.
    let check = |config: &std::path::Path| {
        orch_tests::orch::run(&[
            "--config",
            config.to_str().unwrap(),
            "check",
            "alice-web",
            "--json",
        ])
    };
    let out = check(&config);
    let (stdout, stderr) = orch_tests::orch::text(&out);
    assert_eq!(orch_tests::orch::code(&out), 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["site"], "alice-web");
    assert_eq!(doc["dns"]["ok"], true);
    assert_eq!(doc["dns"]["records"], rows);
    drop(bind);
    let out = check(&config);
    let (stdout, _) = orch_tests::orch::text(&out);
    assert_eq!(orch_tests::orch::code(&out), 1, "{stdout}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["dns"]["ok"], false, "{doc}");
    assert!(
        doc["dns"]["error"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{doc}"
    );
}

#[test]
fn a_nodes_name_follows_its_new_address() {
    if !prerequisites(
        "a_nodes_name_follows_its_new_address",
        true,
        &["ip", "ping", "named", "tsig-keygen", "dig"],
    ) {
        return;
    }
    let mut lab = orch_tests::lab::Lab::new("ddns");
    let dns = lab.host("dns", &["192.0.2.53/24"]);
    let bind = Bind::start(
        &mut lab,
        &dns,
        "example.org",
        &[("alice", "192.0.2.1"), ("bob", "192.0.2.2")],
    );
    let provider = format!(
        "\n[dns.main]\nkind = \"rfc2136\"\nserver = \"192.0.2.53:53\"\nzone = \"example.org\"\ntsig_name = \"{}\"\ntsig_secret_file = \"tsig.secret\"\n",
        bind.key_name
    );
    let pair = orch_tests::fixture::Pair::new(lab.dir(), &provider);
    for (node, dir) in [("alice", &pair.alice), ("bob", &pair.bob)] {
        let config = pair.config(node);
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "[nodes.alice]\n",
            "[nodes.alice]\nddns = { provider = \"main\", name = \"alice.example.org\" }\n",
        );
        std::fs::write(&config, text).unwrap();
        write_secret(&dir.join("tsig.secret"), &bind.secret);
    }
    let hosts = [
        lab.host("alice", &["192.0.2.1/24"]),
        lab.host("bob", &["192.0.2.2/24"]),
    ];
    pair.spawn_agents(&mut lab, &hosts);
    orch_tests::eventually(
        "the tunnel comes up",
        std::time::Duration::from_secs(10),
        || lab.ping(&hosts[0], "198.51.100.2"),
    );

    // Alice's ISP renumbers her; nobody touches DNS by hand.
    for args in [
        ["ip", "addr", "del", "192.0.2.1/24", "dev", "eth0"],
        ["ip", "addr", "add", "192.0.2.21/24", "dev", "eth0"],
    ] {
        assert!(lab.run(&hosts[0], &args).status.success());
    }
    let changed = std::time::Instant::now();
    orch_tests::eventually(
        "alice.example.org follows",
        std::time::Duration::from_secs(90),
        || {
            let now = bind.dig("alice.example.org", "A");
            if now == "192.0.2.21" {
                Ok(())
            } else {
                Err(format!("{now}\n{}", lab.log("agent-alice")))
            }
        },
    );
    eprintln!(
        "DNS followed {:?} after the address change",
        changed.elapsed()
    );
    let out = orch_tests::orch::run(&[
        "--config",
        pair.config("alice").to_str().unwrap(),
        "history",
    ]);
    let history = orch_tests::orch::text(&out).0;
    assert!(
        history.contains("ddns") && history.contains("alice.example.org A 192.0.2.1 -> 192.0.2.21"),
        "{history}"
    );
}

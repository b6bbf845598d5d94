//! The playbook format: every shipped one parses; every problem is reported at once, at
//! its line and column.

use super::*;

fn problems(text: &str) -> Vec<String> {
    match parse("t", Path::new("t.toml"), text) {
        Ok(_) => vec![],
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn every_shipped_playbook_parses() {
    for (name, text) in SHIPPED {
        parse(name, Path::new(name), text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}

#[test]
fn every_problem_is_reported_at_its_position() {
    let text = "\
description = \"x\"
colour = \"red\"

[[step]]
name = \"two kinds\"
run = [\"true\"]
shell = \"true\"

[[step]]
name = \"no kind\"

[[step]]
name = \"bad\"
run = [\"echo\", \"{nope}\", \"{db.port}\"]
timeout = \"soon\"
on = \"elsewhere\"
colour = 1

[[step]]
name = \"sql without a database\"
sql = \"SELECT 1\"
";
    let p = problems(text);
    let want = [
        "t.toml:2:10: colour: unknown key `colour`",
        "t.toml:7:9: step[0].shell: a step has exactly one of run, shell, sql, http, wait",
        "t.toml:10:8: step[1].name: a step needs one of run, shell, sql, http, wait",
        "t.toml:17:10: step[2].colour: unknown key `colour`",
        "t.toml:16:6: step[2].on: `elsewhere`",
        "t.toml:15:11: step[2].timeout:",
        "t.toml:14:7: step[2].run: unknown variable `{nope}`",
        "t.toml:14:7: step[2].run: `{db.port}` needs the step's database",
        "t.toml:21:7: step[3].sql: a database step needs `engine`",
    ];
    for w in want {
        assert!(
            p.iter().any(|l| l.starts_with(w)),
            "missing {w:?} in\n{}",
            p.join("\n")
        );
    }
    assert_eq!(p.len(), want.len(), "{}", p.join("\n"));
}

#[test]
fn steps_read_their_kinds_defaults_and_failure_rule() {
    let book = parse(
        "t",
        Path::new("t.toml"),
        "[[step]]\nname = \"a\"\nrun = [\"systemctl\", \"stop\", \"nginx\"]\non = \"peer\"\non_failure = \"continue\"\n\n\
         [[step]]\nname = \"b\"\nwait = \"tcp:{peer.tunnel_ip}:80\"\n\n\
         [[step]]\nname = \"c\"\nhttp = \"http://127.0.0.1/\"\nexpect = 204\ntimeout = \"5s\"\n\n\
         [[step]]\nname = \"d\"\nwait = \"replica-caught-up\"\nengine = \"mysql\"\n",
    )
    .unwrap();
    let [a, b, c, d] = &book.steps[..] else {
        panic!("{book:?}")
    };
    assert_eq!((a.on, a.on_failure), (On::Peer, OnFailure::Continue));
    assert_eq!(a.timeout, default_timeout("run"));
    assert_eq!(
        b.action,
        Action::Wait(WaitFor::Tcp("{peer.tunnel_ip}:80".into()))
    );
    assert_eq!(b.timeout, default_timeout("wait"));
    assert_eq!(
        (c.action.clone(), c.timeout),
        (
            Action::Http {
                url: "http://127.0.0.1/".into(),
                expect: 204
            },
            Duration::from_secs(5)
        )
    );
    assert!(d.needs_database() && d.engine == Some(DbKind::Mysql));
}

#[test]
fn placeholders_and_variables() {
    assert_eq!(
        placeholders("a {site} {{x}} {db.main.port}").unwrap(),
        ["site", "db.main.port"]
    );
    assert!(placeholders("a {site").is_err());
    assert!(placeholders("a } b").is_err());
    assert!(unknown_variable("peer.public_ip").is_none());
    assert!(unknown_variable("db.data_dir").is_none());
    assert!(unknown_variable("db.main.host").is_none());
    assert!(unknown_variable("db.main.colour").is_some());
    assert!(unknown_variable("self.name").is_some());
}

#[test]
fn local_files_win_and_bad_ones_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("playbooks")).unwrap();
    std::fs::write(
        dir.path().join("playbooks/web-start.toml"),
        "[[step]]\nname = \"x\"\nrun = [\"true\"]\n",
    )
    .unwrap();
    assert!(matches!(
        find(dir.path(), "web-start").unwrap().origin,
        Origin::File(_)
    ));
    assert_eq!(
        find(dir.path(), "web-stop").unwrap().origin,
        Origin::Shipped
    );
    std::fs::write(
        dir.path().join("playbooks/bad.toml"),
        "[[step]]\nname = \"x\"\n",
    )
    .unwrap();
    let e = find(dir.path(), "bad").unwrap_err();
    assert!(
        e.diagnostics[0].to_string().contains("bad.toml:2:8"),
        "{e:?}"
    );
    let e = find(dir.path(), "../etc/passwd").unwrap_err();
    assert!(e.summary().contains("not a playbook name"), "{e:?}");
    let e = find(dir.path(), "nope").unwrap_err();
    assert!(e.summary().contains("no playbook `nope`"), "{e:?}");
}

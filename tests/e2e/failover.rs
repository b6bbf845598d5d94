//! Automatic failover end to end, each case a fresh pair in the lab: real agents with
//! their tunnel, a real BIND holding the site's records and its `_orch` lock record, an
//! SMTP server for the alerts, the site's web server on the master, and two witnesses
//! (one TCP, one HTTP) in hosts of their own.
//!
//! ```text
//! alice 192.0.2.1 (master of alice-web, web on :8080)    witness w1 192.0.2.61 (tcp)
//! bob   192.0.2.2 (standby, SMTP on its loopback)         witness w2 192.0.2.62 (http)
//! dns   192.0.2.53 (BIND: www.example.org, _orch.alice-web.example.org TXT)
//! ```

use orch_tests::bind::Bind;
use orch_tests::fixture::{failover_pair, Pair};
use orch_tests::lab::{Host, Lab};
use orch_tests::wg::{self, WgEnd};
use orch_tests::{eventually, free_port, orch, prerequisites, smtp_command};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";
const SITE: &str = "alice-web";
const LOCK: &str = "_orch.alice-web.example.org";
const WWW: &str = "www.example.org";
/// Long enough for a whole failover with `after = "3s"` on a loaded 2-core machine.
const FAILOVER_WITHIN: Duration = Duration::from_secs(40);

/// The promote playbook: notes each run's epoch in the node's state dir.
const MARK: &str = "[[step]]\nname = \"mark\"\nshell = \"echo {epoch} >> {state_dir}/promoted\"\n";

pub(crate) struct Case {
    pub failover: &'static str,
    pub after: &'static str,
    /// The `mark` playbook (the site's promote list by default).
    pub promote: &'static str,
    /// The site's promote, demote and rejoin lists.
    pub lists: &'static str,
    /// More config, appended (a database of the site).
    pub extra: String,
    /// Agents find programs in `<lab>/<node>-bin` first (stand-ins for systemctl).
    pub bin: bool,
    /// The tunnel's keepalive.
    pub keepalive: &'static str,
}

impl Default for Case {
    fn default() -> Case {
        Case {
            failover: "auto",
            after: "3s",
            promote: MARK,
            lists: "promote = [\"mark\"]\ndemote = [\"demoted\"]\nrejoin = [\"rejoined\"]\n",
            extra: String::new(),
            bin: false,
            keepalive: "5s",
        }
    }
}

pub(crate) struct Fo {
    pub lab: Lab,
    pub pair: Pair,
    pub alice: Host,
    pub bob: Host,
    pub bind: Bind,
    maildir: PathBuf,
    pub agents: [usize; 2],
    web: usize,
    bin: bool,
}

pub(crate) fn needs(test: &str) -> bool {
    prerequisites(
        test,
        true,
        &["ip", "named", "tsig-keygen", "nsupdate", "dig", PYTHON],
    )
}

/// [`needs`], and PostgreSQL's programs.
pub(crate) fn needs_postgres(test: &str) -> bool {
    let programs = orch_tests::dbserver::pg_programs();
    needs(test)
        && prerequisites(
            test,
            true,
            &programs.iter().map(String::as_str).collect::<Vec<_>>(),
        )
}

pub(crate) fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Fo {
    pub(crate) fn new(test: &str, case: Case) -> Fo {
        let mut lab = Lab::new(test);
        let dir = lab.dir().to_owned();
        let alice = lab.host("alice", &["192.0.2.1/24"]);
        let bob = lab.host("bob", &["192.0.2.2/24"]);
        let dns = lab.host("dns", &["192.0.2.53/24"]);
        let w1 = lab.host("w1", &["192.0.2.61/24"]);
        let w2 = lab.host("w2", &["192.0.2.62/24"]);
        // `blog` is for tests that add a second site of alice's.
        let bind = Bind::start(
            &mut lab,
            &dns,
            "example.org",
            &[("www", "192.0.2.1"), ("blog", "192.0.2.1")],
        );
        let smtp_port = free_port();
        let pair = failover_pair(
            &dir,
            &bind,
            &format!(
                "[mail]\ntransport = \"smtp\"\nhost = \"127.0.0.1\"\nport = {smtp_port}\n\
                 tls = \"none\"\nfrom = \"orch@example.org\"\nto = [\"ops@example.org\"]\n"
            ),
            &format!(
                "failover = \"{}\"\nafter = \"{}\"\n{}",
                case.failover, case.after, case.lists
            ),
            &case.extra,
        );
        std::fs::create_dir_all(dir.join("alice-www")).unwrap();
        std::fs::write(dir.join("alice-www/index.html"), "alice's page\n").unwrap();
        std::fs::create_dir_all(dir.join("bob-www")).unwrap();
        for node in ["alice", "bob"] {
            let path = pair.config(node);
            let text = std::fs::read_to_string(&path).unwrap().replacen(
                "keepalive = \"5s\"",
                &format!("keepalive = \"{}\"", case.keepalive),
                1,
            );
            std::fs::write(&path, text).unwrap();
            let books = path.parent().unwrap().join("playbooks");
            std::fs::create_dir_all(&books).unwrap();
            std::fs::write(books.join("mark.toml"), case.promote).unwrap();
            // Demote and rejoin note each run's epoch, as `mark` does.
            for name in ["demoted", "rejoined"] {
                let book = format!(
                    "[[step]]\nname = \"note\"\nshell = \"echo {{epoch}} >> {{state_dir}}/{name}\"\n"
                );
                std::fs::write(books.join(format!("{name}.toml")), book).unwrap();
            }
        }
        // The witnesses and the site's web server.
        let www = dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), "alice-web\n").unwrap();
        for (host, port) in [(&w1, "80"), (&w2, "80")] {
            let mut server = Command::new(PYTHON);
            server
                .args([
                    "-m",
                    "http.server",
                    port,
                    "--bind",
                    &host.addr,
                    "--directory",
                ])
                .arg(&www);
            lab.spawn(host, &format!("witness-{}", host.name), server);
        }
        let mut web = Command::new(PYTHON);
        web.args([
            "-m",
            "http.server",
            "8080",
            "--bind",
            "0.0.0.0",
            "--directory",
        ])
        .arg(&www);
        let web = lab.spawn(&alice, "web-alice", web);
        // The SMTP server listens on bob's loopback: bob's alerts arrive there.
        let maildir = dir.join("maildir");
        lab.spawn(&bob, "aiosmtpd", smtp_command(smtp_port, &maildir));
        let mut fo = Fo {
            lab,
            pair,
            alice,
            bob,
            bind,
            maildir,
            agents: [0, 0],
            web,
            bin: case.bin,
        };
        fo.agents = [fo.spawn_agent("alice"), fo.spawn_agent("bob")];
        eventually(
            "alice publishes the site's lock record",
            Duration::from_secs(40),
            || fo.expect_lock("master=alice epoch=1"),
        );
        eventually(
            "bob watches alice, every probe answering",
            Duration::from_secs(40),
            || {
                let f = fo.failover("bob")?;
                if f["state"] == "watching" {
                    Ok(())
                } else {
                    Err(format!("{f:#}"))
                }
            },
        );
        fo
    }

    /// Starts `node`'s agent (again); its log is `agent-NODE`.
    pub(crate) fn spawn_agent(&mut self, node: &str) -> usize {
        let host = if node == "alice" {
            self.alice.clone()
        } else {
            self.bob.clone()
        };
        let mut cmd = Command::new(orch::bin());
        cmd.arg("--config").arg(self.pair.config(node)).arg("agent");
        if self.bin {
            let bin = self.lab.dir().join(format!("{node}-bin"));
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", bin.display()));
        }
        let i = self.lab.spawn(&host, &format!("agent-{node}"), cmd);
        if node == "alice" {
            self.agents[0] = i;
        } else {
            self.agents[1] = i;
        }
        i
    }

    pub(crate) fn logs(&self) -> String {
        format!(
            "--- alice:\n{}\n--- bob:\n{}",
            self.lab.log("agent-alice"),
            self.lab.log("agent-bob")
        )
    }

    /// The site in `orch status --json` of `node`.
    pub(crate) fn site(&self, node: &str) -> Result<Value, String> {
        let status = orch::status_json(&self.pair.config(node))?;
        status["sites"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == SITE))
            .cloned()
            .ok_or_else(|| format!("no {SITE} in {status:#}"))
    }

    pub(crate) fn failover(&self, node: &str) -> Result<Value, String> {
        let site = self.site(node)?;
        match &site["failover_state"] {
            Value::Null => Err(format!("no failover state yet: {site:#}")),
            f => Ok(f.clone()),
        }
    }

    pub(crate) fn expect_lock(&self, want: &str) -> Result<(), String> {
        let txt = self.bind.dig(LOCK, "TXT");
        if txt == format!("\"{want}\"") {
            Ok(())
        } else {
            Err(format!("{LOCK} TXT holds {txt:?}, not {want:?}"))
        }
    }

    pub(crate) fn www(&self) -> String {
        self.bind.dig(WWW, "A")
    }

    /// The epochs the promote playbook ran under on `node`, one per run.
    pub(crate) fn promoted(&self, node: &str) -> Vec<String> {
        self.noted(node, "promoted")
    }

    /// The epochs the playbook writing `state/NAME` ran under on `node`, one per run.
    pub(crate) fn noted(&self, node: &str, name: &str) -> Vec<String> {
        let dir = if node == "alice" {
            &self.pair.alice
        } else {
            &self.pair.bob
        };
        std::fs::read_to_string(dir.join("state").join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub(crate) fn orch(&self, node: &str, args: &[&str]) -> Output {
        let config = self.pair.config(node);
        let mut argv = vec!["--config", config.to_str().unwrap()];
        argv.extend_from_slice(args);
        orch::run(&argv)
    }

    pub(crate) fn mails(&self) -> Vec<Value> {
        if !self.maildir.exists() {
            return Vec::new();
        }
        super::report::mailbox(&self.maildir)
    }

    /// Waits for a mail whose subject starts with `prefix`; returns its text part.
    pub(crate) fn mail(&self, prefix: &str) -> String {
        eventually(
            &format!("a mail \"{prefix}…\""),
            Duration::from_secs(40),
            || {
                let mails = self.mails();
                super::report::with_subject(&mails, prefix)
                    .first()
                    .map(|m| m["parts"]["text/plain"].as_str().unwrap_or("").to_owned())
                    .ok_or_else(|| {
                        let subjects: Vec<&Value> = mails.iter().map(|m| &m["subject"]).collect();
                        format!("subjects: {subjects:?}")
                    })
            },
        )
    }

    /// Alice's server dies: its agent is killed and its link cut.
    pub(crate) fn kill_alice(&mut self) -> Instant {
        self.kill(0)
    }

    /// Bob's server dies, as [`Fo::kill_alice`].
    pub(crate) fn kill_bob(&mut self) -> Instant {
        self.kill(1)
    }

    fn kill(&mut self, node: usize) -> Instant {
        let at = Instant::now();
        self.lab
            .proc(self.agents[node])
            .signal_and_wait(libc::SIGKILL, Duration::from_secs(5))
            .expect("the agent dies");
        let netns = if node == 0 {
            &self.alice.netns
        } else {
            &self.bob.netns
        };
        ip(&["-n", netns, "link", "set", "eth0", "down"]);
        at
    }

    /// Alice's server comes back at `addr` (a new public address on the same link) and
    /// her agent starts again; returns when it was started.
    pub(crate) fn return_alice(&mut self, addr: &str) -> Instant {
        let renumber = format!(
            "ip addr del 192.0.2.1/24 dev eth0 && ip addr add {addr}/24 dev eth0 \
             && ip link set eth0 up"
        );
        let out = self.lab.run(&self.alice, &["sh", "-c", &renumber]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let back = Instant::now();
        self.spawn_agent("alice");
        back
    }

    /// Bob's failover state, once it is `state` and its summary holds `words`.
    pub(crate) fn wait_bob(&self, state: &str, words: &str, within: Duration) -> Value {
        eventually(
            &format!("bob's failover state is {state} ({words})"),
            within,
            || {
                let f = self.failover("bob")?;
                if f["state"] == state && f["summary"].as_str().unwrap_or("").contains(words) {
                    Ok(f)
                } else {
                    Err(format!("{f:#}"))
                }
            },
        )
    }

    /// Checks for `d` that the site did not move: alice holds the lock at epoch 1, the
    /// record is where it was, bob promoted nothing.
    pub(crate) fn stays_put(&self, www: &str, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.expect_lock("master=alice epoch=1")
                .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
            assert_eq!(self.www(), www, "{}", self.logs());
            assert!(self.promoted("bob").is_empty(), "{}", self.logs());
            std::thread::sleep(Duration::from_millis(500));
        }
        let site = self.site("bob").unwrap();
        assert_eq!(site["role"], "standby", "{site:#}");
        assert_eq!(site["epoch"], 1, "{site:#}");
    }

    pub(crate) fn history(&self, node: &str) -> String {
        let out = self.orch(node, &["history", SITE, "--limit", "500"]);
        orch::text(&out).0
    }
}

/// The master's server dies; bob takes the site over.
pub(crate) fn assert_failed_over_to_bob(fo: &Fo, killed: Instant) -> Duration {
    eventually("the lock names bob at epoch 2", FAILOVER_WITHIN, || {
        fo.expect_lock("master=bob epoch=2")
            .map_err(|e| format!("{e}\n{}", fo.logs()))
    });
    let took = killed.elapsed();
    assert_eq!(fo.www(), "192.0.2.2");
    let f = fo.wait_bob("failed-over", "failed over to bob", FAILOVER_WITHIN);
    assert_eq!(f["armed"], false, "{f:#}");
    assert_eq!(fo.promoted("bob"), ["2"], "the promote playbook ran once");
    let site = fo.site("bob").unwrap();
    assert_eq!(site["role"], "master", "{site:#}");
    assert_eq!(site["epoch"], 2, "{site:#}");
    took
}

#[test]
fn a_dead_master_is_failed_over_to_the_standby() {
    let test = "a_dead_master_is_failed_over_to_the_standby";
    if !needs(test) {
        return;
    }
    let mut fo = Fo::new(test, Case::default());
    let killed = fo.kill_alice();
    // While it counts, the status says how long is left and why.
    let counting = fo.wait_bob("counting", "alice unreachable since", FAILOVER_WITHIN);
    assert!(
        counting["summary"]
            .as_str()
            .unwrap()
            .contains("agent silent, health 0/1, witnesses 2/2"),
        "{counting:#}"
    );
    assert!(counting["failing_over_in_secs"].is_u64(), "{counting:#}");
    let took = assert_failed_over_to_bob(&fo, killed);
    eprintln!("failover took {took:?} with after = 3s");
    let text = fo.mail("[orch] FAILOVER alice-web: alice-web failed over to bob");
    assert!(text.contains("alice lost since"), "{text}");
    assert!(
        text.contains("agent silent, health 0/1, witnesses 2/2"),
        "{text}"
    );
    assert!(text.contains("promote playbooks: mark ok"), "{text}");
    assert!(text.contains("orch ack alice-web"), "{text}");
    let history = fo.history("bob");
    assert!(
        history.contains("took the DNS lock of alice-web"),
        "{history}"
    );
    assert!(history.contains("playbook mark step `mark`"), "{history}");
    assert!(
        history.contains("alice-web failed over to bob"),
        "{history}"
    );
    // `orch status` says it in one line.
    let out = fo.orch("bob", &["status"]);
    let (stdout, _) = orch::text(&out);
    assert!(
        stdout.lines().any(
            |l| l.starts_with("failover alice-web: failed over to bob at")
                && l.contains("orch ack alice-web")
        ),
        "{stdout}"
    );
}

#[test]
fn only_the_tunnel_cut_is_no_failover() {
    let test = "only_the_tunnel_cut_is_no_failover";
    if !needs(test) {
        return;
    }
    let fo = Fo::new(test, Case::default());
    // WireGuard's UDP dropped both ways; the web server still answers.
    for host in [&fo.alice, &fo.bob] {
        ip(&[
            "-n",
            &host.netns,
            "rule",
            "add",
            "ipproto",
            "udp",
            "dport",
            "51820",
            "blackhole",
        ]);
    }
    fo.wait_bob(
        "holding",
        "the tunnel to alice is down but alice-web answers",
        FAILOVER_WITHIN,
    );
    fo.stays_put("192.0.2.1", Duration::from_secs(8));
}

#[test]
fn only_the_web_server_down_is_no_failover() {
    let test = "only_the_web_server_down_is_no_failover";
    if !needs(test) {
        return;
    }
    let mut fo = Fo::new(test, Case::default());
    let web = fo.web;
    fo.lab
        .proc(web)
        .signal_and_wait(libc::SIGKILL, Duration::from_secs(5))
        .expect("the web server dies");
    fo.wait_bob(
        "holding",
        "alice-web is unhealthy but alice's agent answers",
        FAILOVER_WITHIN,
    );
    fo.stays_put("192.0.2.1", Duration::from_secs(8));
}

#[test]
fn a_standby_cut_off_from_master_and_a_witness_does_not_fail_over() {
    let test = "a_standby_cut_off_from_master_and_a_witness_does_not_fail_over";
    if !needs(test) {
        return;
    }
    let fo = Fo::new(test, Case::default());
    // Bob loses alice and witness w1, but still reaches the DNS server and w2.
    for dest in ["192.0.2.1/32", "192.0.2.61/32"] {
        ip(&["-n", &fo.bob.netns, "route", "add", "blackhole", dest]);
    }
    let f = fo.wait_bob(
        "holding",
        "this node may be the one cut off (1/2 witnesses answer)",
        FAILOVER_WITHIN,
    );
    let probes = f["probes"].as_array().unwrap();
    assert!(
        probes.iter().any(|p| p["kind"] == "witness"
            && p["target"] == "tcp:192.0.2.61:80"
            && p["ok"] == false),
        "{f:#}"
    );
    fo.stays_put("192.0.2.1", Duration::from_secs(8));
    let out = fo.orch("bob", &["status"]);
    let (stdout, _) = orch::text(&out);
    assert!(
        stdout.contains("failover alice-web: this node may be the one cut off"),
        "{stdout}"
    );
}

#[test]
fn records_moved_by_someone_else_are_not_taken() {
    let test = "records_moved_by_someone_else_are_not_taken";
    if !needs(test) {
        return;
    }
    let mut fo = Fo::new(test, Case::default());
    fo.kill_alice();
    // Someone points the site elsewhere before bob's count ends.
    fo.bind.set_a("www", "203.0.113.9");
    fo.wait_bob("holding", "someone else moved them", FAILOVER_WITHIN);
    fo.stays_put("203.0.113.9", Duration::from_secs(6));
    let text = fo.mail("[orch] ALERT alice-web: not taking over alice-web from alice");
    assert!(text.contains("203.0.113.9"), "{text}");
    assert!(text.contains("orch ack alice-web"), "{text}");
}

#[test]
fn dns_down_at_the_failover_promotes_nothing_until_it_returns() {
    let test = "dns_down_at_the_failover_promotes_nothing_until_it_returns";
    if !needs(test) {
        return;
    }
    let mut fo = Fo::new(test, Case::default());
    fo.bind.stop(&mut fo.lab);
    fo.kill_alice();
    fo.wait_bob(
        "holding",
        "the authoritative DNS does not answer",
        FAILOVER_WITHIN,
    );
    // Held for a while: nothing promoted, the role unchanged.
    let end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < end {
        assert!(fo.promoted("bob").is_empty(), "{}", fo.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(fo.site("bob").unwrap()["epoch"], 1);
    fo.bind.start_again(&mut fo.lab);
    let returned = Instant::now();
    assert_failed_over_to_bob(&fo, returned);
}

#[test]
fn a_standby_killed_after_taking_the_lock_completes_the_failover_once() {
    let test = "a_standby_killed_after_taking_the_lock_completes_the_failover_once";
    if !needs(test) {
        return;
    }
    // The first run of the promote playbook hangs, so that bob is killed mid-takeover.
    let slow = "[[step]]\nname = \"mark\"\ntimeout = \"120s\"\n\
                shell = \"echo {epoch} >> {state_dir}/promoted; \
                if [ ! -e {state_dir}/slept ]; then touch {state_dir}/slept; sleep 100; fi\"\n";
    let mut fo = Fo::new(
        test,
        Case {
            promote: slow,
            ..Case::default()
        },
    );
    fo.kill_alice();
    eventually(
        "bob took the lock and runs its playbook",
        FAILOVER_WITHIN,
        || {
            fo.expect_lock("master=bob epoch=2")?;
            if fo.promoted("bob").is_empty() {
                return Err("the playbook has not started".into());
            }
            Ok(())
        },
    );
    let bob_agent = fo.agents[1];
    fo.lab
        .proc(bob_agent)
        .signal_and_wait(libc::SIGKILL, Duration::from_secs(5))
        .expect("bob's agent dies");
    fo.spawn_agent("bob");
    fo.wait_bob("failed-over", "failed over to bob", FAILOVER_WITHIN);
    fo.expect_lock("master=bob epoch=2").unwrap();
    assert_eq!(fo.www(), "192.0.2.2");
    assert_eq!(fo.site("bob").unwrap()["epoch"], 2, "one epoch bump");
    assert_eq!(
        fo.promoted("bob"),
        ["2", "2"],
        "the interrupted playbook ran again to its end, under the same epoch"
    );
    let history = fo.history("bob");
    assert_eq!(
        history.matches("took the DNS lock of alice-web").count(),
        1,
        "{history}"
    );
    let failovers = history
        .lines()
        .filter(|l| l.contains(" failover ") && l.contains("alice-web failed over to bob"))
        .count();
    assert_eq!(failovers, 1, "{history}");
}

#[test]
fn a_second_loss_waits_for_ack() {
    let test = "a_second_loss_waits_for_ack";
    if !needs(test) {
        return;
    }
    let mut fo = Fo::new(test, Case::default());
    let killed = fo.kill_alice();
    assert_failed_over_to_bob(&fo, killed);
    // Alice comes back: the lock tells her she was replaced; she follows bob.
    ip(&["-n", &fo.alice.netns, "link", "set", "eth0", "up"]);
    fo.spawn_agent("alice");
    eventually("alice learns bob is master", FAILOVER_WITHIN, || {
        let site = fo.site("alice")?;
        if site["role"] == "standby" && site["epoch"] == 2 {
            Ok(())
        } else {
            Err(format!("{site:#}"))
        }
    });
    // Bob dies in turn: alice must not take the site back on her own.
    fo.kill_bob();
    let waiting = |fo: &Fo| {
        eventually("alice holds: disarmed", FAILOVER_WITHIN, || {
            let f = fo.failover("alice")?;
            if f["state"] == "holding"
                && f["summary"]
                    .as_str()
                    .unwrap_or("")
                    .contains("disarmed until `orch ack alice-web`")
            {
                Ok(())
            } else {
                Err(format!("{f:#}"))
            }
        })
    };
    waiting(&fo);
    std::thread::sleep(Duration::from_secs(4));
    fo.expect_lock("master=bob epoch=2").unwrap();
    assert!(fo.promoted("alice").is_empty());
    // `orch ack` re-arms it: alice takes the site over.
    let out = fo.orch("alice", &["ack", SITE]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{stdout}{stderr}");
    assert!(stdout.contains("re-armed"), "{stdout}");
    eventually("the lock names alice at epoch 3", FAILOVER_WITHIN, || {
        fo.expect_lock("master=alice epoch=3")
            .map_err(|e| format!("{e}\n{}", fo.logs()))
    });
    assert_eq!(fo.www(), "192.0.2.1");
    eventually("alice ran her promote playbook", FAILOVER_WITHIN, || {
        let p = fo.promoted("alice");
        (p == ["3"]).then_some(()).ok_or(format!("{p:?}"))
    });
}

#[test]
fn manual_failover_alerts_and_promote_force_takes_over() {
    let test = "manual_failover_alerts_and_promote_force_takes_over";
    if !needs(test) {
        return;
    }
    let mut fo = Fo::new(
        test,
        Case {
            failover: "manual",
            ..Case::default()
        },
    );
    fo.kill_alice();
    fo.wait_bob(
        "holding",
        "alice-web fails over by hand: run `orch promote alice-web --force` on this node",
        FAILOVER_WITHIN,
    );
    let text = fo.mail("[orch] ALERT alice-web: alice looks lost and alice-web fails over by hand");
    assert!(text.contains("orch promote alice-web --force"), "{text}");
    fo.stays_put("192.0.2.1", Duration::from_secs(5));

    // The person runs what the alert says: first the dry run, which changes nothing…
    let out = fo.orch("bob", &["promote", SITE, "--force", "--dry-run"]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{stdout}{stderr}");
    for line in [
        "skipped (--force: alice is taken to be dead)",
        "DNS lock _orch.alice-web.example.org: \"master=alice epoch=1\" → \"master=bob epoch=2\"",
        "record www.example.org A: [\"192.0.2.1\"] → [\"192.0.2.2\"]",
        "promote playbook mark:",
        "dry run: nothing was changed",
    ] {
        assert!(stdout.contains(line), "{line}\n{stdout}");
    }
    fo.stays_put("192.0.2.1", Duration::from_secs(1));
    // …then for real: the lock, the records, the epoch, the promote playbook.
    let out = fo.orch("bob", &["promote", SITE, "--force"]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{stdout}{stderr}");
    assert!(stdout.contains("failed over to bob at"), "{stdout}");
    fo.expect_lock("master=bob epoch=2").unwrap();
    assert_eq!(fo.www(), "192.0.2.2");
    assert_eq!(fo.promoted("bob"), ["2"]);
    let site = fo.site("bob").unwrap();
    assert_eq!(
        (site["role"].clone(), site["epoch"].clone()),
        ("master".into(), 2.into())
    );
    let text = fo.mail("[orch] FAILOVER alice-web: alice-web failed over to bob");
    assert!(text.contains("`orch promote --force` on bob"), "{text}");
    // Once more: bob is master already.
    let out = fo.orch("bob", &["promote", SITE, "--force"]);
    assert_eq!(orch::code(&out), 1);
    assert!(orch::text(&out)
        .1
        .contains("bob is master of alice-web already"));
}

#[test]
fn a_renumbered_master_moves_its_records() {
    let test = "a_renumbered_master_moves_its_records";
    if !needs(test) {
        return;
    }
    // `after` longer than the tunnel's roam and the master's record check: while alice
    // renumbers, bob sees neither her agent nor her site for a few seconds.
    let fo = Fo::new(
        test,
        Case {
            after: "30s",
            ..Case::default()
        },
    );
    // (Deleting a primary address deletes its secondaries: the new one comes after.)
    let renumber = "ip addr del 192.0.2.1/24 dev eth0 && ip addr add 192.0.2.11/24 dev eth0";
    assert!(fo
        .lab
        .run(&fo.alice, &["sh", "-c", renumber])
        .status
        .success());
    eventually(
        "the record follows alice's new address",
        Duration::from_secs(40),
        || {
            let a = fo.www();
            (a == "192.0.2.11").then_some(()).ok_or_else(|| {
                let net = fo
                    .lab
                    .run(&fo.alice, &["sh", "-c", "ip addr; ip route; ip rule"]);
                format!(
                    "www holds {a:?}\nalice: {:#?}\n{}\n{}",
                    orch::status_json(&fo.pair.config("alice")),
                    String::from_utf8_lossy(&net.stdout),
                    fo.logs()
                )
            })
        },
    );
    fo.expect_lock("master=alice epoch=1").unwrap();
    fo.wait_bob("watching", "watching alice", FAILOVER_WITHIN);
    let site = fo.site("bob").unwrap();
    assert_eq!(
        (site["role"].clone(), site["epoch"].clone()),
        ("standby".into(), 1.into())
    );
    assert!(fo.promoted("bob").is_empty());
    assert!(fo
        .history("alice")
        .contains("moved the records to 192.0.2.11"));
}

/// `bench/failover`: master killed → the record changed at the authoritative server,
/// `RUNS` runs (default five) with `after = 10s`; then the old master back at a new
/// address → the pair healed. Prints markdown tables.
#[test]
#[ignore = "a benchmark: bench/failover runs it"]
fn bench_failover() {
    let test = "bench_failover";
    if !needs(test) {
        return;
    }
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let within = Duration::from_secs(60);
    // Per run: the takeover, then from alice's return: the tunnel up, alice a standby,
    // her own name at her new address, the first push from bob to her done.
    let mut times: [Vec<f64>; 5] = Default::default();
    for run in 0..runs {
        let mut fo = Fo::new(
            test,
            Case {
                after: "10s",
                ..Case::default()
            },
        );
        // Bob holds a copy of alice's site.
        let out = fo.orch("alice", &["push", SITE]);
        assert_eq!(orch::code(&out), 0, "{:?}", orch::text(&out));
        let killed = fo.kill_alice();
        eventually("the record moves", within, || {
            let a = fo.www();
            (a == "192.0.2.2").then_some(()).ok_or(a)
        });
        let took = killed.elapsed();
        // Back with a new address once bob holds the site.
        let back = fo.return_alice("192.0.2.21");
        eventually("the tunnel heals", within, || {
            fo.lab.ping(&fo.alice, "198.51.100.2")
        });
        let tunnel = back.elapsed();
        eventually("alice is bob's standby", within, || {
            let site = fo.site("alice")?;
            (site["role"] == "standby" && site["epoch"] == 2)
                .then_some(())
                .ok_or_else(|| format!("{site:#}"))
        });
        let rejoined = back.elapsed();
        eventually("alice's name follows her", within, || {
            let a = fo.bind.dig("alice.example.org", "A");
            (a == "192.0.2.21").then_some(()).ok_or(a)
        });
        let name = back.elapsed();
        eventually("bob pushes to alice", within, || {
            let out = fo.orch("bob", &["push", SITE]);
            let (stdout, stderr) = orch::text(&out);
            (orch::code(&out) == 0)
                .then_some(())
                .ok_or(format!("{stdout}{stderr}"))
        });
        let pushed = back.elapsed();
        assert_eq!(fo.noted("alice", "demoted"), ["2"], "{}", fo.logs());
        assert_eq!(fo.noted("alice", "rejoined"), ["2"], "{}", fo.logs());
        assert_eq!(
            std::fs::read_to_string(fo.lab.dir().join("alice-www/index.html")).unwrap(),
            "alice's page\n"
        );
        eprintln!(
            "run {}: failover {took:.2?}; after the return: tunnel {tunnel:.2?}, standby \
             {rejoined:.2?}, name {name:.2?}, push done {pushed:.2?}",
            run + 1
        );
        for (all, t) in times.iter_mut().zip([took, tunnel, rejoined, name, pushed]) {
            all.push(t.as_secs_f64());
        }
    }
    for all in &mut times {
        all.sort_by(f64::total_cmp);
    }
    let spread = |all: &[f64]| {
        format!(
            "{:.2} / {:.2} / {:.2} s",
            all[0],
            all[all.len() / 2],
            all[all.len() - 1]
        )
    };
    let median = times[0][times[0].len() / 2];
    println!("master killed → the site's record at the standby's address (min / median / max):");
    println!();
    println!("| after | runs | failover | target (median) |");
    println!("|---|---|---|---|");
    println!(
        "| 10 s | {runs} | {} | ≤ 15 s: {} |",
        spread(&times[0]),
        if median <= 15.0 { "met" } else { "MISSED" }
    );
    println!();
    println!("the old master back at a new address → the pair healed, from its agent's start:");
    println!();
    println!("| runs | tunnel up | a standby of the new master | its own name at the new address | first push to it done |");
    println!("|---|---|---|---|---|");
    println!(
        "| {runs} | {} | {} | {} | {} |",
        spread(&times[1]),
        spread(&times[2]),
        spread(&times[3]),
        spread(&times[4])
    );
}

/// A process's CPU time so far (user and system, seconds) and its memory (`VmRSS`,
/// `VmHWM`, in MB) and threads, from `/proc`.
fn usage(pid: u32) -> (f64, f64, f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command's name, which ends at the last ')': utime and stime
    // are the 14th and 15th of the line.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    let hz: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (
        ticks as f64 / hz,
        field("VmRSS:") as f64 / 1024.0,
        field("VmHWM:") as f64 / 1024.0,
        field("Threads:"),
    )
}

/// `bench/idle`: the agents of a pair at rest for `IDLE_SECS` seconds (default 60) with the
/// production defaults — keepalive 15 s, `after = 60s`, so a failover tick every 5 s
/// (the standby asks the master's agent, its health URL and two witnesses; the master
/// asks the standby's agent and reads its lock record), the mail outbox, the node name's
/// check — and a wireguard-go pair (keepalive 15 s) beside them, the anchor: what a
/// tunnel alone costs. CPU, memory, threads and the tunnel's bytes sent in the window.
#[test]
#[ignore = "a benchmark: bench/idle runs it"]
fn bench_idle() {
    let test = "bench_idle";
    if !needs(test) || !prerequisites(test, true, &["wireguard-go", "wg", "getconf"]) {
        return;
    }
    let secs: u64 = std::env::var("IDLE_SECS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(60);
    let mut fo = Fo::new(
        test,
        Case {
            after: "60s",
            keepalive: "15s",
            ..Case::default()
        },
    );
    let wa = fo.lab.host("wa", &["192.0.2.71/24"]);
    let wb = fo.lab.host("wb", &["192.0.2.72/24"]);
    let keys = [
        tunnel::PrivateKey::generate(),
        tunnel::PrivateKey::generate(),
    ];
    let mut wg = Vec::new();
    for (me, (host, other)) in [(&wa, "192.0.2.72"), (&wb, "192.0.2.71")]
        .into_iter()
        .enumerate()
    {
        let (key, peer) = (keys[me].to_base64(), keys[1 - me].public_key().to_string());
        let end = WgEnd {
            private_key: &key,
            peer: &peer,
            endpoint: &format!("{other}:51820"),
            peer_ip: &format!("203.0.113.{}", 2 - me),
            address: &format!("203.0.113.{}/24", me + 1),
            keepalive: 15,
        };
        wg.push(wg::start(&mut fo.lab, host, &end));
    }
    eventually(
        "the wireguard-go pair is up",
        Duration::from_secs(15),
        || fo.lab.ping(&wa, "203.0.113.2"),
    );
    // Settled: the pushes' and checks' first runs are over; the tunnels are quiet.
    std::thread::sleep(Duration::from_secs(10));
    let pids = [
        (
            "orch agent",
            "alice (master)",
            fo.lab.proc(fo.agents[0]).pid(),
        ),
        (
            "orch agent",
            "bob (standby)",
            fo.lab.proc(fo.agents[1]).pid(),
        ),
        ("wireguard-go", "wa", fo.lab.proc(wg[0].1).pid()),
        ("wireguard-go", "wb", fo.lab.proc(wg[1].1).pid()),
    ];
    let tx = |i: usize| -> u64 {
        if i < 2 {
            let node = ["alice", "bob"][i];
            let status = orch::status_json(&fo.pair.config(node)).unwrap();
            status["tunnel"]["tx_bytes"].as_u64().unwrap()
        } else {
            let host = [&wa, &wb][i - 2];
            let out = fo.lab.run(host, &["wg", "show", &wg[i - 2].0, "transfer"]);
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .nth(2)
                .and_then(|t| t.parse().ok())
                .unwrap()
        }
    };
    let before: Vec<(f64, u64)> = (0..4).map(|i| (usage(pids[i].2).0, tx(i))).collect();
    // The window itself is what is measured: nothing to wait for.
    std::thread::sleep(Duration::from_secs(secs));
    println!("agents at rest for {secs} s (keepalive 15 s, after = 60s: a tick every 5 s):");
    println!();
    println!("| process | node | CPU s | CPU % of a core | RSS MB | peak RSS MB | threads | tunnel bytes sent a minute |");
    println!("|---|---|---|---|---|---|---|---|");
    for (i, (what, node, pid)) in pids.iter().enumerate() {
        let (cpu, rss, hwm, threads) = usage(*pid);
        let cpu = cpu - before[i].0;
        let sent = tx(i) - before[i].1;
        println!(
            "| {what} | {node} | {cpu:.2} | {:.2} | {rss:.1} | {hwm:.1} | {threads} | {} |",
            100.0 * cpu / secs as f64,
            sent * 60 / secs
        );
    }
}

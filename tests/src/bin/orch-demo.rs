//! `orch-demo`: the story orch exists for, told in the lab (run by `scripts/demo`).
//!
//! Two home servers, alice and bob, in network namespaces on a virtual switch; a real
//! BIND serving `example.org`, a real SMTP server (aiosmtpd) taking the mail, two
//! witnesses. Alice's site is pushed to bob and reported on; alice's server dies and bob
//! takes the site over through DNS; alice comes back with a new address, learns she was
//! replaced, steps down and follows bob, keeping what she wrote meanwhile; then
//! `orch promote` on alice brings the site home. Every step is checked: the demo exits 1
//! as soon as one did not happen as narrated, and removes everything either way.

// A failed expectation here is a failed demo: it says which and exits non-zero.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Real time: it drives real processes from a plain thread.
#![allow(clippy::disallowed_types)]

use orch_tests::bind::Bind;
use orch_tests::fixture::{failover_pair, find_file, Pair};
use orch_tests::lab::{Host, Lab};
use orch_tests::wait::within;
use orch_tests::{mailbox, orch, prerequisites, smtp_command_at};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";
const SITE: &str = "alice-web";
const LOCK: &str = "_orch.alice-web.example.org";
const WWW: &str = "www.example.org";
/// Generous for a 2-core machine under load; the figures printed are what it took.
const WITHIN: Duration = Duration::from_secs(60);

const HELP: &str = "\
orch-demo: the whole story of orch in a lab of network namespaces, in about a minute.

  1. two nodes come up (alice 192.0.2.1, bob 192.0.2.2; BIND at 192.0.2.53, an SMTP
     server at 192.0.2.25, witnesses at 192.0.2.61 and .62) with a WireGuard tunnel;
  2. alice pushes her site `alice-web` to bob;
  3. the nightly replication report is mailed (and printed here);
  4. alice's server dies (agent killed, link cut): bob takes the site over through DNS;
  5. alice comes back with a new address: she learns she was replaced, steps down,
     follows bob; the tunnel heals; bob pushes to her, her own edits kept aside;
  6. `orch promote alice-web --dry-run`, then `orch promote alice-web` on alice brings
     the site home;
  7. a summary of what happened and how long each part took.

Needs root (network namespaces), iproute2, BIND (named, dig, nsupdate, tsig-keygen),
python3 with aiosmtpd, and the orch binary ($ORCH_BIN, else built from this
workspace). scripts/demo installs all of it. Everything is removed at the end; the exit
status is 1 if any step did not happen as narrated.
";

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    if !prerequisites(
        "orch-demo",
        true,
        &["ip", "named", "tsig-keygen", "nsupdate", "dig", PYTHON],
    ) {
        return ExitCode::FAILURE;
    }
    let mut story = Story::new();
    let result = run(&mut story);
    story.summary();
    match result {
        Ok(()) => {
            story.say("Everything happened as narrated; the lab is removed.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nDEMO FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The narration: timestamps from the start and the steps' figures for the summary.
struct Story {
    start: Instant,
    steps: Vec<(String, Duration, String)>,
}

impl Story {
    fn new() -> Story {
        Story {
            start: Instant::now(),
            steps: Vec::new(),
        }
    }

    fn say(&self, text: &str) {
        let t = self.start.elapsed();
        println!(
            "[{:02}:{:04.1}] {text}",
            t.as_secs() / 60,
            t.as_secs_f64() % 60.0
        );
    }

    fn heading(&self, text: &str) {
        println!();
        self.say(&format!("==> {text}"));
    }

    /// Prints `text` indented, at most `max` lines of it.
    fn show(&self, text: &str, max: usize) {
        let lines: Vec<&str> = text.trim_end().lines().collect();
        for line in lines.iter().take(max) {
            println!("      {line}");
        }
        if lines.len() > max {
            println!("      … ({} more lines)", lines.len() - max);
        }
    }

    /// Runs one part of the story; records how long it took and what it showed.
    fn part(
        &mut self,
        title: &str,
        f: impl FnOnce(&mut Story) -> Result<String, String>,
    ) -> Result<(), String> {
        self.heading(title);
        let t = Instant::now();
        let result = f(self);
        let took = t.elapsed();
        match result {
            Ok(figure) => {
                self.steps.push((title.to_owned(), took, figure));
                Ok(())
            }
            Err(e) => {
                self.steps
                    .push((title.to_owned(), took, format!("FAILED: {e}")));
                Err(format!("{title}: {e}"))
            }
        }
    }

    fn summary(&self) {
        println!();
        self.say("==> Summary");
        let width = self.steps.iter().map(|s| s.0.len()).max().unwrap_or(0);
        println!("      {:<width$}  {:>7}  what happened", "part", "took");
        for (title, took, figure) in &self.steps {
            println!(
                "      {title:<width$}  {:>6.1}s  {figure}",
                took.as_secs_f64()
            );
        }
        println!(
            "      {:<width$}  {:>6.1}s",
            "whole demo",
            self.start.elapsed().as_secs_f64()
        );
    }
}

/// The lab and the pair in it.
struct World {
    lab: Lab,
    pair: Pair,
    alice: Host,
    bob: Host,
    bind: Bind,
    maildir: PathBuf,
    alice_agent: usize,
}

impl World {
    fn orch(&self, node: &str, args: &[&str]) -> (i32, String) {
        let config = self.pair.config(node);
        let mut argv = vec!["--config", config.to_str().unwrap()];
        argv.extend_from_slice(args);
        let out = orch::run(&argv);
        let (stdout, stderr) = orch::text(&out);
        (orch::code(&out), format!("{stdout}{stderr}"))
    }

    /// `orch ARGS` on `node`, which must exit 0; its output.
    fn ok(&self, node: &str, args: &[&str]) -> Result<String, String> {
        match self.orch(node, args) {
            (0, out) => Ok(out),
            (code, out) => Err(format!(
                "`orch {}` on {node} exited {code}:\n{out}",
                args.join(" ")
            )),
        }
    }

    fn lock(&self) -> String {
        self.bind.dig(LOCK, "TXT").trim_matches('"').to_owned()
    }

    fn wait_lock(&self, want: &str) -> Result<(), String> {
        within(WITHIN, || {
            let l = self.lock();
            (l == want).then_some(()).ok_or(l)
        })
        .map_err(|l| format!("the lock record holds {l:?}, not {want:?}\n{}", self.logs()))
    }

    fn site(&self, node: &str) -> Result<Value, String> {
        let status = orch::status_json(&self.pair.config(node))?;
        status["sites"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == SITE))
            .cloned()
            .ok_or_else(|| format!("no {SITE} in {node}'s status"))
    }

    fn role(&self, node: &str) -> Result<(String, i64), String> {
        let s = self.site(node)?;
        Ok((
            s["role"].as_str().unwrap_or_default().to_owned(),
            s["epoch"].as_i64().unwrap_or_default(),
        ))
    }

    fn mails(&self) -> Vec<Value> {
        if self.maildir.exists() {
            mailbox(&self.maildir)
        } else {
            Vec::new()
        }
    }

    /// The first mail whose subject starts with `prefix`: (subject, text part).
    fn mail(&self, prefix: &str) -> Result<(String, String), String> {
        within(WITHIN, || {
            let mails = self.mails();
            mails
                .iter()
                .find(|m| m["subject"].as_str().unwrap_or("").starts_with(prefix))
                .map(|m| {
                    (
                        m["subject"].as_str().unwrap_or("").to_owned(),
                        m["parts"]["text/plain"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .ok_or_else(|| format!("{} mails, none \"{prefix}…\"", mails.len()))
        })
    }

    /// The page the site's name leads to now (fetched from the dns host, a visitor).
    fn visit(&self, addr: &str) -> String {
        let code = format!(
            "import urllib.request;print(urllib.request.urlopen('http://{addr}:8080/', timeout=3).read().decode().strip())"
        );
        let dns = self.bind.host.clone().unwrap();
        let out = self.lab.run(&dns, &[PYTHON, "-c", &code]);
        if out.status.success() {
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        } else {
            "(no answer)".to_owned()
        }
    }

    fn logs(&self) -> String {
        format!(
            "--- alice's agent (last lines):\n{}\n--- bob's agent (last lines):\n{}",
            tail(&self.lab.log("agent-alice"), 15),
            tail(&self.lab.log("agent-bob"), 15)
        )
    }

    fn history(&self, node: &str, words: &[&str]) -> String {
        let (_, out) = self.orch(node, &["history", SITE, "--limit", "100"]);
        out.lines()
            .filter(|l| words.iter().any(|w| l.contains(w)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn spawn_agent(&mut self, node: &str) -> usize {
        let host = if node == "alice" {
            self.alice.clone()
        } else {
            self.bob.clone()
        };
        self.pair.spawn_agent(&mut self.lab, &host, node)
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn run(story: &mut Story) -> Result<(), String> {
    let mut world = None;
    story.part("Two home servers come up", |s| {
        let w = bring_up(s)?;
        world = Some(w);
        Ok("tunnel up, lock record published, bob watching alice".to_owned())
    })?;
    let mut w = world.unwrap();
    let dir = w.lab.dir().to_owned();

    story.part("Alice pushes her site to Bob", |s| {
        s.say("alice$ orch push alice-web");
        let out = w.ok("alice", &["push", SITE])?;
        s.show(&out, 12);
        let copy = read(&dir.join("bob-www/index.html"));
        if copy != read(&dir.join("alice-www/index.html")) {
            return Err(format!("bob's copy of index.html is {copy:?}"));
        }
        s.say("bob's copy is identical (index.html, style.css, posts/)");
        Ok(out.lines().next().unwrap_or("").trim().to_owned())
    })?;

    story.part("The nightly replication report", |s| {
        s.say("alice$ orch report alice-web --send   (the agent does this on the site's `report` schedule)");
        w.ok("alice", &["report", SITE, "--send"])?;
        let (subject, text) = w.mail("[orch] alice-web nightly replication")?;
        s.say("The SMTP server received:");
        s.show(&format!("Subject: {subject}\n\n{text}"), 40);
        if !subject.contains(": OK") {
            return Err(format!("the report is not OK: {subject}"));
        }
        Ok(subject)
    })?;

    story.part("Alice's server dies", |s| {
        let before = w.bind.dig(WWW, "A");
        s.say(&format!(
            "dig {WWW} → {before} (alice); the page: {:?}",
            w.visit(&before)
        ));
        s.say("Killing alice's agent (SIGKILL) and cutting her link.");
        let killed = Instant::now();
        w.lab
            .proc(w.alice_agent)
            .signal_and_wait(libc::SIGKILL, Duration::from_secs(5))
            .ok_or("alice's agent did not die")?;
        let out = w.lab.run(&w.alice, &["ip", "link", "set", "eth0", "down"]);
        if !out.status.success() {
            return Err("cutting alice's link failed".to_owned());
        }
        // Bob counts the silence down before he acts (`after = "3s"` in the demo).
        let counting = within(WITHIN, || {
            let f = w.site("bob")?;
            if f["failover_state"]["state"] == "counting" || w.lock() == "master=bob epoch=2" {
                Ok(f["failover_state"]["summary"].as_str().unwrap_or("").to_owned())
            } else {
                Err(String::new())
            }
        });
        if let Ok(summary) = counting {
            s.say(&format!("bob: {summary}"));
        }
        w.wait_lock("master=bob epoch=2")?;
        let failover_took = killed.elapsed();
        let after = w.bind.dig(WWW, "A");
        s.say(&format!(
            "The lock record now says \"master=bob epoch=2\"; dig {WWW} → {after} (bob), {:.1} s after alice died",
            failover_took.as_secs_f64()
        ));
        if after != "192.0.2.2" {
            return Err(format!("{WWW} points at {after}, not bob"));
        }
        s.say(&format!("The page, served by bob from his copy: {:?}", w.visit(&after)));
        let (subject, text) = w.mail("[orch] FAILOVER")?;
        s.say("The alert mail:");
        s.show(&format!("Subject: {subject}\n\n{text}"), 12);
        Ok(format!(
            "{WWW}: {before} → {after} in {:.1} s (after = 3 s)",
            failover_took.as_secs_f64()
        ))
    })?;

    story.part("Alice comes back with a new address", |s| {
        std::fs::write(
            dir.join("alice-www/posts/draft.html"),
            "a draft alice wrote just before her server died\n",
        )
        .map_err(|e| e.to_string())?;
        s.say("She had written posts/draft.html before she went down. She returns as 192.0.2.21,");
        s.say("  but her router does not let her reach anyone yet (bob and the DNS blackholed).");
        let renumber = "ip addr del 192.0.2.1/24 dev eth0 && ip addr add 192.0.2.21/24 dev eth0 \
                        && ip route add blackhole 192.0.2.2/32 && ip route add blackhole 192.0.2.53/32 \
                        && ip link set eth0 up";
        if !w.lab.run(&w.alice, &["sh", "-c", renumber]).status.success() {
            return Err("renumbering alice failed".to_owned());
        }
        w.alice_agent = w.spawn_agent("alice");
        let fenced = within(WITHIN, || {
            let f = w.site("alice")?;
            let state = &f["failover_state"];
            (state["state"] == "fenced")
                .then(|| state["summary"].as_str().unwrap_or("").to_owned())
                .ok_or(format!("{state:#}"))
        })
        .map_err(|e| format!("alice is not fenced: {e}\n{}", w.logs()))?;
        s.say(&format!("alice: {fenced}"));
        s.say("alice$ orch push alice-web");
        match w.orch("alice", &["push", SITE]) {
            (0, out) => return Err(format!("a fenced alice pushed:\n{out}")),
            (_, out) => s.show(&out, 3),
        }
        if w.role("alice")? != ("master".to_owned(), 1) || w.bind.dig(WWW, "A") != "192.0.2.2" {
            return Err("alice changed something while fenced".to_owned());
        }
        s.say("Fenced, she claims nothing: no pushes, no record changes (her services are left alone).");
        s.say("Her network comes up.");
        let back = Instant::now();
        let routes = "ip route del blackhole 192.0.2.2/32 && ip route del blackhole 192.0.2.53/32";
        if !w.lab.run(&w.alice, &["sh", "-c", routes]).status.success() {
            return Err("restoring alice's routes failed".to_owned());
        }
        within(WITHIN, || w.lab.ping(&w.alice, "198.51.100.2"))
            .map_err(|e| format!("the tunnel did not heal: {e}"))?;
        let healed = back.elapsed();
        s.say(&format!(
            "The tunnel healed {:.1} s later (bob roams to her new address).",
            healed.as_secs_f64()
        ));
        within(WITHIN, || {
            let role = w.role("alice")?;
            let h = w.history("alice", &["rejoined"]);
            if role == ("standby".to_owned(), 2) && !h.is_empty() {
                Ok(())
            } else {
                Err(format!("{role:?}"))
            }
        })
        .map_err(|e| format!("alice did not rejoin as standby: {e}\n{}", w.logs()))?;
        let took = back.elapsed();
        s.say("alice$ orch history alice-web   (what she did, newest first)");
        s.show(
            &w.history(
                "alice",
                &[
                    "fenced",
                    "failed over",
                    "rejoined",
                    "playbook",
                    "steps down",
                ],
            ),
            12,
        );
        if w.lock() != "master=bob epoch=2" || w.bind.dig(WWW, "A") != "192.0.2.2" {
            return Err("the site moved while alice came back".to_owned());
        }
        s.say(&format!(
            "The site stayed on bob; alice is standby of bob at epoch 2, {:.1} s after her network came up.",
            took.as_secs_f64()
        ));
        Ok(format!(
            "fenced while cut off; then tunnel healed in {:.1} s, demoted and rejoined in {:.1} s",
            healed.as_secs_f64(),
            took.as_secs_f64()
        ))
    })?;

    story.part("Bob pushes to Alice", |s| {
        std::fs::write(
            dir.join("bob-www/posts/news.html"),
            "written on bob while he served the site\n",
        )
        .map_err(|e| e.to_string())?;
        s.say("bob$ orch push alice-web");
        let out = w.ok("bob", &["push", SITE])?;
        s.show(&out, 12);
        if read(&dir.join("alice-www/posts/news.html")).is_empty() {
            return Err("bob's new post did not reach alice".to_owned());
        }
        let kept = find_file(
            &w.pair.alice.join("state/diverged").join(SITE),
            "draft.html",
        )
        .ok_or("alice's draft is not in her diverged/ folder")?;
        let rel = kept
            .strip_prefix(&dir)
            .unwrap_or(&kept)
            .display()
            .to_string();
        s.say(&format!(
            "bob's copy now on alice; her draft kept, not lost: {rel}: {:?}",
            read(&kept).trim()
        ));
        Ok("bob's copy on alice; her draft kept in diverged/".to_owned())
    })?;

    story.part("orch promote brings the site home", |s| {
        s.say("alice$ orch promote alice-web --dry-run");
        let out = w.ok("alice", &["promote", SITE, "--dry-run"])?;
        s.show(&out, 40);
        if w.lock() != "master=bob epoch=2" {
            return Err("the dry run changed the lock".to_owned());
        }
        s.say("alice$ orch promote alice-web");
        let t = Instant::now();
        let out = w.ok("alice", &["promote", SITE])?;
        let took = t.elapsed();
        s.show(&out, 40);
        w.wait_lock("master=alice epoch=3")?;
        let www = w.bind.dig(WWW, "A");
        if www != "192.0.2.21" {
            return Err(format!("{WWW} points at {www}, not alice's new address"));
        }
        let role = w.role("alice")?;
        if role != ("master".to_owned(), 3) {
            return Err(format!("alice is {role:?}"));
        }
        within(WITHIN, || {
            let r = w.role("bob")?;
            (r == ("standby".to_owned(), 3))
                .then_some(())
                .ok_or(format!("{r:?}"))
        })
        .map_err(|e| format!("bob is not standby at epoch 3: {e}"))?;
        s.say(&format!(
            "dig {WWW} → {www} (alice's new address); the page: {:?}",
            w.visit(&www)
        ));
        Ok(format!(
            "switchover in {:.1} s: alice master at epoch 3, bob standby",
            took.as_secs_f64()
        ))
    })?;
    Ok(())
}

/// The lab: hosts, BIND, SMTP, witnesses, web servers, both agents; returns once the
/// tunnel is up, alice holds the lock and bob watches her.
fn bring_up(s: &Story) -> Result<World, String> {
    let mut lab = Lab::new("orch-demo");
    let dir = lab.dir().to_owned();
    let alice = lab.host("alice", &["192.0.2.1/24"]);
    let bob = lab.host("bob", &["192.0.2.2/24"]);
    let dns = lab.host("dns", &["192.0.2.53/24"]);
    let mail = lab.host("mail", &["192.0.2.25/24"]);
    let w1 = lab.host("w1", &["192.0.2.61/24"]);
    let w2 = lab.host("w2", &["192.0.2.62/24"]);
    s.say("Hosts (network namespaces on a virtual switch): alice 192.0.2.1, bob 192.0.2.2,");
    s.say("  BIND 192.0.2.53 (example.org), SMTP 192.0.2.25, witnesses 192.0.2.61 (tcp) and .62 (http)");
    let bind = Bind::start(&mut lab, &dns, "example.org", &[("www", "192.0.2.1")]);
    for host in [&alice, &bob] {
        bind.serve(host);
    }
    let pair = failover_pair(
        &dir,
        &bind,
        "[mail]\ntransport = \"smtp\"\nhost = \"192.0.2.25\"\nport = 25\ntls = \"none\"\n\
         from = \"orch@example.org\"\nto = [\"alice@example.org\", \"bob@example.org\"]\n",
        "failover = \"auto\"\nafter = \"3s\"\n\
         promote = [\"web-on\"]\ndemote = [\"web-off\"]\nrejoin = [\"follow\"]\n",
        "",
    );
    for node in ["alice", "bob"] {
        let path = pair.config(node);
        let books = path.parent().unwrap().join("playbooks");
        std::fs::create_dir_all(&books).unwrap();
        for (name, what) in [
            ("web-on", "serving alice-web"),
            ("web-off", "stopped serving alice-web"),
            ("follow", "following the new master"),
        ] {
            let book = format!(
                "[[step]]\nname = \"note\"\nshell = \"echo 'epoch {{epoch}}: {what}' >> {{state_dir}}/web.log\"\n"
            );
            std::fs::write(books.join(format!("{name}.toml")), book).unwrap();
        }
    }
    // Alice's site: three files.
    std::fs::create_dir_all(dir.join("alice-www/posts")).unwrap();
    std::fs::write(dir.join("alice-www/index.html"), "alice's home page\n").unwrap();
    std::fs::write(dir.join("alice-www/style.css"), "body { margin: 2em }\n").unwrap();
    std::fs::write(dir.join("alice-www/posts/hello.html"), "hello, world\n").unwrap();
    std::fs::create_dir_all(dir.join("bob-www")).unwrap();
    // Each node's web server serves its own copy; the witnesses answer anything.
    for (host, root) in [(&alice, "alice-www"), (&bob, "bob-www")] {
        let mut web = Command::new(PYTHON);
        web.args([
            "-m",
            "http.server",
            "8080",
            "--bind",
            "0.0.0.0",
            "--directory",
        ])
        .arg(dir.join(root));
        lab.spawn(host, &format!("web-{}", host.name), web);
    }
    for host in [&w1, &w2] {
        let mut witness = Command::new(PYTHON);
        witness
            .args([
                "-m",
                "http.server",
                "80",
                "--bind",
                &host.addr,
                "--directory",
            ])
            .arg(&dir);
        lab.spawn(host, &format!("witness-{}", host.name), witness);
    }
    let maildir = dir.join("maildir");
    lab.spawn(
        &mail,
        "aiosmtpd",
        smtp_command_at("192.0.2.25:25", &maildir),
    );

    let mut w = World {
        lab,
        pair,
        alice,
        bob,
        bind,
        maildir,
        alice_agent: 0,
    };
    // The servers answer before the story goes on (python starts in about 0.2 s).
    for (addr, port) in [("192.0.2.25", 25), ("192.0.2.61", 80), ("192.0.2.62", 80)] {
        let code = format!("import socket; socket.create_connection(('{addr}', {port}), 1)");
        within(WITHIN, || {
            let out = w.lab.run(&w.alice, &[PYTHON, "-c", &code]);
            out.status
                .success()
                .then_some(())
                .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
        })
        .map_err(|e| format!("nothing answers at {addr}:{port}: {e}"))?;
    }
    w.alice_agent = w.spawn_agent("alice");
    w.spawn_agent("bob");
    s.say("Both agents started (`orch agent`); each brings up its userspace WireGuard tunnel.");
    within(WITHIN, || w.lab.ping(&w.alice, "198.51.100.2"))
        .map_err(|e| format!("no ping through the tunnel: {e}\n{}", w.logs()))?;
    s.say("alice 198.51.100.1 → bob 198.51.100.2 answers through the tunnel.");
    w.wait_lock("master=alice epoch=1")?;
    s.say(&format!(
        "alice published the site's lock record: {LOCK} TXT \"master=alice epoch=1\""
    ));
    within(WITHIN, || {
        let f = w.site("bob")?;
        (f["failover_state"]["state"] == "watching")
            .then_some(())
            .ok_or(format!("{:#}", f["failover_state"]))
    })
    .map_err(|e| format!("bob is not watching alice: {e}"))?;
    s.say("bob$ orch status");
    let (_, status) = w.orch("bob", &["status"]);
    s.show(&status, 30);
    Ok(w)
}

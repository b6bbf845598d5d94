//! Runs one step here: a process (its own process group, killed whole at the timeout),
//! SQL on a site database, an HTTP request, or a check polled until it passes.

use super::vars::{shell_quote, Vars};
use crate::config::playbook::{Action, Step, WaitFor};
use agent::db::{Endpoint, Engine};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt as _;
use tokio::time::Instant;

/// The most output kept of a step (its tail).
pub const OUTPUT_TAIL: usize = 4096;

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// In words: "exit 0", "killed after 5 s (timeout)", "HTTP 200", "passed after 3 s".
    pub status: String,
    /// The last [`OUTPUT_TAIL`] bytes of what it printed.
    pub output: String,
}

impl Outcome {
    fn failed(status: impl Into<String>, output: String) -> Outcome {
        Outcome {
            ok: false,
            status: status.into(),
            output,
        }
    }
}

/// The step's database here, when it has one.
#[derive(Debug, Clone)]
pub struct Db {
    pub engine: Engine,
    pub name: String,
    pub local: Endpoint,
}

/// Runs `step` on this node with `vars`; `db` is its database, when it names one.
pub async fn run_local(step: &Step, vars: &Vars, db: Option<&Db>) -> Outcome {
    let fill = |t: &str| vars.fill(t);
    match &step.action {
        Action::Run(argv) => match argv.iter().map(|a| fill(a)).collect::<Result<Vec<_>, _>>() {
            Ok(argv) => process(&argv, step.timeout).await,
            Err(e) => Outcome::failed("not run", e),
        },
        Action::Shell(line) => match vars.fill_with(line, shell_quote) {
            Ok(line) => process(&["/bin/sh".into(), "-c".into(), line], step.timeout).await,
            Err(e) => Outcome::failed("not run", e),
        },
        Action::Sql(sql) => {
            let Some(db) = db else {
                return Outcome::failed("not run", "the step has no database here".into());
            };
            match fill(sql) {
                Ok(sql) => {
                    match agent::db::execute(db.engine, &db.local, &db.name, &sql, step.timeout)
                        .await
                    {
                        Ok(rows) => Outcome {
                            ok: true,
                            status: "done".into(),
                            output: tail(&rows),
                        },
                        Err(e) => Outcome::failed("failed", e),
                    }
                }
                Err(e) => Outcome::failed("not run", e),
            }
        }
        Action::Http { url, expect } => match fill(url) {
            Ok(url) => match http_status(&url, step.timeout).await {
                Ok(status) if status == *expect => Outcome {
                    ok: true,
                    status: format!("HTTP {status}"),
                    output: String::new(),
                },
                Ok(status) => {
                    Outcome::failed(format!("HTTP {status}, expected {expect}"), String::new())
                }
                Err(e) => Outcome::failed("no answer", e),
            },
            Err(e) => Outcome::failed("not run", e),
        },
        Action::Wait(what) => wait(what, vars, db, step.timeout).await,
    }
}

/// Polls `what` every second until it passes or `within` ends.
async fn wait(what: &WaitFor, vars: &Vars, db: Option<&Db>, within: Duration) -> Outcome {
    let target = match what {
        WaitFor::Tcp(t) | WaitFor::Http(t) | WaitFor::Sql(t) => match vars.fill(t) {
            Ok(t) => t,
            Err(e) => return Outcome::failed("not run", e),
        },
        WaitFor::ReplicaCaughtUp => String::new(),
    };
    let t0 = Instant::now();
    let deadline = t0 + within;
    let mut last = String::new();
    let mut tries = 0u32;
    loop {
        tries += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let per_try = left
            .min(Duration::from_secs(5))
            .max(Duration::from_millis(100));
        let passed = match what {
            WaitFor::Tcp(_) => {
                match tokio::time::timeout(per_try, tokio::net::TcpStream::connect(&target)).await {
                    Ok(Ok(_)) => Ok(true),
                    Ok(Err(e)) => Err(format!("{target}: {e}")),
                    Err(_) => Err(format!("{target}: no answer")),
                }
            }
            WaitFor::Http(_) => http_status(&target, per_try)
                .await
                .map(|s| (200..300).contains(&s)),
            WaitFor::Sql(_) => match db {
                Some(db) => agent::db::execute(db.engine, &db.local, &db.name, &target, per_try)
                    .await
                    .map(|a| {
                        let yes = agent::db::truthy(&a);
                        if !yes {
                            last = format!("answered `{}`", a.lines().next().unwrap_or(""));
                        }
                        yes
                    }),
                None => return Outcome::failed("not run", "the step has no database here".into()),
            },
            WaitFor::ReplicaCaughtUp => match db {
                Some(db) => agent::db::caught_up(db.engine, &db.local, &db.name).await,
                None => return Outcome::failed("not run", "the step has no database here".into()),
            },
        };
        match passed {
            Ok(true) => {
                return Outcome {
                    ok: true,
                    status: format!(
                        "passed after {:.1} s ({tries} tr{})",
                        t0.elapsed().as_secs_f64(),
                        if tries == 1 { "y" } else { "ies" }
                    ),
                    output: String::new(),
                }
            }
            Ok(false) => {}
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Outcome::failed(
                format!("not passed within {} s", within.as_secs()),
                format!("{tries} tries; the last: {last}"),
            );
        }
        tokio::time::sleep(Duration::from_secs(1).min(deadline - Instant::now())).await;
    }
}

async fn http_status(url: &str, within: Duration) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(within.min(Duration::from_secs(10)))
        .timeout(within)
        .build()
        .map_err(|e| e.to_string())?;
    client
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{url}: {}", e.without_url()))
}

/// Runs `argv` (no shell) in a process group of its own; at `within` the whole group is
/// killed. Output (stdout and stderr together) is kept to its last [`OUTPUT_TAIL`] bytes.
pub async fn process(argv: &[String], within: Duration) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome::failed("not run", "no program".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::failed("not started", format!("{program}: {e}")),
    };
    let pgid = child.id();
    let collected = Arc::new(Mutex::new(Vec::<u8>::new()));
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (a, b) = (Arc::clone(&collected), Arc::clone(&collected));
    let readers = tokio::spawn(async move {
        tokio::join!(drain(stdout, a), drain(stderr, b));
    });
    let t0 = Instant::now();
    let waited = tokio::time::timeout(within, child.wait()).await;
    if waited.is_err() {
        if let Some(pgid) = pgid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        let _ = child.kill().await;
    }
    // A daemon the step started may hold its output open: take what came, briefly.
    let _ = tokio::time::timeout(Duration::from_millis(500), readers).await;
    let output = |c: &Arc<Mutex<Vec<u8>>>| {
        c.lock()
            .map(|b| tail(&String::from_utf8_lossy(&b)))
            .unwrap_or_default()
    };
    match waited {
        Ok(Ok(status)) => {
            // What it left behind in its group (a daemon it forked) may stay; only a step
            // that overruns has its whole group killed.
            Outcome {
                ok: status.success(),
                status: match status.code() {
                    Some(c) => format!("exit {c}"),
                    None => format!("{status}"),
                },
                output: output(&collected),
            }
        }
        Ok(Err(e)) => Outcome::failed("lost", format!("waiting for {program}: {e}")),
        Err(_) => Outcome::failed(
            format!(
                "killed with its process group after {:.0} s (timeout)",
                t0.elapsed().as_secs_f64()
            ),
            output(&collected),
        ),
    }
}

/// Reads `pipe` to its end into `buf`, keeping only the latest bytes.
async fn drain<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>, buf: Arc<Mutex<Vec<u8>>>) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        if let Ok(mut b) = buf.lock() {
            b.extend_from_slice(&chunk[..n]);
            let excess = b.len().saturating_sub(OUTPUT_TAIL * 2);
            b.drain(..excess);
        }
    }
}

/// The last [`OUTPUT_TAIL`] bytes of `text`, cut at a character boundary.
pub fn tail(text: &str) -> String {
    if text.len() <= OUTPUT_TAIL {
        return text.to_owned();
    }
    let mut start = text.len() - OUTPUT_TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_process_reports_its_exit_and_the_tail_of_its_output() {
        let ok = process(
            &argv(&["sh", "-c", "echo out; echo err >&2"]),
            Duration::from_secs(10),
        )
        .await;
        assert!(ok.ok, "{ok:?}");
        assert_eq!(ok.status, "exit 0");
        assert!(
            ok.output.contains("out") && ok.output.contains("err"),
            "{ok:?}"
        );
        let bad = process(&argv(&["sh", "-c", "exit 3"]), Duration::from_secs(10)).await;
        assert_eq!((bad.ok, bad.status.as_str()), (false, "exit 3"));
        let long = process(
            &argv(&["sh", "-c", "seq 1 100000"]),
            Duration::from_secs(10),
        )
        .await;
        assert!(
            long.ok && long.output.len() <= OUTPUT_TAIL + 4,
            "{}",
            long.output.len()
        );
        assert!(long.output.ends_with("100000\n"));
        let missing = process(&argv(&["/nonexistent/x"]), Duration::from_secs(1)).await;
        assert_eq!(missing.status, "not started");
    }

    #[tokio::test]
    async fn an_overrunning_step_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        // The step starts a grandchild that would outlive it, then hangs.
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let t0 = Instant::now();
        let o = process(&argv(&["sh", "-c", &script]), Duration::from_millis(700)).await;
        assert!(!o.ok);
        assert!(o.status.contains("timeout"), "{o:?}");
        assert!(t0.elapsed() < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = (0..100).any(|_| {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie_or_gone = state.is_empty()
                || state
                    .split(')')
                    .nth(1)
                    .is_some_and(|s| s.trim_start().starts_with('Z'));
            if !zombie_or_gone {
                std::thread::sleep(Duration::from_millis(20)); // a bounded poll: 100 × 20 ms
            }
            zombie_or_gone
        });
        assert!(gone, "the grandchild {pid} outlived the timeout");
    }
}

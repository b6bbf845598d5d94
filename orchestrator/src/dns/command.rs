//! `kind = "command"`: an external program does the DNS work, for any provider orch does
//! not speak. The interface (also in the README):
//!
//! ```text
//! PROGRAM [ARGS...] get  NAME TYPE        prints the values, one per line; exit 0
//!                                         (no record: no output, exit 0)
//! PROGRAM [ARGS...] swap NAME TYPE TTL    replaces the values with ORCH_DNS_NEW only if they
//!                                         are exactly ORCH_DNS_EXPECTED now: exit 0 when
//!                                         done; exit 3 when they are not, printing the
//!                                         current values one per line
//! ```
//!
//! Environment: `ORCH_DNS_ACTION`, `ORCH_DNS_NAME`, `ORCH_DNS_TYPE` (A, AAAA, TXT),
//! `ORCH_DNS_TTL`, `ORCH_DNS_EXPECTED` and `ORCH_DNS_NEW` (values, one per line; empty:
//! no record), `ORCH_DNS_ZONE` when `zone` is set, `ORCH_DNS_PROVIDER` (the table's
//! name). Any other exit code is an error; the end of stderr is shown. The program gets
//! 60 s, then it is killed; values travel in the environment, never through a shell.

use super::{DnsError, Kind, Swap};
use crate::config::DnsProvider;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

pub const TIMEOUT: Duration = Duration::from_secs(60);
pub const EXIT_CONFLICT: i32 = 3;
const MAX_OUTPUT: usize = 64 * 1024;

pub struct Command {
    provider: String,
    argv: Vec<String>,
    zone: Option<String>,
    timeout: Duration,
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Command {
    pub fn new(p: &DnsProvider) -> Result<Command, DnsError> {
        let argv = p.command.clone().unwrap_or_default();
        if argv.is_empty() {
            return Err(DnsError::Config(format!(
                "dns.{}: `command` needs at least the program",
                p.name
            )));
        }
        Ok(Command {
            provider: p.name.clone(),
            argv,
            zone: p.zone.clone(),
            timeout: TIMEOUT,
        })
    }

    fn error(&self, message: String) -> DnsError {
        DnsError::Api {
            provider: format!("dns.{} command `{}`", self.provider, self.argv[0]),
            message,
        }
    }

    async fn run(
        &self,
        action: &str,
        args: &[String],
        env: &[(&str, String)],
    ) -> Result<Ran, DnsError> {
        let mut cmd = tokio::process::Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .arg(action)
            .args(args)
            .env("ORCH_DNS_ACTION", action)
            .env("ORCH_DNS_PROVIDER", &self.provider)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(zone) = &self.zone {
            cmd.env("ORCH_DNS_ZONE", zone);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| self.error(format!("cannot run it: {e}")))?;
        let (mut out, mut err) = match (child.stdout.take(), child.stderr.take()) {
            (Some(o), Some(e)) => (o.take(MAX_OUTPUT as u64), e.take(MAX_OUTPUT as u64)),
            _ => return Err(self.error("no pipes to the program".into())),
        };
        let work = async {
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            let (a, b) = tokio::join!(out.read_to_end(&mut stdout), err.read_to_end(&mut stderr));
            a.and(b)?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, stdout, stderr))
        };
        let (status, stdout, stderr) = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err(self.error(format!("{action}: {e}"))),
            Err(_) => {
                return Err(self.error(format!(
                    "{action} did not finish within {} and was killed",
                    humantime::format_duration(self.timeout)
                )))
            }
        };
        Ok(Ran {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    fn failed(&self, action: &str, ran: &Ran) -> DnsError {
        let tail: Vec<&str> = ran.stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        self.error(format!(
            "{action} failed ({}){}",
            match ran.code {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".into(),
            },
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {}", tail.join(" | "))
            }
        ))
    }

    pub async fn get(&self, name: &str, kind: Kind) -> Result<Vec<String>, DnsError> {
        let env = [
            ("ORCH_DNS_NAME", name.to_owned()),
            ("ORCH_DNS_TYPE", kind.to_string()),
        ];
        let ran = self
            .run("get", &[name.to_owned(), kind.to_string()], &env)
            .await?;
        if ran.code != Some(0) {
            return Err(self.failed("get", &ran));
        }
        Ok(values(&ran.stdout))
    }

    pub async fn swap(
        &self,
        name: &str,
        kind: Kind,
        expected: &[String],
        new: &[String],
        ttl: u32,
    ) -> Result<Swap, DnsError> {
        for v in expected.iter().chain(new) {
            if v.contains('\n') || v.contains('\0') {
                return Err(DnsError::Value {
                    kind,
                    value: v.clone(),
                });
            }
        }
        let env = [
            ("ORCH_DNS_NAME", name.to_owned()),
            ("ORCH_DNS_TYPE", kind.to_string()),
            ("ORCH_DNS_TTL", ttl.to_string()),
            ("ORCH_DNS_EXPECTED", expected.join("\n")),
            ("ORCH_DNS_NEW", new.join("\n")),
        ];
        let ran = self
            .run(
                "swap",
                &[name.to_owned(), kind.to_string(), ttl.to_string()],
                &env,
            )
            .await?;
        match ran.code {
            Some(0) => Ok(Swap::Swapped),
            Some(EXIT_CONFLICT) => Ok(Swap::Conflict {
                current: values(&ran.stdout),
            }),
            _ => Err(self.failed("swap", &ran)),
        }
    }
}

fn values(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

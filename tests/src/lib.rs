//! The end-to-end harness for orch: runs the real `orch` binary, builds lab hosts out of
//! network namespaces, and waits on conditions with deadlines instead of sleeping.

// A panic here is a failed test, which is what a broken fixture should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// It drives real processes from plain threads: its deadlines are real time, not tokio's
// pausable clock (clippy.toml).
#![allow(clippy::disallowed_types)]

pub mod bind;
pub mod dbserver;
pub mod fixture;
pub mod lab;
pub mod orch;
pub mod process;
pub mod sshd;
pub mod wait;
pub mod wg;

pub use wait::eventually;

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// aiosmtpd on 127.0.0.1:`port` (run by Debian's python3, which sees
/// python3-aiosmtpd), storing what it receives in the maildir `maildir`.
pub fn smtp_command(port: u16, maildir: &std::path::Path) -> std::process::Command {
    smtp_command_at(&format!("127.0.0.1:{port}"), maildir)
}

/// aiosmtpd listening on `listen` ("ADDR:PORT"), storing mail in the maildir `maildir`.
pub fn smtp_command_at(listen: &str, maildir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("/usr/bin/python3");
    cmd.args(["-m", "aiosmtpd", "-n", "-l", listen])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir);
    cmd
}

/// The messages in a maildir, one JSON object each (`subject`, `message_id`, `to`,
/// `content_type`, `parts` by content type), read by Python's email package
/// (tools/readmail.py) as a mail client would.
pub fn mailbox(maildir: &std::path::Path) -> Vec<serde_json::Value> {
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/readmail.py"))
        .arg(maildir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// True when running under CI (`CI=true`), where a missing prerequisite is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Checks what a test needs from the machine (root, programs). When something is
/// missing: under CI the test fails; elsewhere it is skipped, loudly: the reason goes to
/// stderr and to `target/lab-skips.txt`, which `scripts/test` prints at the end.
/// Returns false when the test must return without running.
#[must_use]
pub fn prerequisites(test: &str, root: bool, programs: &[&str]) -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    if root && euid != 0 {
        missing.push("root (network namespaces)".to_string());
    }
    for program in programs {
        if which(program).is_none() {
            missing.push(format!("`{program}` (see scripts/install-deps)"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!("{test}: needs {}", missing.join(", "));
    assert!(
        !in_ci(),
        "{reason}: CI must install it (.ci/run calls scripts/install-deps)"
    );
    eprintln!("SKIPPED {reason}");
    let log = orch::target_dir().join("lab-skips.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        use std::io::Write as _;
        let _ = writeln!(f, "{reason}");
    }
    false
}

/// The first `program` on PATH (plus the sbin folders, where `ip` lives).
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file());
    found
}

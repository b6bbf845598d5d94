//! Running the real `orch` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The cargo target folder this test binary was built into.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // <target>/debug/deps/e2e-HASH
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// The `orch` binary: `$ORCH_BIN` if set, else built now from this workspace (a no-op
/// when it is up to date), so that a test never runs a stale binary.
pub fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("ORCH_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "orchestrator", "--bin", "orch"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build for the orch binary");
        assert!(status.success(), "building orch failed");
        let bin = target_dir().join("debug").join("orch");
        assert!(bin.is_file(), "no orch binary at {}", bin.display());
        bin
    })
}

/// `orch ARGS` with a clean environment for orch's own variables.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("ORCH_CONFIG")
        .env_remove("ORCH_NODE")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs `orch ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    command(args).output().expect("running orch")
}

/// stdout and stderr of an output, for assertions and failure messages.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The exit code, or a panic naming the signal that ended the process.
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("orch ended by a signal: {:?}", out.status))
}

/// `orch status --json` for the node of `config`, parsed; the error text when it fails.
pub fn status_json(config: &Path) -> Result<serde_json::Value, String> {
    let out = run(&["--config", config.to_str().unwrap(), "status", "--json"]);
    let (stdout, stderr) = text(&out);
    if code(&out) != 0 {
        return Err(stderr);
    }
    serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stdout}"))
}

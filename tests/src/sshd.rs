//! A real OpenSSH server in a lab host, listening on one address with its own host key
//! and `authorized_keys` (nothing of the machine's own sshd setup is used or changed
//! beyond `/run/sshd`, the privilege-separation folder sshd insists on).

use crate::lab::{Host, Lab};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct Sshd {
    pub dir: PathBuf,
    /// The host's public key, `ssh-ed25519 AAAA…`.
    pub host_key: String,
    pub authorized_keys: PathBuf,
}

/// Makes an ed25519 key pair at `path` (and `path.pub`); returns the public line.
pub fn keygen(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Sshd {
    /// Prepares the server's files under `dir` (host key first: configs pin it).
    pub fn prepare(dir: &Path) -> Sshd {
        std::fs::create_dir_all(dir).unwrap();
        let host_key = keygen(&dir.join("host_ed25519"));
        let authorized_keys = dir.join("authorized_keys");
        std::fs::write(&authorized_keys, "").unwrap();
        Sshd {
            dir: dir.to_owned(),
            host_key,
            authorized_keys,
        }
    }

    /// Starts `sshd -D -e` in `host` on `listen`:22; `env_path` becomes the PATH of the
    /// sessions (for the forced command's own steps).
    pub fn start(&self, lab: &mut Lab, host: &Host, listen: &str, env_path: &str) {
        std::fs::create_dir_all("/run/sshd").unwrap();
        let conf = self.dir.join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "ListenAddress {listen}:22\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
                 UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 SetEnv PATH={env_path}\nLogLevel VERBOSE\n",
                self.dir.join("host_ed25519").display(),
                self.authorized_keys.display(),
                self.dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.args(["-D", "-e", "-f"]).arg(&conf);
        lab.spawn(host, &format!("sshd-{}", host.name), cmd);
        let probe = format!("exec 3<>/dev/tcp/{listen}/22");
        crate::eventually("sshd listens", Duration::from_secs(20), || {
            let out = lab.run(host, &["bash", "-c", &probe]);
            if out.status.success() {
                Ok(())
            } else {
                Err(lab.log(&format!("sshd-{}", host.name)))
            }
        });
    }
}

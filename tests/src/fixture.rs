//! Ready-made two-node configurations: one folder per node holding the same
//! `orch.toml`, that node's `private.key` and (by the relative `state_dir`) its state.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub struct Pair {
    pub alice: PathBuf,
    pub bob: PathBuf,
    pub alice_key: tunnel::PrivateKey,
    pub bob_key: tunnel::PrivateKey,
}

impl Pair {
    /// Writes the pair under `root`, with `extra` TOML appended to the config.
    pub fn new(root: &Path, extra: &str) -> Pair {
        let alice_key = tunnel::PrivateKey::generate();
        let bob_key = tunnel::PrivateKey::generate();
        let text = format!(
            r#"[cluster]
name = "lab"
network = "198.51.100.0/24"
keepalive = "5s"

[nodes.alice]
public_key = "{}"
tunnel_ip = "198.51.100.1"
endpoint = "192.0.2.1:51820"
state_dir = "state"

[nodes.bob]
public_key = "{}"
tunnel_ip = "198.51.100.2"
endpoint = "192.0.2.2:51820"
state_dir = "state"

[sites.alice-web]
primary = "alice"
standby = "bob"
report = "30 4 * * *"

[sites.bob-cloud]
primary = "bob"
standby = "alice"
failover = "manual"
{extra}"#,
            alice_key.public_key(),
            bob_key.public_key()
        );
        let pair = Pair {
            alice: root.join("alice"),
            bob: root.join("bob"),
            alice_key,
            bob_key,
        };
        for (dir, key) in [(&pair.alice, &pair.alice_key), (&pair.bob, &pair.bob_key)] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("orch.toml"), &text).unwrap();
            write_secret(&dir.join("private.key"), &key.to_base64());
        }
        pair
    }

    pub fn config(&self, node: &str) -> PathBuf {
        match node {
            "alice" => self.alice.join("orch.toml"),
            _ => self.bob.join("orch.toml"),
        }
    }
}

impl Pair {
    /// Starts `orch agent` for alice and bob in `hosts` (in that order); returns their
    /// indices in the lab. Logs go to `agent-alice` and `agent-bob`.
    pub fn spawn_agents(
        &self,
        lab: &mut crate::lab::Lab,
        hosts: &[crate::lab::Host; 2],
    ) -> [usize; 2] {
        [
            self.spawn_agent(lab, &hosts[0], "alice"),
            self.spawn_agent(lab, &hosts[1], "bob"),
        ]
    }

    /// Starts `orch agent` for `node` in `host` (again); logs go to `agent-NODE`.
    pub fn spawn_agent(
        &self,
        lab: &mut crate::lab::Lab,
        host: &crate::lab::Host,
        node: &str,
    ) -> usize {
        let mut cmd = std::process::Command::new(crate::orch::bin());
        cmd.arg("--config").arg(self.config(node)).arg("agent");
        lab.spawn(host, &format!("agent-{node}"), cmd)
    }
}

/// Writes a file with mode 0600, as orch requires of secrets.
pub fn write_secret(path: &Path, content: &str) {
    std::fs::write(path, format!("{content}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

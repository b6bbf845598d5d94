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

/// The failover lab's pair (tests/e2e/failover.rs and the demo): `mail` (a `[mail]`
/// block), the lab's BIND as DNS provider `lab` (its TSIG secret written beside), a sync
/// job `www` from `<dir>/alice-www` to `<dir>/bob-www`, `extra`; alice keeps her own
/// name `alice.example.org`, both publish their eth0 address, and `alice-web` fails over
/// through `www.example.org` (health on :8080, witnesses 192.0.2.61 tcp and .62 http)
/// with `site` appended to its table (`failover`, `after`, the playbook lists).
pub fn failover_pair(
    dir: &Path,
    bind: &crate::bind::Bind,
    mail: &str,
    site: &str,
    extra: &str,
) -> Pair {
    const WWW: &str = "www.example.org";
    let secret = dir.join("tsig.secret");
    write_secret(&secret, &bind.secret);
    let pair = Pair::new(
        dir,
        &format!(
            r#"
{mail}
[dns.lab]
kind = "rfc2136"
server = "192.0.2.53:53"
zone = "example.org"
tsig_name = "{key}"
tsig_algorithm = "hmac-sha256"
tsig_secret_file = "{secret}"

[[sites.alice-web.sync]]
name = "www"
schedule = "0 3 * * *"
path = {{ alice = "{a}", bob = "{b}" }}
{extra}
"#,
            key = bind.key_name,
            secret = secret.display(),
            a = dir.join("alice-www").display(),
            b = dir.join("bob-www").display(),
        ),
    );
    for node in ["alice", "bob"] {
        let path = pair.config(node);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            // Alice keeps her own name at her address (the first node in the file).
            .replacen(
                "state_dir = \"state\"\n",
                "state_dir = \"state\"\nddns = { provider = \"lab\", name = \"alice.example.org\" }\n",
                1,
            )
            .replace(
                "state_dir = \"state\"\n",
                "state_dir = \"state\"\npublic_ip = \"interface:eth0\"\n",
            )
            .replace(
                "[sites.alice-web]\nprimary = \"alice\"\nstandby = \"bob\"\n",
                &format!(
                    "[sites.alice-web]\nprimary = \"alice\"\nstandby = \"bob\"\n\
                     dns = \"lab\"\nrecords = [\"{WWW}\"]\nttl = 1\n\
                     health = [\"http://{WWW}:8080/\"]\n\
                     witnesses = [\"tcp:192.0.2.61:80\", \"http://192.0.2.62/\"]\n{site}"
                ),
            );
        assert!(
            text.contains("witnesses = "),
            "the failover template did not apply"
        );
        std::fs::write(&path, text).unwrap();
    }
    pair
}

/// The first file called `name` under `dir`.
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n == name) {
                return Some(p);
            }
        }
    }
    None
}

//! Peer steps over SSH (OpenSSH, through the openssh crate).
//!
//! The client logs into the peer's **tunnel address** only, as `nodes.PEER.ssh.user` on
//! `nodes.PEER.ssh.port`, with this node's key (`nodes.ME.ssh.key_file`) and the peer's
//! host key pinned from the config (`nodes.PEER.ssh.host_key`) in a known-hosts file of
//! our own, with strict checking: a host that shows another key is refused.
//!
//! It never sends a command line. It asks for a step by name: `orch-step TOKEN`, where
//! the token (base64url of JSON) names the site, the playbook and the step. On the peer,
//! the key's `authorized_keys` line forces `orch ssh serve` (`restrict,from="OUR TUNNEL
//! IP",command="…"`), which reads the request from `SSH_ORIGINAL_COMMAND` and runs the
//! step only if **its own config** names that playbook for that site and **its own copy**
//! of the playbook has that step with `on = "peer"` — from its own file.

use super::exec::{self, Outcome};
use crate::config::playbook::{self, On, Step};
use crate::config::Loaded;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit codes of `orch ssh serve`.
pub const SERVE_OK: i32 = 0;
pub const SERVE_STEP_FAILED: i32 = 1;
pub const SERVE_REFUSED: i32 = 3;
const MAX_REQUEST: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("the peer's host key is not pinned: add host_key = \"ssh-ed25519 AAAA…\" to [nodes.{0}.ssh] (`orch ssh setup` on {0} prints it)")]
    NoHostKey(String),
    #[error("no SSH key {0} for peer steps: run `orch ssh setup` on this node and install the line it prints on the peer")]
    NoKey(PathBuf),
    #[error("writing {path}")]
    Files {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("SSH to {peer} at {addr}: {reason}")]
    Connect {
        peer: String,
        addr: String,
        reason: String,
    },
}

/// What a peer is asked to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub v: u32,
    pub from: String,
    pub site: String,
    pub playbook: String,
    pub step: String,
}

impl Request {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!(
            "orch-step {}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        )
    }

    /// Reads `SSH_ORIGINAL_COMMAND`: `orch-step TOKEN` and nothing else.
    pub fn decode(command: &str) -> Result<Request, String> {
        if command.len() > MAX_REQUEST {
            return Err("the request is too long".into());
        }
        let mut words = command.split_whitespace();
        let (Some("orch-step"), Some(token), None) = (words.next(), words.next(), words.next())
        else {
            return Err(format!(
                "`{}` is not a step request (this key only runs playbook steps)",
                command.chars().take(80).collect::<String>()
            ));
        };
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|e| format!("the request does not decode: {e}"))?;
        let r: Request = serde_json::from_slice(&json)
            .map_err(|e| format!("the request does not parse: {e}"))?;
        if r.v != 1 {
            return Err(format!(
                "request version {} (this orch speaks 1): upgrade the older one",
                r.v
            ));
        }
        Ok(r)
    }
}

/// The directory of this node's SSH client files (known hosts, config, control sockets).
fn client_dir(loaded: &Loaded) -> PathBuf {
    loaded.me().state_dir.join("ssh")
}

/// A `known_hosts` line pinning `key` for `ip` on `port`.
pub fn known_hosts_line(ip: std::net::IpAddr, port: u16, key: &str) -> String {
    let host = match (ip, port) {
        (std::net::IpAddr::V4(a), 22) => a.to_string(),
        (std::net::IpAddr::V6(a), 22) => a.to_string(),
        (ip, port) => format!("[{ip}]:{port}"),
    };
    format!("{host} {key}\n")
}

/// A session to the peer for a playbook's peer steps.
pub struct PeerShell {
    session: openssh::Session,
    me: String,
    peer: String,
}

impl PeerShell {
    pub async fn connect(loaded: &Loaded) -> Result<PeerShell, SshError> {
        let (me, peer) = (loaded.me(), loaded.peer());
        let host_key = peer
            .ssh
            .host_key
            .clone()
            .ok_or_else(|| SshError::NoHostKey(peer.name.clone()))?;
        if !me.ssh.key_file.is_file() {
            return Err(SshError::NoKey(me.ssh.key_file.clone()));
        }
        let dir = client_dir(loaded);
        let files = |path: &Path, e| SshError::Files {
            path: path.to_owned(),
            source: e,
        };
        agent::state::create_private_dir(&dir).map_err(|e| SshError::Files {
            path: dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let known = dir.join("known_hosts");
        std::fs::write(
            &known,
            known_hosts_line(peer.tunnel_ip, peer.ssh.port, &host_key),
        )
        .map_err(|e| files(&known, e))?;
        let config = dir.join("config");
        // With -F, ssh reads no other config: every choice is here.
        let text = format!(
            "GlobalKnownHostsFile /dev/null\nUserKnownHostsFile {}\nStrictHostKeyChecking yes\n\
             HashKnownHosts no\nCheckHostIP no\nUpdateHostKeys no\nIdentitiesOnly yes\nBatchMode yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel ERROR\n",
            known.display()
        );
        std::fs::write(&config, text).map_err(|e| files(&config, e))?;
        let mut b = openssh::SessionBuilder::default();
        b.user(peer.ssh.user.clone())
            .port(peer.ssh.port)
            .keyfile(&me.ssh.key_file)
            .known_hosts_check(openssh::KnownHosts::Strict)
            .config_file(&config)
            .user_known_hosts_file(&known)
            .control_directory(&dir)
            .connect_timeout(Duration::from_secs(10))
            .server_alive_interval(Duration::from_secs(5));
        let addr = peer.tunnel_ip.to_string();
        let session = tokio::time::timeout(Duration::from_secs(30), b.connect(&addr))
            .await
            .map_err(|_| SshError::Connect {
                peer: peer.name.clone(),
                addr: addr.clone(),
                reason: "no session within 30 s".into(),
            })?
            .map_err(|e| SshError::Connect {
                peer: peer.name.clone(),
                addr: addr.clone(),
                reason: agent::error_chain(&e),
            })?;
        Ok(PeerShell {
            session,
            me: me.name.clone(),
            peer: peer.name.clone(),
        })
    }

    /// Asks the peer to run its own copy of `step` of `playbook` for `site`.
    pub async fn step(&self, site: &str, playbook: &str, step: &Step) -> Outcome {
        let request = Request {
            v: 1,
            from: self.me.clone(),
            site: site.to_owned(),
            playbook: playbook.to_owned(),
            step: step.name.clone(),
        };
        // The peer bounds the step by its own timeout; this one only guards the session.
        let within = step.timeout + Duration::from_secs(30);
        let mut cmd = self.session.raw_command(request.encode());
        let out = match tokio::time::timeout(within, cmd.output()).await {
            Err(_) => {
                return Outcome {
                    ok: false,
                    status: format!("no answer from {} within {} s", self.peer, within.as_secs()),
                    output: String::new(),
                }
            }
            Ok(Err(e)) => {
                return Outcome {
                    ok: false,
                    status: format!("SSH to {} failed", self.peer),
                    output: agent::error_chain(&e),
                }
            }
            Ok(Ok(out)) => out,
        };
        let output = exec::tail(&format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
        let code = out.status.code();
        Outcome {
            ok: code == Some(SERVE_OK),
            status: match code {
                Some(SERVE_OK) => format!("done on {}", self.peer),
                Some(SERVE_REFUSED) => format!("refused by {}", self.peer),
                Some(c) => format!("failed on {} (exit {c})", self.peer),
                None => format!("the session to {} ended without a status", self.peer),
            },
            output,
        }
    }

    pub async fn close(self) {
        let _ = self.session.close().await;
    }
}

/// Why `orch ssh serve` will not run a request, checked against this node's own config.
pub fn admit<'c>(
    loaded: &'c Loaded,
    request: &Request,
) -> Result<(&'c crate::config::Site, Step), String> {
    let peer = &loaded.peer().name;
    if &request.from != peer {
        return Err(format!(
            "the request says it is from `{}`, but only {peer} has a key here",
            request.from
        ));
    }
    let site = loaded
        .config
        .site(&request.site)
        .ok_or_else(|| format!("no site `{}` in {}'s config", request.site, loaded.me))?;
    let named = site
        .promote
        .iter()
        .chain(&site.demote)
        .chain(&site.rejoin)
        .any(|p| p == &request.playbook);
    if !named {
        return Err(format!(
            "{}'s config does not name playbook `{}` for site {} (promote, demote, rejoin): refused",
            loaded.me, request.playbook, site.name
        ));
    }
    let dir = crate::config::config_dir(&loaded.config.path);
    let found = playbook::find(&dir, &request.playbook).map_err(|nf| {
        nf.diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let step = found
        .book
        .steps
        .iter()
        .find(|s| s.name == request.step)
        .cloned()
        .ok_or_else(|| {
            format!(
                "{}'s playbook `{}` has no step `{}`",
                loaded.me, request.playbook, request.step
            )
        })?;
    if step.on != On::Peer {
        return Err(format!(
            "step `{}` of {}'s playbook `{}` is not a peer step (on = \"peer\"): refused",
            step.name, loaded.me, request.playbook
        ));
    }
    Ok((site, step))
}

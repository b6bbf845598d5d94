//! wireguard-go, the independent WireGuard peer, in a lab host.

use crate::eventually;
use crate::fixture::write_secret;
use crate::lab::{Host, Lab};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// One end of a wireguard-go tunnel.
pub struct WgEnd<'a> {
    /// This end's private key, base64.
    pub private_key: &'a str,
    /// The other end's public key, base64.
    pub peer: &'a str,
    /// The other end's UDP endpoint, `ADDR:PORT`.
    pub endpoint: &'a str,
    /// The other end's tunnel address (its allowed IP, a /32).
    pub peer_ip: &'a str,
    /// This end's tunnel address with its prefix, `198.51.100.2/24`.
    pub address: &'a str,
    /// Persistent keepalive, seconds.
    pub keepalive: u32,
}

/// A wireguard-go interface name unique on this machine: their control sockets share
/// one folder across namespaces.
fn wg_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "wgref{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Starts wireguard-go in `host` (listening on 51820) as `end`; returns its interface
/// name and its index in the lab (for its pid).
pub fn start(lab: &mut Lab, host: &Host, end: &WgEnd) -> (String, usize) {
    let name = wg_name();
    let mut cmd = std::process::Command::new("wireguard-go");
    cmd.args(["-f", &name])
        .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
        .env("WG_PROCESS_FOREGROUND", "1");
    let index = lab.spawn(host, &format!("wireguard-go-{}", host.name), cmd);
    eventually(
        "wireguard-go creates its interface",
        Duration::from_secs(10),
        || {
            let out = lab.run(host, &["wg", "show", &name]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    );
    let key = lab.dir().join(format!("{}-wg.key", host.name));
    write_secret(&key, end.private_key);
    let allowed = format!("{}/32", end.peer_ip);
    lab.must(
        host,
        &[
            "wg",
            "set",
            &name,
            "listen-port",
            "51820",
            "private-key",
            key.to_str().unwrap(),
            "peer",
            end.peer,
            "endpoint",
            end.endpoint,
            "allowed-ips",
            &allowed,
            "persistent-keepalive",
            &end.keepalive.to_string(),
        ],
    );
    lab.must(host, &["ip", "addr", "add", end.address, "dev", &name]);
    lab.must(host, &["ip", "link", "set", &name, "up"]);
    (name, index)
}

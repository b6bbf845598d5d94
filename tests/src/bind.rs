//! A real BIND 9 authoritative server in a lab host, with a TSIG key for dynamic
//! updates (RFC 2136), and helpers to change and read records.

use crate::lab::{Host, Lab};
use std::path::PathBuf;
use std::time::Duration;

pub struct Bind {
    pub host: Host,
    pub zone: String,
    /// The TSIG key file, as `tsig-keygen` writes it (for `nsupdate -k`).
    pub key_file: PathBuf,
    pub key_name: String,
    /// The key's base64 secret alone (for orch's `tsig_secret_file`).
    pub secret: String,
}

impl Bind {
    /// Starts `named` in `host` serving `zone` with the given A records (name, address),
    /// TTL 1 s, updatable with the key `orch-key`. Returns when it answers.
    pub fn start(lab: &mut Lab, host: &Host, zone: &str, records: &[(&str, &str)]) -> Bind {
        let dir = lab.dir().join(format!("bind-{}", host.name));
        std::fs::create_dir_all(&dir).unwrap();
        let key_name = "orch-key".to_string();
        let keygen = std::process::Command::new("tsig-keygen")
            .args(["-a", "hmac-sha256", &key_name])
            .output()
            .unwrap();
        assert!(
            keygen.status.success(),
            "tsig-keygen: {}",
            String::from_utf8_lossy(&keygen.stderr)
        );
        let key_text = String::from_utf8(keygen.stdout).unwrap();
        let secret = key_text
            .split('"')
            .nth(3)
            .expect("a secret in tsig-keygen's output")
            .to_string();
        let key_file = dir.join("orch-key.conf");
        std::fs::write(&key_file, &key_text).unwrap();
        let mut zone_text = format!(
            "$TTL 1\n@ IN SOA ns.{zone}. hostmaster.{zone}. 1 60 60 600 1\n@ IN NS ns.{zone}.\nns IN A {}\n",
            host.addr
        );
        for (name, addr) in records {
            crate::lab::assert_lab_address(addr);
            zone_text.push_str(&format!("{name} IN A {addr}\n"));
        }
        std::fs::write(dir.join("zone.db"), zone_text).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("named.conf"),
            format!(
                "include \"{d}/orch-key.conf\";\n\
                 options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; listen-on {{ {addr}; }}; \
                 listen-on-v6 {{ none; }}; recursion no; dnssec-validation no; }};\n\
                 zone \"{zone}\" {{ type primary; file \"{d}/zone.db\"; \
                 update-policy {{ grant {key_name} zonesub ANY; }}; }};\n",
                addr = host.addr
            ),
        )
        .unwrap();
        let mut named = std::process::Command::new("named");
        named
            .args(["-g", "-u", "root", "-c"])
            .arg(dir.join("named.conf"));
        lab.spawn(host, "named", named);
        let bind = Bind {
            host: host.clone(),
            zone: zone.to_string(),
            key_file,
            key_name,
            secret,
        };
        crate::eventually("named answers", Duration::from_secs(20), || {
            let out = lab.run(
                host,
                &[
                    "dig",
                    &format!("@{}", bind.host.addr),
                    &format!("ns.{zone}"),
                    "A",
                    "+short",
                    "+time=1",
                    "+tries=1",
                ],
            );
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if text == bind.host.addr {
                Ok(())
            } else {
                Err(format!("{text} {}", lab.log("named")))
            }
        });
        bind
    }

    /// Points `name` (relative to the zone) at `addr` with an RFC 2136 update.
    pub fn set_a(&self, lab: &Lab, name: &str, addr: &str) {
        crate::lab::assert_lab_address(addr);
        let fqdn = format!("{name}.{}", self.zone);
        let script = format!(
            "server {server}\nzone {zone}\nupdate delete {fqdn} A\nupdate add {fqdn} 1 A {addr}\nsend\n",
            server = self.host.addr,
            zone = self.zone
        );
        let path = lab.dir().join(format!("nsupdate-{name}.txt"));
        std::fs::write(&path, script).unwrap();
        let out = lab.run(
            &self.host,
            &[
                "nsupdate",
                "-k",
                self.key_file.to_str().unwrap(),
                path.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "nsupdate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Makes programs run in `host` resolve through this server.
    pub fn serve(&self, host: &Host) {
        let dir = PathBuf::from("/etc/netns").join(&host.netns);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            format!(
                "nameserver {}\noptions timeout:1 attempts:2\n",
                self.host.addr
            ),
        )
        .unwrap();
    }
}

//! A real BIND 9 authoritative server in a lab host, with a TSIG key for dynamic
//! updates (RFC 2136), and helpers to change and read records.

use crate::lab::{Host, Lab};
use crate::process::Proc;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub struct Bind {
    /// The lab host it runs in; `None` for a server on loopback in this namespace.
    pub host: Option<Host>,
    pub addr: String,
    pub port: u16,
    pub zone: String,
    /// The TSIG key file, as `tsig-keygen` writes it (for `nsupdate -k`).
    pub key_file: PathBuf,
    pub key_name: String,
    /// The key's base64 secret alone (for orch's `tsig_secret_file`).
    pub secret: String,
    /// The server process when it runs on loopback (a lab owns its own processes).
    process: Option<Proc>,
    /// Its config, to start it again.
    conf: PathBuf,
    /// Its index among the lab's processes, when it runs in a lab host.
    pub proc: Option<usize>,
}

impl Bind {
    /// Starts `named` in lab host `host` on port 53, serving `zone` with the given A
    /// records (TTL 1 s), updatable with the TSIG key `orch-key`. Returns when it answers.
    pub fn start(lab: &mut Lab, host: &Host, zone: &str, records: &[(&str, &str)]) -> Bind {
        let dir = lab.dir().join(format!("bind-{}", host.name));
        let (conf, mut bind) = Self::prepare(&dir, &host.addr, 53, zone, records);
        let mut named = Command::new("named");
        named.args(["-g", "-u", "root", "-c"]).arg(conf);
        bind.proc = Some(lab.spawn(host, "named", named));
        bind.host = Some(host.clone());
        bind.wait_ready();
        bind
    }

    /// Stops the server in its lab host (SIGTERM: it writes its journal first).
    pub fn stop(&mut self, lab: &mut Lab) {
        if let Some(i) = self.proc.take() {
            lab.proc(i)
                .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
                .expect("named stops on SIGTERM");
        }
    }

    /// Starts the server again in its lab host, with its zone as it was (updates kept in
    /// its journal); returns when it answers.
    pub fn start_again(&mut self, lab: &mut Lab) {
        let host = self.host.clone().expect("a server in a lab host");
        let mut named = Command::new("named");
        named.args(["-g", "-u", "root", "-c"]).arg(&self.conf);
        self.proc = Some(lab.spawn(&host, "named-again", named));
        self.wait_ready();
    }

    /// Starts `named` on 127.0.0.1 and a free port in this namespace, for in-process
    /// tests; it is stopped when the `Bind` is dropped.
    pub fn start_local(dir: &Path, zone: &str, records: &[(&str, &str)]) -> Bind {
        let port = free_port();
        let (conf, mut bind) = Self::prepare(dir, "127.0.0.1", port, zone, records);
        let mut named = Command::new("named");
        named.args(["-g", "-u", "root", "-c"]).arg(conf);
        bind.process = Some(Proc::spawn("named", &mut named, &dir.join("named.log")));
        bind.wait_ready();
        bind
    }

    fn prepare(
        dir: &Path,
        addr: &str,
        port: u16,
        zone: &str,
        records: &[(&str, &str)],
    ) -> (PathBuf, Bind) {
        crate::lab::assert_lab_address(addr);
        std::fs::create_dir_all(dir).unwrap();
        let key_name = "orch-key".to_string();
        let keygen = Command::new("tsig-keygen")
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
            "$TTL 1\n@ IN SOA ns.{zone}. hostmaster.{zone}. 1 60 60 600 1\n@ IN NS ns.{zone}.\nns IN A {addr}\n"
        );
        for (name, value) in records {
            crate::lab::assert_lab_address(value);
            zone_text.push_str(&format!("{name} IN A {value}\n"));
        }
        std::fs::write(dir.join("zone.db"), zone_text).unwrap();
        let d = dir.display();
        let conf = dir.join("named.conf");
        std::fs::write(
            &conf,
            format!(
                "include \"{d}/orch-key.conf\";\n\
                 options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; listen-on port {port} {{ {addr}; }}; \
                 listen-on-v6 {{ none; }}; recursion no; dnssec-validation no; }};\n\
                 controls {{ }};\n\
                 zone \"{zone}\" {{ type primary; file \"{d}/zone.db\"; \
                 update-policy {{ grant {key_name} zonesub ANY; }}; }};\n"
            ),
        )
        .unwrap();
        let bind = Bind {
            host: None,
            addr: addr.to_string(),
            port,
            zone: zone.to_string(),
            key_file,
            key_name,
            secret,
            process: None,
            conf: conf.clone(),
            proc: None,
        };
        (conf, bind)
    }

    /// Runs a DNS tool where the server is reachable.
    fn tool(&self, argv: &[&str]) -> Output {
        let mut cmd = match &self.host {
            Some(host) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &host.netns]).args(argv);
                c
            }
            None => {
                let mut c = Command::new(argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        cmd.output()
            .unwrap_or_else(|e| panic!("running {argv:?}: {e}"))
    }

    fn wait_ready(&self) {
        crate::eventually("named answers", Duration::from_secs(20), || {
            let ns = format!("ns.{}", self.zone);
            let text = self.dig(&ns, "A");
            if text == self.addr {
                Ok(())
            } else {
                Err(text)
            }
        });
    }

    /// `dig +short` at this server.
    pub fn dig(&self, name: &str, kind: &str) -> String {
        let (server, port) = (format!("@{}", self.addr), self.port.to_string());
        let out = self.tool(&[
            "dig", &server, "-p", &port, name, kind, "+short", "+time=1", "+tries=1",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Points `name` (relative to the zone) at `addr` with an RFC 2136 update, as
    /// someone else than orch would.
    pub fn set_a(&self, name: &str, addr: &str) {
        crate::lab::assert_lab_address(addr);
        let fqdn = format!("{name}.{}", self.zone);
        let script = format!(
            "server {} {}\nzone {}\nupdate delete {fqdn} A\nupdate add {fqdn} 1 A {addr}\nsend\n",
            self.addr, self.port, self.zone
        );
        let path = self.key_file.with_file_name(format!("nsupdate-{name}.txt"));
        std::fs::write(&path, script).unwrap();
        let out = self.tool(&[
            "nsupdate",
            "-k",
            self.key_file.to_str().unwrap(),
            path.to_str().unwrap(),
        ]);
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
            format!("nameserver {}\noptions timeout:1 attempts:2\n", self.addr),
        )
        .unwrap();
    }
}

/// A UDP and TCP port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

//! The lab: hosts made of network namespaces, each joined by a veth pair to a bridge in
//! a "switch" namespace. Names are unique per process and lab; everything (processes
//! first, then namespaces and their /etc/netns folders) is removed when the `Lab` is
//! dropped, also when the test panics. Namespaces left behind by a killed test run are
//! swept when the next lab starts.
//!
//! Addresses: only 127/8, 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and
//! 2001:db8::/32 — anything else is refused.

use crate::process::Proc;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

const PREFIX: &str = "orchlab-";
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Panics unless `addr` ("192.0.2.1/24" or "192.0.2.1") is in a range the lab may use.
pub fn assert_lab_address(addr: &str) {
    let ip: IpAddr = addr
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("`{addr}` is not an address"));
    let ok = match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            o[0] == 127
                || matches!(
                    (o[0], o[1], o[2]),
                    (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
                )
        }
        IpAddr::V6(a) => a.segments()[0] == 0x2001 && a.segments()[1] == 0x0db8,
    };
    assert!(ok, "lab address {addr} is outside 127/8, 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32");
}

fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// The namespace's name, for `ip netns exec`.
    pub netns: String,
    /// The first address given, without its prefix length.
    pub addr: String,
}

pub struct Lab {
    id: String,
    switch: String,
    hosts: Vec<Host>,
    procs: Vec<Proc>,
    dir: tempfile::TempDir,
}

impl Lab {
    /// A lab with an empty switch. `test` names its folder for logs.
    pub fn new(test: &str) -> Lab {
        sweep_stale();
        let id = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let switch = format!("{id}-sw");
        let dir = tempfile::Builder::new()
            .prefix(&format!("{test}-"))
            .tempdir()
            .unwrap();
        // Own the switch before anything can fail, so that Drop removes it.
        let lab = Lab {
            id,
            switch: switch.clone(),
            hosts: Vec::new(),
            procs: Vec::new(),
            dir,
        };
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "set", "lo", "up"]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        lab
    }

    /// A folder for this lab's files (configs, logs); removed with the lab.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The namespaces this lab made, switch included.
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.switch.clone())
            .chain(self.hosts.iter().map(|h| h.netns.clone()))
            .collect()
    }

    /// Adds a host with interface `eth0` on the switch, holding `addrs` ("192.0.2.1/24").
    pub fn host(&mut self, name: &str, addrs: &[&str]) -> Host {
        addrs.iter().for_each(|a| assert_lab_address(a));
        let netns = format!("{}-{name}", self.id);
        let port = format!("p{}", self.hosts.len());
        ip(&["netns", "add", &netns]);
        let host = Host {
            name: name.to_owned(),
            netns: netns.clone(),
            addr: addrs
                .first()
                .map(|a| a.split('/').next().unwrap_or(a).to_owned())
                .unwrap_or_default(),
        };
        self.hosts.push(host.clone());
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            &netns,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch,
        ]);
        ip(&["-n", &self.switch, "link", "set", &port, "master", "br0"]);
        ip(&["-n", &self.switch, "link", "set", &port, "up"]);
        for addr in addrs {
            // nodad: an IPv6 address is usable at once, no duplicate detection wait.
            let mut args = vec!["-n", &netns, "addr", "add", addr, "dev", "eth0"];
            if addr.contains(':') {
                args.push("nodad");
            }
            ip(&args);
        }
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        host
    }

    /// A command that runs `program` inside `host`'s namespace.
    pub fn command(&self, host: &Host, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.netns]).arg(program);
        cmd
    }

    /// Runs `argv` in `host` to completion.
    pub fn run(&self, host: &Host, argv: &[&str]) -> Output {
        let mut cmd = self.command(host, argv[0]);
        cmd.args(&argv[1..]);
        cmd.output()
            .unwrap_or_else(|e| panic!("running {argv:?} in {}: {e}", host.name))
    }

    /// Runs `argv` in `host`; panics with its stderr unless it succeeds.
    pub fn must(&self, host: &Host, argv: &[&str]) {
        let out = self.run(host, argv);
        assert!(
            out.status.success(),
            "{argv:?} in {}: {}",
            host.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// One ping from `host` to `to` with a 1 s timeout.
    pub fn ping(&self, from: &Host, to: &str) -> Result<(), String> {
        let out = self.run(from, &["ping", "-c", "1", "-W", "1", to]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    }

    /// Starts a long-running process in `host`; it is stopped (by pid) with the lab.
    /// Its output goes to `<lab dir>/<name>.log`. Returns its index for [`Lab::proc`].
    pub fn spawn(&mut self, host: &Host, name: &str, cmd: Command) -> usize {
        // `ip netns exec` execs the program, so the pid we hold is the program's own.
        let mut wrapped = self.command(host, cmd.get_program());
        wrapped.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        let log = self.log_path(name);
        self.procs.push(Proc::spawn(name, &mut wrapped, &log));
        self.procs.len() - 1
    }

    pub fn proc(&mut self, index: usize) -> &mut Proc {
        &mut self.procs[index]
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The log of a process, for failure messages.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.procs.clear();
        for ns in self.namespaces().iter().rev() {
            remove_namespace(ns);
        }
    }
}

fn remove_namespace(ns: &str) {
    // Anything still running inside (a grandchild the test did not track) goes first.
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<libc::pid_t>() {
                // SAFETY: kill(2) on a process inside a namespace this harness created.
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).output();
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
}

/// Removes namespaces of earlier test processes that no longer run (killed with -9,
/// where no Drop could run).
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let owner = rest.split('-').next().unwrap_or_default();
        if !owner.is_empty() && !Path::new("/proc").join(owner).exists() {
            remove_namespace(name);
        }
    }
}

/// Whether the namespace `name` exists now.
pub fn namespace_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

//! Real database servers in lab hosts: a PostgreSQL primary and a streaming standby made
//! with `pg_basebackup`, a MariaDB primary and a GTID replica, each listening on its
//! node's tunnel address so that replication runs through orch's tunnel.
//!
//! PostgreSQL refuses to run as root, so its processes run as the `postgres` user (by
//! `setpriv`, which execs: the pid the lab holds is the server's). The data lives in a
//! folder of its own (the lab folder is private to root); [`Servers`] stops every server
//! and removes it, and must be dropped before the lab (declare it after the lab).

use crate::lab::{Host, Lab};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The newest PostgreSQL server binaries Debian installed.
pub fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .filter(|p| p.join("postgres").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// The programs a test needs, for [`crate::prerequisites`].
pub fn pg_programs() -> Vec<String> {
    ["postgres", "initdb", "pg_basebackup", "pg_ctl", "psql"]
        .iter()
        .map(|p| pg_bin().join(p).to_string_lossy().into_owned())
        .chain(["setpriv".to_owned()])
        .collect()
}

pub const MARIADB_PROGRAMS: &[&str] = &["mariadbd", "mariadb-install-db", "mariadb"];

fn uid_gid(user: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap_or_else(|| panic!("no user {user} (installed with the server package)"));
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid, gid);
        }
    }
}

fn check(out: Output, what: &str) -> String {
    answer(out, what).unwrap_or_else(|e| panic!("{e}"))
}

/// The trimmed output of a client run, or what it said when it failed.
fn answer(out: Output, what: &str) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{what}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

enum Server {
    Postgres { dir: PathBuf },
    Mariadb { dir: PathBuf },
}

/// The servers of a test, and their files.
pub struct Servers {
    root: tempfile::TempDir,
    servers: Vec<Server>,
}

impl Default for Servers {
    fn default() -> Self {
        Self::new()
    }
}

impl Servers {
    pub fn new() -> Servers {
        let root = tempfile::Builder::new()
            .prefix("orch-db-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Servers {
            root,
            servers: Vec::new(),
        }
    }

    /// The folder the servers' files live in.
    pub fn dir(&self) -> &Path {
        self.root.path()
    }

    fn as_postgres(argv: &[&str]) -> Vec<String> {
        let (uid, gid) = uid_gid("postgres");
        let mut v: Vec<String> = vec![
            "setpriv".into(),
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--init-groups".into(),
            "--".into(),
        ];
        v.extend(argv.iter().map(|s| s.to_string()));
        v
    }

    /// Runs statements one by one (each in its own transaction, as `ALTER SYSTEM` and
    /// `CREATE DATABASE` need) as the `postgres` superuser; returns the last output.
    pub fn psql_each(&self, lab: &Lab, host: &Host, dir: &Path, statements: &[&str]) -> String {
        let mut last = String::new();
        for sql in statements {
            last = self.psql(lab, host, dir, sql);
        }
        last
    }

    /// Runs SQL as the `postgres` superuser over the server's unix socket.
    pub fn psql(&self, lab: &Lab, host: &Host, dir: &Path, sql: &str) -> String {
        self.psql_on(lab, host, dir, "postgres", sql)
    }

    /// Runs SQL as the `postgres` superuser in database `db`.
    pub fn psql_on(&self, lab: &Lab, host: &Host, dir: &Path, db: &str, sql: &str) -> String {
        self.try_psql_on(lab, host, dir, db, sql)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Servers::psql_on`] that returns a failure (for polling until it passes).
    pub fn try_psql_on(
        &self,
        lab: &Lab,
        host: &Host,
        dir: &Path,
        db: &str,
        sql: &str,
    ) -> Result<String, String> {
        let psql = pg_bin().join("psql");
        let sock = Self::socket_dir(dir);
        let d = sock.to_string_lossy();
        let argv = Self::as_postgres(&[
            psql.to_str().unwrap(),
            "-h",
            &d,
            "-p",
            "5432",
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        ]);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        answer(lab.run(host, &argv), &format!("psql {sql}"))
    }

    /// The command line that runs one SQL statement (appended) as the `postgres`
    /// superuser in database `db` of the server in `dir`, over its unix socket, from any
    /// network namespace.
    pub fn psql_argv(&self, dir: &Path, db: &str) -> Vec<String> {
        let psql = pg_bin().join("psql");
        let sock = Self::socket_dir(dir);
        Self::as_postgres(&[
            psql.to_str().unwrap(),
            "-h",
            sock.to_str().unwrap(),
            "-p",
            "5432",
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
        ])
    }

    /// Where a server's unix socket lives: beside its data folder, not in it (pg_basebackup
    /// would copy the socket's lock file, naming the primary's live pid).
    fn socket_dir(dir: &Path) -> PathBuf {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let sock = dir.with_file_name(format!("{name}-socket"));
        if !sock.exists() {
            std::fs::create_dir(&sock).unwrap();
            let (uid, gid) = uid_gid("postgres");
            chown_tree(&sock, uid, gid);
        }
        sock
    }

    fn pg_conf(dir: &Path, listen: &str) -> String {
        format!(
            "listen_addresses = '{listen}'\nport = 5432\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 4\nmax_replication_slots = 4\nhot_standby = on\n\
             wal_receiver_status_interval = 1s\nwal_retrieve_retry_interval = 1s\nshared_buffers = 16MB\n\
             fsync = off\nlogging_collector = off\nwal_log_hints = on\nwal_keep_size = 256MB\n",
            Self::socket_dir(dir).display()
        )
    }

    fn start_pg(&mut self, lab: &mut Lab, host: &Host, dir: &Path) {
        let postgres = pg_bin().join("postgres");
        let argv = Self::as_postgres(&[postgres.to_str().unwrap(), "-D", dir.to_str().unwrap()]);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        lab.spawn(host, &format!("postgres-{}", host.name), cmd);
        self.servers.push(Server::Postgres {
            dir: dir.to_owned(),
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let isready = pg_bin().join("pg_isready");
            let out = lab.run(
                host,
                &[
                    isready.to_str().unwrap(),
                    "-h",
                    Self::socket_dir(dir).to_str().unwrap(),
                    "-p",
                    "5432",
                ],
            );
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres in {} did not start ({}):\n{}",
                host.name,
                String::from_utf8_lossy(&out.stdout),
                lab.log(&format!("postgres-{}", host.name))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PostgreSQL primary in `host` listening on `listen` (its tunnel address), with
    /// roles `orch` (superuser, password `orch_password`) and `replicator`, database `app`,
    /// and a physical slot for the standby. Returns its data folder.
    pub fn postgres_primary(
        &mut self,
        lab: &mut Lab,
        host: &Host,
        listen: &str,
        orch_password: &str,
        repl_password: &str,
    ) -> PathBuf {
        let dir = self.root.path().join(format!("pg-{}", host.name));
        std::fs::create_dir(&dir).unwrap();
        let (uid, gid) = uid_gid("postgres");
        chown_tree(&dir, uid, gid);
        let initdb = pg_bin().join("initdb");
        let argv = Self::as_postgres(&[
            initdb.to_str().unwrap(),
            "-D",
            dir.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-instructions",
        ]);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        check(lab.run(host, &argv), "initdb");
        let conf = dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&Self::pg_conf(&dir, listen));
        std::fs::write(&conf, text).unwrap();
        let hba = dir.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).unwrap();
        text.push_str(
            "host all all 198.51.100.0/24 scram-sha-256\nhost replication replicator 198.51.100.0/24 scram-sha-256\nhost replication orch 198.51.100.0/24 scram-sha-256\n",
        );
        std::fs::write(&hba, text).unwrap();
        chown_tree(&dir, uid, gid);
        self.start_pg(lab, host, &dir);
        self.psql_each(
            lab,
            host,
            &dir,
            &[
                &format!("CREATE ROLE orch LOGIN SUPERUSER PASSWORD '{orch_password}'"),
                &format!("CREATE ROLE replicator LOGIN REPLICATION PASSWORD '{repl_password}'"),
                "CREATE DATABASE app OWNER orch",
                "SELECT pg_create_physical_replication_slot('standby')",
            ],
        );
        dir
    }

    /// A streaming standby of the primary at `primary` (a tunnel address), made with
    /// `pg_basebackup` through the tunnel, listening on `listen`.
    pub fn postgres_standby(
        &mut self,
        lab: &mut Lab,
        host: &Host,
        primary: &str,
        listen: &str,
        repl_password: &str,
    ) -> PathBuf {
        let dir = self.root.path().join(format!("pg-{}", host.name));
        let (uid, gid) = uid_gid("postgres");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        chown_tree(&dir, uid, gid);
        let basebackup = pg_bin().join("pg_basebackup");
        let password = format!("PGPASSWORD={repl_password}");
        let argv = Self::as_postgres(&[
            "env",
            &password,
            basebackup.to_str().unwrap(),
            "-h",
            primary,
            "-p",
            "5432",
            "-U",
            "replicator",
            "-D",
            dir.to_str().unwrap(),
            "-R",
            "-X",
            "stream",
            "-S",
            "standby",
            "-c",
            "fast",
        ]);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        check(lab.run(host, &argv), "pg_basebackup through the tunnel");
        let auto = dir.join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&auto).unwrap();
        text.push_str(&format!(
            "listen_addresses = '{listen}'\nunix_socket_directories = '{}'\n",
            Self::socket_dir(&dir).display()
        ));
        std::fs::write(&auto, text).unwrap();
        chown_tree(&dir, uid, gid);
        self.start_pg(lab, host, &dir);
        dir
    }

    /// Runs SQL as MariaDB's root over the server's unix socket.
    pub fn mariadb(&self, lab: &Lab, host: &Host, dir: &Path, sql: &str) -> String {
        self.try_mariadb(lab, host, dir, sql)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Servers::mariadb`] that returns a failure (for polling until it passes).
    pub fn try_mariadb(
        &self,
        lab: &Lab,
        host: &Host,
        dir: &Path,
        sql: &str,
    ) -> Result<String, String> {
        let socket = format!("--socket={}", dir.join("mysqld.sock").display());
        answer(
            lab.run(
                host,
                &[
                    "mariadb",
                    "--no-defaults",
                    &socket,
                    "-u",
                    "root",
                    "-N",
                    "-B",
                    "-e",
                    sql,
                ],
            ),
            &format!("mariadb {sql}"),
        )
    }

    /// The command line that runs SQL (appended) as `user` in database `db` of the
    /// MariaDB server in `dir`, over its unix socket, from any network namespace.
    pub fn mariadb_argv(&self, dir: &Path, db: &str, user: &str, password: &str) -> Vec<String> {
        vec![
            "mariadb".into(),
            "--no-defaults".into(),
            format!("--socket={}", dir.join("mysqld.sock").display()),
            format!("--database={db}"),
            "-u".into(),
            user.into(),
            format!("-p{password}"),
            "-N".into(),
            "-B".into(),
            "-e".into(),
        ]
    }

    fn start_mariadb(
        &mut self,
        lab: &mut Lab,
        host: &Host,
        listen: &str,
        server_id: u32,
        read_only: bool,
    ) -> PathBuf {
        let dir = self.root.path().join(format!("mariadb-{}", host.name));
        std::fs::create_dir(&dir).unwrap();
        let datadir = format!("--datadir={}", dir.join("data").display());
        check(
            lab.run(
                host,
                &[
                    "mariadb-install-db",
                    "--no-defaults",
                    &datadir,
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ],
            ),
            "mariadb-install-db",
        );
        let mut cmd = Command::new("mariadbd");
        cmd.args([
            "--no-defaults",
            &datadir,
            &format!("--socket={}", dir.join("mysqld.sock").display()),
            &format!("--pid-file={}", dir.join("mysqld.pid").display()),
            "--port=3306",
            &format!("--bind-address={listen}"),
            &format!("--server-id={server_id}"),
            &format!("--log-bin={}", dir.join("binlog").display()),
            "--binlog-format=ROW",
            // What orch's GTID rejoin needs: a replica logs what it applies (so that it
            // can be a master after a failover) and stops on errant transactions.
            "--log-slave-updates=1",
            "--gtid-strict-mode=1",
            "--user=root",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=16M",
            "--innodb-flush-log-at-trx-commit=2",
            &format!("--read-only={}", u8::from(read_only)),
        ]);
        lab.spawn(host, &format!("mariadb-{}", host.name), cmd);
        self.servers.push(Server::Mariadb { dir: dir.clone() });
        let deadline = Instant::now() + Duration::from_secs(60);
        let socket = format!("--socket={}", dir.join("mysqld.sock").display());
        loop {
            let out = lab.run(
                host,
                &[
                    "mariadb",
                    "--no-defaults",
                    &socket,
                    "-u",
                    "root",
                    "-e",
                    "SELECT 1",
                ],
            );
            if out.status.success() {
                return dir;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd in {} did not start:\n{}",
                host.name,
                lab.log(&format!("mariadb-{}", host.name))
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A MariaDB primary with users `orch` (all privileges) and `repl`, database `app`.
    pub fn mariadb_primary(
        &mut self,
        lab: &mut Lab,
        host: &Host,
        listen: &str,
        orch_password: &str,
        repl_password: &str,
    ) -> PathBuf {
        let dir = self.start_mariadb(lab, host, listen, 1, false);
        self.mariadb(
            lab,
            host,
            &dir,
            &format!(
                "CREATE USER 'orch'@'%' IDENTIFIED BY '{orch_password}'; \
                 GRANT ALL PRIVILEGES ON *.* TO 'orch'@'%'; \
                 CREATE USER 'repl'@'%' IDENTIFIED BY '{repl_password}'; \
                 GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%'; \
                 CREATE DATABASE app;"
            ),
        );
        dir
    }

    /// A read-only MariaDB replica of `primary` (a tunnel address) by GTID.
    pub fn mariadb_replica(
        &mut self,
        lab: &mut Lab,
        host: &Host,
        primary: &str,
        listen: &str,
        repl_password: &str,
    ) -> PathBuf {
        let dir = self.start_mariadb(lab, host, listen, 2, true);
        self.mariadb(
            lab,
            host,
            &dir,
            &format!(
                "CHANGE MASTER TO MASTER_HOST='{primary}', MASTER_PORT=3306, MASTER_USER='repl', \
                 MASTER_PASSWORD='{repl_password}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; \
                 START SLAVE;"
            ),
        );
        dir
    }
}

impl Drop for Servers {
    /// Stops every server before its files go: PostgreSQL with an immediate shutdown
    /// (a SIGKILL of the postmaster would orphan its backends), MariaDB by its pid.
    fn drop(&mut self) {
        for server in self.servers.iter().rev() {
            match server {
                Server::Postgres { dir } => {
                    let pg_ctl = pg_bin().join("pg_ctl");
                    let argv = Self::as_postgres(&[
                        pg_ctl.to_str().unwrap_or_default(),
                        "-D",
                        dir.to_str().unwrap_or_default(),
                        "-m",
                        "immediate",
                        "-w",
                        "-t",
                        "20",
                        "stop",
                    ]);
                    let _ = Command::new(&argv[0]).args(&argv[1..]).output();
                }
                Server::Mariadb { dir } => {
                    let pid = std::fs::read_to_string(dir.join("mysqld.pid"))
                        .ok()
                        .and_then(|p| p.trim().parse::<i32>().ok());
                    if let Some(pid) = pid {
                        // SAFETY: kill has no memory preconditions.
                        #[allow(unsafe_code)]
                        unsafe {
                            libc::kill(pid, libc::SIGTERM);
                        }
                        let deadline = Instant::now() + Duration::from_secs(20);
                        // Gone, or a zombie waiting for the lab to reap it.
                        let running = || {
                            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                                .map(|s| {
                                    !s.split(')')
                                        .nth(1)
                                        .unwrap_or("")
                                        .trim_start()
                                        .starts_with('Z')
                                })
                                .unwrap_or(false)
                        };
                        while running() && Instant::now() < deadline {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            }
        }
    }
}

/// A `systemctl` stand-in in `bin` for `start|stop postgresql` of the server in `data`
/// (systemd does not run in a lab namespace; the playbooks' other steps are the real
/// thing). Like systemd's, `start` of a running server succeeds and changes nothing.
pub fn systemctl_for_postgres(bin: &Path, data: &Path) {
    let pg = format!(
        "setpriv --reuid=postgres --regid=postgres --init-groups -- {} -D {}",
        pg_bin().join("pg_ctl").display(),
        data.display()
    );
    let script = format!(
        "#!/bin/sh\n# lab stand-in for systemd: the Debian unit's start/stop of this host's PostgreSQL\n\
         case \"$1 $2\" in\n\
         'stop postgresql') exec {pg} -m fast -w -t 60 stop ;;\n\
         'start postgresql') {pg} status >/dev/null 2>&1 && exit 0; exec {pg} -w -t 60 -l {d}/startup.log start ;;\n\
         *) echo \"systemctl stand-in: $*\" >&2; exit 1 ;;\nesac\n",
        d = data.display()
    );
    std::fs::create_dir_all(bin).unwrap();
    std::fs::write(bin.join("systemctl"), script).unwrap();
    std::fs::set_permissions(
        bin.join("systemctl"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}

/// One row the [`Writer`] committed: its number, when, and on which target.
#[derive(Debug, Clone)]
pub struct Commit {
    pub n: u64,
    pub at: Instant,
    pub target: usize,
}

/// A client committing numbered rows (`INSERT INTO t VALUES (n)`, n = 1, 2, …) to
/// whichever of its targets accepts them, the one that last did first: the site's
/// application, writing through a switchover. Bounded in rows and time.
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::Arc<std::sync::Mutex<Vec<Commit>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// At most this many rows, for at most this long.
    const MAX_ROWS: u64 = 200_000;
    const MAX_TIME: Duration = Duration::from_secs(900);

    /// `targets`: command lines to which the SQL is appended (see
    /// [`Servers::psql_argv`], [`Servers::mariadb_argv`]).
    pub fn start(targets: Vec<Vec<String>>) -> Writer {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, d) = (stop.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Self::MAX_TIME;
            let (mut n, mut current) = (1u64, 0usize);
            while !s.load(Ordering::Relaxed) && n <= Self::MAX_ROWS && Instant::now() < end {
                let order = [current, 1 - current.min(1)];
                for &t in order.iter().take(targets.len()) {
                    let argv = &targets[t];
                    let ok = Command::new(&argv[0])
                        .args(&argv[1..])
                        .arg(format!("INSERT INTO t VALUES ({n})"))
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|st| st.success());
                    if ok {
                        d.lock().unwrap().push(Commit {
                            n,
                            at: Instant::now(),
                            target: t,
                        });
                        n += 1;
                        current = t;
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Writer {
            stop,
            done,
            thread: Some(thread),
        }
    }

    /// The rows committed so far.
    pub fn committed(&self) -> Vec<Commit> {
        self.done.lock().unwrap().clone()
    }

    /// Stops it; every row it committed.
    pub fn stop(mut self) -> Vec<Commit> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.committed()
    }

    /// The longest time between two commits among `commits` (the write unavailability).
    pub fn longest_gap(commits: &[Commit]) -> Duration {
        commits
            .windows(2)
            .map(|w| w[1].at.duration_since(w[0].at))
            .max()
            .unwrap_or_default()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

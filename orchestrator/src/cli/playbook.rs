//! `orch playbook check|run`, `orch ssh setup|serve` and `orch db rejoin`: playbooks and
//! what their steps call.

use super::{runtime, Exit, Result};
use crate::config::{self, LoadOptions, Loaded};
use crate::playbook::{self, ssh, Context, Report};
use anyhow::{anyhow, Context as _};
use std::io::Write as _;
use std::path::Path;

/// The public addresses the variables need, as this node knows them from its config.
fn context<'a>(
    loaded: &'a Loaded,
    site: &'a config::Site,
    epoch: std::result::Result<i64, String>,
) -> Context<'a> {
    let quiet = crate::cluster::peer::PeerView::default();
    let self_ip = crate::daemon::ddns::public_ip(&loaded.me().public_ip, &quiet);
    let peer_ip = match &loaded.peer().public_ip {
        config::PublicIp::Fixed(ip) => Ok(*ip),
        _ => Err(format!(
            "{}'s public_ip is not a fixed address in the config",
            loaded.peer().name
        )),
    };
    Context {
        loaded,
        site,
        epoch,
        self_public_ip: self_ip,
        peer_public_ip: peer_ip,
    }
}

pub(super) fn check(config_path: &Path, options: &LoadOptions, name: Option<&str>) -> Result {
    // The config's own problems include those of the playbooks its sites name.
    let loaded = config::load(config_path, options)?;
    let dir = config::config_dir(config_path);
    let names = match name {
        Some(n) => vec![n.to_owned()],
        None => playbook::all_names(&dir, &loaded.config.sites),
    };
    let mut problems = Vec::new();
    for n in &names {
        match config::playbook::find(&dir, n) {
            Err(nf) => problems.extend(nf.diagnostics),
            Ok(found) => {
                for site in loaded.config.sites.iter().filter(|s| {
                    s.promote
                        .iter()
                        .chain(&s.demote)
                        .chain(&s.rejoin)
                        .any(|p| p == n)
                }) {
                    problems.extend(found.check_for_site(&site.name, &site.databases));
                }
            }
        }
    }
    problems.dedup();
    if !problems.is_empty() {
        return Err(Exit::usage(config::ConfigError::Invalid(problems)));
    }
    println!("{} playbook(s) ok: {}", names.len(), names.join(", "));
    Ok(())
}

pub(super) fn run(loaded: &Loaded, name: &str, site: &str, dry_run: bool) -> Result {
    let site = super::site::site_named(&loaded.config, site)?;
    let rt = runtime()?;
    let role = rt
        .block_on(crate::daemon::roles::read(&loaded.me().state_dir, site))
        .map_err(Exit::failed)?;
    let ctx = context(loaded, site, Ok(role.epoch));
    if dry_run {
        let plan = playbook::plan(&ctx, name).map_err(Exit::usage)?;
        println!(
            "playbook {name} for site {} on {} (epoch {}), dry run: nothing is run",
            site.name, loaded.me, role.epoch
        );
        for (i, s) in plan.steps.iter().enumerate() {
            println!(
                "{:>2}. {} [{} on {}] {}",
                i + 1,
                s.name,
                s.kind,
                s.on,
                s.status
            );
            println!("      {}", s.does);
        }
        return Ok(());
    }
    let report: Report = rt.block_on(async {
        let store = agent::state::Store::open(&loaded.me().state_dir)
            .await
            .context("opening the state store to record the run")
            .map_err(Exit::failed)?;
        let mut progress =
            |step: &config::playbook::Step, done: Option<&playbook::StepRecord>| match done {
                None => {
                    print!("{} [{}] … ", step.name, step.kind());
                    let _ = std::io::stdout().flush();
                }
                Some(r) => {
                    println!(
                        "{} in {:.1} s{}",
                        r.status,
                        r.duration_ms as f64 / 1000.0,
                        if r.continued { " (continuing)" } else { "" }
                    );
                    if !r.output.trim().is_empty() {
                        for line in r.output.trim_end().lines() {
                            println!("    | {line}");
                        }
                    }
                }
            };
        let report = playbook::run(&ctx, name, Some(&store), &mut progress)
            .await
            .map_err(Exit::usage);
        store.close().await;
        report
    })?;
    match report.failure() {
        None => {
            println!(
                "playbook {name} done on {} ({} steps)",
                loaded.me,
                report.steps.len()
            );
            Ok(())
        }
        Some(f) => Err(Exit::failed(anyhow!(f))),
    }
}

pub(super) fn ssh_setup(loaded: &Loaded, host_key: &Path) -> Result {
    let key = &loaded.me().ssh.key_file;
    if !key.exists() {
        if let Some(dir) = key.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating {}", dir.display()))
                .map_err(Exit::failed)?;
        }
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("orch@{}", loaded.me))
            .arg("-f")
            .arg(key)
            .output()
            .context("running ssh-keygen (install openssh-client)")
            .map_err(Exit::failed)?;
        if !out.status.success() {
            return Err(Exit::failed(anyhow!(
                "ssh-keygen: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        eprintln!("Wrote the SSH key {} (mode 0600).", key.display());
    } else {
        eprintln!("Keeping the existing SSH key {}.", key.display());
    }
    let public = std::fs::read_to_string(key.with_extension("pub"))
        .with_context(|| format!("reading {}.pub", key.display()))
        .map_err(Exit::failed)?;
    let orch = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/usr/bin/orch".into());
    let config = std::path::absolute(&loaded.config.path).unwrap_or(loaded.config.path.clone());
    let peer = loaded.peer();
    println!(
        "# On {peer}, in the authorized_keys of {user} (~{user}/.ssh/authorized_keys), one line:",
        peer = peer.name,
        user = peer.ssh.user
    );
    println!(
        "restrict,from=\"{}\",command=\"{orch} --config {} ssh serve\" {}",
        loaded.me().tunnel_ip,
        config.display(),
        public.trim()
    );
    match std::fs::read_to_string(host_key) {
        Ok(k) => {
            let k: Vec<&str> = k.split_whitespace().take(2).collect();
            println!(
                "# And in the config of both nodes, so that {} pins this host's key:",
                peer.name
            );
            println!(
                "# [nodes.{}] ssh = {{ ..., host_key = \"{}\" }}",
                loaded.me,
                k.join(" ")
            );
        }
        Err(e) => eprintln!(
            "No host key at {} ({e}): install openssh-server, or give --host-key FILE",
            host_key.display()
        ),
    }
    Ok(())
}

/// The forced command: one step, from this node's own config and playbook.
pub(super) fn ssh_serve(loaded: &Loaded) -> Result {
    let command = std::env::var("SSH_ORIGINAL_COMMAND").unwrap_or_default();
    let refuse = |e: String| -> Result {
        eprintln!("orch ssh serve on {}: {e}", loaded.me);
        std::process::exit(ssh::SERVE_REFUSED);
    };
    let request = match ssh::Request::decode(&command) {
        Ok(r) => r,
        Err(e) => return refuse(e),
    };
    let (site, step) = match ssh::admit(loaded, &request) {
        Ok(a) => a,
        Err(e) => return refuse(e),
    };
    let rt = runtime()?;
    let outcome = rt.block_on(async {
        let epoch = crate::daemon::roles::read(&loaded.me().state_dir, site)
            .await
            .map(|r| r.epoch)
            .map_err(|e| format!("this node's state store: {}", agent::error_chain(&e)));
        let ctx = context(loaded, site, epoch);
        // The same variables as a local run here: `db.*` of the step's database.
        let vars = playbook::step_vars(&playbook::variables(&ctx), &ctx, &step);
        let db = playbook::local_db(&ctx, &step);
        let outcome = playbook::exec::run_local(&step, &vars, db.as_ref()).await;
        if let Ok(store) = agent::state::Store::open(&loaded.me().state_dir).await {
            let summary = format!(
                "playbook {} step `{}` run for {}: {}",
                request.playbook, step.name, request.from, outcome.status
            );
            let event = agent::state::NewEvent {
                at: agent::unix_millis(std::time::SystemTime::now()),
                site: Some(&site.name),
                kind: agent::state::EventKind::Playbook,
                outcome: if outcome.ok {
                    agent::state::Outcome::Ok
                } else {
                    agent::state::Outcome::Fail
                },
                summary: &summary,
                detail: Some(serde_json::json!({ "output": outcome.output })),
            };
            let _ = store.record(&event).await;
            store.close().await;
        }
        outcome
    });
    print!("{}", outcome.output);
    let _ = std::io::stdout().flush();
    eprintln!("{}: {}", step.name, outcome.status);
    std::process::exit(if outcome.ok {
        ssh::SERVE_OK
    } else {
        ssh::SERVE_STEP_FAILED
    });
}

/// `orch db rejoin SITE DATABASE`: this node's database follows the peer's.
pub(super) fn db_rejoin(
    loaded: &Loaded,
    site: &config::Site,
    database: &str,
    within: std::time::Duration,
) -> Result {
    let db = site
        .databases
        .iter()
        .find(|d| d.name == database)
        .ok_or_else(|| Exit::usage(anyhow!("site {} has no database `{database}`", site.name)))?;
    let peer = loaded.peer().name.clone();
    let master = crate::databases::endpoint(&loaded.config, db, &peer)
        .map_err(|e| Exit::usage(anyhow!("site {}: {e}", site.name)))?;
    let rt = runtime()?;
    let done = match db.kind {
        config::DbKind::Mysql => {
            let local = crate::databases::endpoint(&loaded.config, db, &loaded.me)
                .map_err(|e| Exit::usage(anyhow!("site {}: {e}", site.name)))?;
            rt.block_on(agent::db::mysql::rejoin(&local, &master, database, within))
        }
        config::DbKind::Postgres => {
            let dir = db.data_dirs.get(&loaded.me).ok_or_else(|| {
                Exit::usage(anyhow!(
                    "database {database} of site {} has no data_dir for {}: add data_dir = \"/var/lib/postgresql/15/main\" (or a table per node)",
                    site.name,
                    loaded.me
                ))
            })?;
            let stamp = chrono::Local::now().format("%Y%m%dT%H%M%S");
            let aside = loaded
                .me()
                .state_dir
                .join("diverged")
                .join(&site.name)
                .join(stamp.to_string())
                .join(format!("pgdata-{database}"));
            rt.block_on(agent::db::postgres::rejoin(
                dir, &master, &loaded.me, &aside, within,
            ))
        }
    };
    match done {
        Ok(text) => {
            println!("rejoined: {text}");
            Ok(())
        }
        Err(e) => Err(Exit::failed(anyhow!(
            "database {database} of site {}: {e}",
            site.name
        ))),
    }
}

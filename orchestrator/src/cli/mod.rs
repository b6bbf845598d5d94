//! The `orch` command line: the arguments ([`args`]), and what each subcommand does, one
//! file per group of commands. Every command returns `Err(Exit)` carrying its exit code;
//! `main` prints the error once. Commands that need the running agent ask it over the
//! control socket ([`call`]); the others read the config and the state store themselves.

mod args;
mod playbook;
mod push;
mod report;
mod setup;
mod site;
mod starter;
mod status;

pub use args::{Cli, Command, ConfigCommand, DbCommand, DnsCommand, PlaybookCommand, SshCommand};

use crate::api::Request;
use crate::config::{self, ConfigError, LoadOptions, Loaded};
use agent::control::{self, ControlError};
use anyhow::{anyhow, Context as _};
use std::path::PathBuf;
use std::time::Duration;

/// A failed command: the exit code and the error to print.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Exit {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NO_AGENT: u8 = 3;

    pub(crate) fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: Self::FAILED,
            error: error.into(),
        }
    }
    pub(crate) fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: Self::USAGE,
            error: error.into(),
        }
    }
}

impl From<ConfigError> for Exit {
    fn from(e: ConfigError) -> Self {
        Exit::usage(e)
    }
}

pub(crate) type Result<T = ()> = std::result::Result<T, Exit>;

pub fn run(cli: Cli) -> Result {
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG));
    let options = LoadOptions {
        node: cli.node.clone(),
    };
    match cli.command {
        Command::Init {
            tunnel_ip,
            endpoint,
        } => setup::init(&config_path, cli.node.as_deref(), tunnel_ip, endpoint),
        Command::Pubkey => setup::pubkey(&config_path, &options),
        Command::Config {
            command: ConfigCommand::Check,
        } => setup::config_check(&config_path, &options),
        Command::Agent => {
            let loaded = config::load(&config_path, &options)?;
            runtime()?
                .block_on(crate::daemon::run(loaded))
                .map_err(Exit::failed)
        }
        Command::Status { json } => status::status(&config::load(&config_path, &options)?, json),
        Command::History {
            site,
            limit,
            since,
            json,
        } => {
            let since = since
                .map(|s| status::parse_since(&s, chrono::Local::now()))
                .transpose()
                .map_err(|e| Exit::usage(anyhow!(e)))?;
            status::history(
                &config::load(&config_path, &options)?,
                site.as_deref(),
                limit,
                since,
                json,
            )
        }
        Command::Dns {
            command: DnsCommand::Show { site, json },
        } => site::dns_show(&config::load(&config_path, &options)?, &site, json),
        Command::Check { site, json } => {
            site::check(&config::load(&config_path, &options)?, &site, json)
        }
        Command::Ack { site } => site::ack(&config::load(&config_path, &options)?, &site),
        Command::Promote {
            site,
            dry_run,
            force,
        } => site::promote(
            &config::load(&config_path, &options)?,
            &site,
            dry_run,
            force,
        ),
        Command::Report { site, send, html } => {
            report::report(&config::load(&config_path, &options)?, &site, send, html)
        }
        Command::Push {
            site,
            job,
            dry_run,
            force,
        } => push::push(
            &config::load(&config_path, &options)?,
            &site,
            job,
            dry_run,
            force,
        ),
        Command::Playbook {
            command: PlaybookCommand::Check { name },
        } => playbook::check(&config_path, &options, name.as_deref()),
        Command::Playbook {
            command:
                PlaybookCommand::Run {
                    name,
                    site,
                    dry_run,
                },
        } => playbook::run(
            &config::load(&config_path, &options)?,
            &name,
            &site,
            dry_run,
        ),
        Command::Ssh {
            command: SshCommand::Setup { host_key },
        } => playbook::ssh_setup(&config::load(&config_path, &options)?, &host_key),
        Command::Ssh {
            command: SshCommand::Serve,
        } => playbook::ssh_serve(&config::load(&config_path, &options)?),
        Command::Db {
            command:
                DbCommand::Rejoin {
                    site,
                    database,
                    timeout,
                },
        } => {
            let loaded = config::load(&config_path, &options)?;
            let site = site::site_named(&loaded.config, &site)?;
            playbook::db_rejoin(&loaded, site, &database, timeout)
        }
        Command::Db { command } => {
            site::db_command(&config::load(&config_path, &options)?, command)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "orch", &mut std::io::stdout());
            Ok(())
        }
        Command::Manpages { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            std::fs::create_dir_all(&dir)
                .and_then(|()| clap_mangen::generate_to(cmd, &dir))
                .with_context(|| format!("writing the manual pages into {}", dir.display()))
                .map_err(Exit::failed)
        }
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(Exit::failed)
}

pub(crate) fn call<T: serde::de::DeserializeOwned>(
    loaded: &Loaded,
    request: &Request,
) -> Result<T> {
    call_within(loaded, request, Duration::from_secs(30))
}

pub(crate) fn call_within<T: serde::de::DeserializeOwned>(
    loaded: &Loaded,
    request: &Request,
    timeout: Duration,
) -> Result<T> {
    let socket = loaded.me().state_dir.join(crate::api::SOCKET);
    let rt = runtime()?;
    rt.block_on(control::call(&socket, request, timeout))
        .map_err(|e| control_failed(loaded, e))
}

/// A failed control call as an exit: 3 when no agent answers, else 1.
pub(crate) fn control_failed(loaded: &Loaded, e: ControlError) -> Exit {
    match e {
        ControlError::Unreachable { .. } => Exit {
            code: Exit::NO_AGENT,
            error: anyhow!(e).context(format!(
                "the agent of node {} is not running (start it: `systemctl start orch`, or `orch agent`)",
                loaded.me
            )),
        },
        other => Exit::failed(other),
    }
}

//! The `orch` command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// orch keeps two self-hosted servers backing each other up: a WireGuard tunnel between
/// them, scheduled pushes, replication checks, reports, and DNS failover.
#[derive(Debug, Parser)]
#[command(name = "orch", version, propagate_version = true, max_term_width = 100)]
#[command(
    after_help = "Exit codes: 0 ok, 1 the operation failed, 2 usage or config error, \
3 the agent is not running or unreachable."
)]
pub struct Cli {
    /// Config file [default: /etc/orch/orch.toml]
    #[arg(long, global = true, env = "ORCH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Which node of the config this machine is [default: the node whose private key is here]
    #[arg(long, global = true, env = "ORCH_NODE", value_name = "NAME")]
    pub node: Option<String>,

    /// Log filter, e.g. "debug" or "info,agent=trace" [default: RUST_LOG, else info for the agent, warn otherwise]
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create this node's key pair (never replacing one) and a commented starter config
    Init {
        /// This node's address inside the tunnel [default: 10.77.0.1]
        #[arg(long, value_name = "IP")]
        tunnel_ip: Option<std::net::IpAddr>,
        /// Where the peer reaches this node, e.g. alice.dyn.example.org:51820
        #[arg(long, value_name = "HOST:PORT")]
        endpoint: Option<String>,
    },
    /// Print this node's WireGuard public key
    Pubkey,
    /// Work with the config file
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run the daemon in the foreground: tunnel, peer RPC, control socket (needs root or
    /// CAP_NET_ADMIN; systemd runs it as orch.service)
    Agent,
    /// Show this node's agent, tunnel, peer agent, sites, roles and epochs
    Status {
        /// Print JSON (documented in docs/status-json.md)
        #[arg(long)]
        json: bool,
    },
    /// Show past pushes, checks, failovers, alerts and agent starts from the state store
    History {
        /// Only this site (node-wide events are shown too)
        site: Option<String>,
        /// How many of the newest events to show
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only events since then: a duration ago ("2h", "3days") or a local date and
        /// time ("2026-12-01", "2026-12-01 04:30"), or RFC 3339
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Print JSON lines, one event each
        #[arg(long)]
        json: bool,
    },
    /// Run a site's DNS and database checks now and print the figures; exit 1 if one fails
    Check {
        site: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Push the site's directory trees to the standby now (run on the master); waits for
    /// the end, with a progress bar on a terminal, and prints a summary per job
    Push {
        site: String,
        /// Only this sync job
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// List what would change on the standby; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Push even when a guard refuses (max_delete, an empty source, another filesystem)
        #[arg(long)]
        force: bool,
    },
    /// Print the site's replication report now (as the agent would mail it); with --send,
    /// mail it and wait for the first delivery attempt (exit 1 if it is not delivered yet)
    Report {
        site: String,
        /// Queue the report in the outbox and send it
        #[arg(long)]
        send: bool,
        /// Print the HTML part instead of the text
        #[arg(long, conflicts_with = "send")]
        html: bool,
    },
    /// Re-arm automatic failover of a site after one has happened (one automatic failover
    /// per site until then), on either node: the other follows; and clear a "records moved
    /// by someone else" hold on this node
    Ack { site: String },
    /// Make this node master of a site, run on its standby: a planned switchover (checks,
    /// final push from the master, its demote playbooks, databases caught up, promote here,
    /// the DNS swap, the old master follows); undone when a step before the DNS swap fails.
    /// With --force when the master is dead
    Promote {
        site: String,
        /// Print every check and step with the values it would use; change nothing
        #[arg(long)]
        dry_run: bool,
        /// The old master is dead: skip the checks and steps that need it (still takes the
        /// DNS lock)
        #[arg(long)]
        force: bool,
    },
    /// Database operations for playbooks and switchovers
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Check or run playbooks (the steps a site runs when it changes hands)
    Playbook {
        #[command(subcommand)]
        command: PlaybookCommand,
    },
    /// Set up and serve SSH for playbook steps that run on the peer
    Ssh {
        #[command(subcommand)]
        command: SshCommand,
    },
    /// Look at DNS as the site's authoritative server sees it
    Dns {
        #[command(subcommand)]
        command: DnsCommand,
    },
    /// Print a shell completion script, e.g. `orch completions bash > /etc/bash_completion.d/orch`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (orch.1, orch-push.1, …) into DIR, e.g. for packaging
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate the config; print every problem as FILE:LINE:COL; exit 2 on any
    Check,
}

#[derive(Debug, Subcommand)]
pub enum PlaybookCommand {
    /// Check playbooks (NAME, else every one a site names and every file in
    /// <config dir>/playbooks/): every problem as FILE:LINE:COL; exit 2 on any
    Check { name: Option<String> },
    /// Run a playbook for a site now, step by step (peer steps over SSH); exit 1 if a
    /// step fails
    Run {
        name: String,
        #[arg(long, value_name = "SITE")]
        site: String,
        /// Print every step with its variables filled in; run nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SshCommand {
    /// Create this node's SSH key for peer steps (never replacing one) and print the
    /// `authorized_keys` line for the peer and this host's key for the peer to pin
    Setup {
        /// This host's sshd public host key
        #[arg(
            long,
            value_name = "FILE",
            default_value = "/etc/ssh/ssh_host_ed25519_key.pub"
        )]
        host_key: std::path::PathBuf,
    },
    /// The forced command of the peer's SSH key: runs one step of a playbook this node's
    /// own config names, from this node's own copy (reads SSH_ORIGINAL_COMMAND)
    Serve,
}

#[derive(Debug, Subcommand)]
pub enum DnsCommand {
    /// What each of the site's records and its `_orch` TXT record hold at the authoritative server
    Show {
        site: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Make the site's standby database the writable primary (PostgreSQL pg_promote;
    /// MariaDB/MySQL: apply the relay log, stop and reset the replica, read_only=OFF)
    Promote {
        site: String,
        database: String,
        /// The node whose database to promote [default: the site's standby]
        #[arg(long, value_name = "NODE")]
        on: Option<String>,
        /// How long to wait for it
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Stop writes on the site's master database (read_only=ON; PostgreSQL:
    /// default_transaction_read_only=on)
    Demote {
        site: String,
        database: String,
        /// The node whose database to demote [default: the site's master]
        #[arg(long, value_name = "NODE")]
        on: Option<String>,
    },
    /// Print the master's replication position (a WAL LSN, or a GTID position)
    Position {
        site: String,
        database: String,
        /// The node to ask [default: the site's master]
        #[arg(long, value_name = "NODE")]
        on: Option<String>,
    },
    /// Make this node's database follow the peer's (run by the rejoin playbooks, with
    /// the server stopped for PostgreSQL): PostgreSQL keeps the data directory aside,
    /// pg_rewind's it when it diverged and writes standby.signal + primary_conninfo;
    /// MariaDB/MySQL refuses transactions the peer lacks, then CHANGE MASTER by GTID
    Rejoin {
        site: String,
        database: String,
        /// How long the whole rejoin may take
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Wait until the standby has applied everything up to POSITION
    Wait {
        site: String,
        database: String,
        position: String,
        /// The node to wait on [default: the site's standby]
        #[arg(long, value_name = "NODE")]
        on: Option<String>,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

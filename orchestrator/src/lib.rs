//! orch: two self-hosters back each other up. This crate is the `orch` binary's library:
//! the cluster logic built on the `agent` crate's parts; `main.rs` only parses arguments
//! and prints the outcome.
//!
//! # Layout
//!
//! Each top-level module is one concept; the arrows are the only allowed imports (a module
//! may use anything to its right, never to its left), so there are no cycles:
//!
//! ```text
//! cli → daemon → playbook → api → databases → {cluster, dns, mail, notify, report}
//!     → config → {units, logging}
//! ```
//!
//! and from any of them to the other crates, `agent` → `tunnel`, never back.
//!
//! - [`cli`]: the command line: arguments, one file per group of commands; talks to the
//!   running agent over the control socket ([`api`]) or reads config and state itself.
//! - [`daemon`]: `orch agent`: the tasks that run on a node (control socket, peer RPC,
//!   pushes and their receiver, DB checks, reports, alerts, DDNS, mail outbox, failover
//!   and the old master's recovery) and the one owner of every site's role
//!   (`daemon::roles`). The only module that runs tasks.
//! - [`playbook`]: the playbook runner: steps in order with timeouts, variables filled
//!   in, peer steps over SSH into the peer's forced command (`orch ssh serve`).
//! - [`databases`]: the config's databases as `agent::db` targets and endpoints.
//! - [`cluster`]: pure decisions about the pair: site roles and their first-start rule,
//!   whether the tunnel and the peer's agent count as up, the failover state machine,
//!   the DNS lock record, the master's recovery decision. No I/O.
//! - [`report`]: the nightly report, judged and rendered (text and HTML). No I/O.
//! - [`notify`]: alert webhooks (ntfy, gotify, JSON). [`mail`]: composing, queueing and
//!   sending mail (lettre), with hand-off to the peer's agent.
//! - [`dns`]: DNS providers with compare-and-swap, and reads at the authoritative servers.
//! - [`config`]: the config model, its validation (`FILE:LINE:COL`) and the playbook format.
//! - [`api`]: the control socket's requests and answers (`orch status --json`).
//! - [`units`]: figures for people (bytes, durations). [`logging`]: the tracing set-up.
//!
//! `tests/e2e/layout.rs` checks these directions (and that no crate's modules import each
//! other in a circle).

pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod databases;
pub mod dns;
pub mod logging;
pub mod mail;
pub mod notify;
pub mod playbook;
pub mod report;
pub mod units;

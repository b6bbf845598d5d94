//! The end-to-end suite: the real `orch` binary, real files, real processes, and lab
//! hosts in network namespaces. One test binary; each test has its own folder.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// The lab harness drives real processes from plain threads: its deadlines are real
// time, not tokio's pausable clock (clippy.toml).
#![allow(clippy::disallowed_types)]

mod agent;
mod config;
mod db;
mod dns;
mod dns_http;
mod failover;
mod lab;
mod layout;
mod mail;
mod playbook;
mod push;
mod recovery;
mod report;
mod switchover;
mod tunnel;

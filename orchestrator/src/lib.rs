//! orch: two self-hosters back each other up. This crate holds the cluster logic (the
//! config model, and the commands built on the agent's parts); `main.rs` only parses
//! arguments and prints the outcome.

pub mod alerts;
pub mod api;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod dbcheck;
pub mod ddns;
pub mod dns;
pub mod logging;
pub mod mail;
pub mod peering;
pub mod playbook;
pub mod push;
pub mod report;
pub mod reports;
mod starter;

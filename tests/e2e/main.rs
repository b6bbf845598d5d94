//! The end-to-end suite: the real `orch` binary, real files, real processes, and lab
//! hosts in network namespaces. One test binary; each test has its own folder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod config;
mod db;
mod dns;
mod dns_http;
mod lab;
mod mail;
mod push;
mod report;
mod tunnel;

//! The `orch` binary: parse arguments, set up logging, run the command, print the error
//! chain once and exit with its code.

use clap::Parser as _;
use orchestrator::cli::{self, Cli, Command, Exit};
use orchestrator::config::ConfigError;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Agent) {
        "info"
    } else {
        "warn"
    };
    if let Err(e) = orchestrator::logging::init(cli.log_level.as_deref(), default_level) {
        eprintln!("error: {e}");
        return ExitCode::from(Exit::USAGE);
    }
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit { code, error }) => {
            // Config problems are already lines of FILE:LINE:COL: message.
            if error.downcast_ref::<ConfigError>().is_some() {
                eprintln!("{error}");
            } else {
                eprintln!("error: {error:#}");
            }
            ExitCode::from(code)
        }
    }
}

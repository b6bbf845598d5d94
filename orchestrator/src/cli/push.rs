//! `orch push SITE`: asks the agent and draws its progress.

use super::site::site_named;
use super::{control_failed, runtime, Exit, Result};
use crate::api::Request;
use crate::config::Loaded;
use agent::control;
use agent::control::ControlError;
use anyhow::anyhow;
use std::time::Duration;
pub(super) fn push(
    loaded: &Loaded,
    site: &str,
    job: Option<String>,
    dry_run: bool,
    force: bool,
) -> Result {
    use crate::api::{JobResult, ProgressView, PushOutcome};
    use std::io::IsTerminal as _;
    let site = site_named(&loaded.config, site)?;
    if let Some(j) = &job {
        if !site.sync.iter().any(|s| &s.name == j) {
            return Err(Exit::usage(anyhow!(
                "site {} has no sync job `{j}`",
                site.name
            )));
        }
    }
    let request = Request::Push {
        site: site.name.clone(),
        job,
        dry_run,
        force,
    };
    let socket = loaded.me().state_dir.join(crate::api::SOCKET);
    let rt = runtime()?;
    let bar = std::io::stderr().is_terminal();
    let results: std::result::Result<Vec<JobResult>, ControlError> = rt.block_on(async {
        // A first push of a big tree may take hours: no overall limit.
        let call = control::call(&socket, &request, Duration::from_secs(7 * 24 * 3600));
        tokio::pin!(call);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut drawn = false;
        loop {
            tokio::select! {
                r = &mut call => {
                    if drawn {
                        eprint!("\r\x1b[2K");
                    }
                    return r;
                }
                _ = tick.tick(), if bar => {
                    let p: std::result::Result<Option<ProgressView>, _> =
                        control::call(&socket, &Request::PushProgress, Duration::from_secs(2)).await;
                    if let Ok(Some(p)) = p {
                        let width = 24usize;
                        let filled = (p.steps_done * width as u64)
                            .checked_div(p.steps_total)
                            .unwrap_or(0) as usize;
                        eprint!(
                            "\r\x1b[2K{}/{} [{}{}] {}/{} steps, {} sent, {:.0} s — {}",
                            p.site,
                            p.job,
                            "#".repeat(filled.min(width)),
                            " ".repeat(width - filled.min(width)),
                            p.steps_done,
                            p.steps_total,
                            crate::units::bytes(p.bytes_sent),
                            p.elapsed_ms as f64 / 1000.0,
                            p.phase
                        );
                        drawn = true;
                    }
                }
            }
        }
    });
    let results = results.map_err(|e| control_failed(loaded, e))?;
    let mut failed = 0;
    for r in &results {
        for c in &r.changes {
            println!("{c}");
        }
        println!(
            "{}/{}: {}: {}",
            r.site,
            r.job,
            r.outcome.as_str(),
            r.summary
        );
        if let Some(d) = &r.diverged_dir {
            println!("  diverged data kept in {d}");
        }
        if let Some(run) = &r.run {
            for e in run.errors.iter().take(20) {
                println!("  {e}");
            }
        }
        if matches!(r.outcome, PushOutcome::Fail | PushOutcome::Refused) {
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(Exit::failed(anyhow!(
            "{failed} of {} push job(s) did not complete",
            results.len()
        )));
    }
    Ok(())
}

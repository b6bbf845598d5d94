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
    // Drawn by indicatif on stderr when it is a terminal (to its width, with rate and ETA);
    // nothing is asked or drawn otherwise.
    let drawing = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::with_draw_target(
        None,
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        // The bar keeps its width; the words after it are cut to the terminal's.
        "{prefix} [{bar:24}] {pos}/{len} steps, {elapsed} (ETA {eta}), {wide_msg}",
    ) {
        bar.set_style(style.progress_chars("#>-"));
    }
    let results: std::result::Result<Vec<JobResult>, ControlError> = rt.block_on(async {
        // A first push of a big tree may take hours: no overall limit.
        let call = control::call(&socket, &request, Duration::from_secs(7 * 24 * 3600));
        tokio::pin!(call);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                r = &mut call => return r,
                _ = tick.tick(), if drawing => {
                    let p: std::result::Result<Option<ProgressView>, _> =
                        control::call(&socket, &Request::PushProgress, Duration::from_secs(2)).await;
                    if let Ok(Some(p)) = p {
                        draw(&bar, &p);
                    }
                }
            }
        }
    });
    bar.finish_and_clear();
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

/// One job's progress on the bar: steps as the position, bytes and their rate as words.
fn draw(bar: &indicatif::ProgressBar, p: &crate::api::ProgressView) {
    let seconds = (p.elapsed_ms as f64 / 1000.0).max(0.001);
    bar.set_prefix(format!("{}/{}", p.site, p.job));
    bar.set_length(p.steps_total.max(1));
    bar.set_position(p.steps_done);
    bar.set_message(format!(
        "{} sent, {}/s, {}",
        crate::units::bytes(p.bytes_sent),
        crate::units::bytes((p.bytes_sent as f64 / seconds) as u64),
        p.phase
    ));
}

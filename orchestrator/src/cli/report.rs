//! `orch report SITE [--send|--html]`.

use super::site::site_named;
use super::{call_within, Exit, Result};
use crate::api::Request;
use crate::config::Loaded;
use anyhow::anyhow;
use std::time::Duration;
pub(super) fn report(loaded: &Loaded, site: &str, send: bool, html: bool) -> Result {
    use crate::api::{Delivery, Made};
    #[derive(serde::Deserialize)]
    struct Answer {
        made: Made,
        delivery: Option<Delivery>,
    }
    let site = site_named(&loaded.config, site)?;
    if send {
        eprintln!("Gathering and sending the report of {}…", site.name);
    }
    let request = Request::Report {
        site: site.name.clone(),
        send,
    };
    // Gathering (DNS, the peer) and one delivery attempt, each bounded by the agent.
    let answer: Answer = call_within(loaded, &request, Duration::from_secs(150))?;
    let r = &answer.made.report;
    if !send {
        if html {
            print!("{}", r.html);
        } else {
            println!("Subject: {}\n\n{}", r.subject, r.text);
        }
        return Ok(());
    }
    match answer.delivery {
        Some(Delivery::Sent) => {
            println!("sent: {}", r.subject);
            Ok(())
        }
        Some(Delivery::HandedOff) => {
            println!(
                "handed to {}'s agent, which sends it: {}",
                loaded.peer().name,
                r.subject
            );
            Ok(())
        }
        Some(Delivery::Pending(error)) => Err(Exit::failed(anyhow!(
            "the report is not delivered yet: {error}\nIt stays in the outbox of {} and is \
             retried with backoff (after {} it is handed to {}'s agent); fix [mail] if the \
             error says how.",
            loaded.me,
            humantime::format_duration(loaded.config.mail.hand_off_after),
            loaded.peer().name
        ))),
        None => Err(Exit::failed(anyhow!("the agent did not queue the report"))),
    }
}

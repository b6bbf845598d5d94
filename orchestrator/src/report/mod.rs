//! The nightly replication report of one site: [`Facts`] gathered by the agent (push runs,
//! database checks, the tunnel, DNS at the authoritative servers, free space on the
//! standby) are judged into findings and an OK / WARN / FAIL status, then rendered as
//! plain text and as HTML. Judging and rendering are pure, so golden files pin them.

use crate::units::{bytes, duration_ms};
use agent::db::{self, Verdict};
use agent::state::{Outcome, PushRun};
use chrono::{DateTime, FixedOffset};
use maud::{html, Markup, DOCTYPE};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Free space below this share of the file system is a warning, below half of it a failure.
const LOW_SPACE: f64 = 0.10;

/// Everything a report says, as gathered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    pub site: String,
    pub cluster: String,
    /// The node that wrote the report.
    pub node: String,
    pub master: String,
    pub standby: String,
    pub epoch: i64,
    /// Unix milliseconds.
    pub generated_at: i64,
    /// The offset of local time at `generated_at`, in seconds east of UTC.
    pub utc_offset_secs: i32,
    /// The site's sync jobs, by name.
    pub jobs: Vec<String>,
    /// The latest run of each job that has run.
    pub pushes: Vec<PushRun>,
    pub databases: Vec<db::Report>,
    pub tunnel: Tunnel,
    pub dns: Dns,
    /// Free space where the standby keeps each job's copy.
    pub space: Result<Vec<Space>, String>,
    /// What stops an automatic failover now, from the failover logic's own guards (the
    /// standby's data, disarmed until `orch ack`).
    #[serde(default)]
    pub failover_blockers: Vec<String>,
    /// Every push of the site in the last 14 days (the report's chart).
    #[serde(default)]
    pub recent: Vec<PushRun>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunnel {
    pub peer: String,
    pub up: bool,
    /// Whether the peer's agent answered over the tunnel lately.
    pub peer_agent: bool,
    pub endpoint: Option<String>,
    pub last_handshake_secs: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dns {
    /// The site has no DNS provider.
    NotConfigured,
    /// What the authoritative servers serve.
    Records(Vec<DnsRecord>),
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    pub name: String,
    /// "A", "AAAA" or "TXT".
    pub kind: String,
    pub values: Vec<String>,
}

/// Free space of the file system holding one job's copy on the standby.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    pub job: String,
    pub node: String,
    pub path: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// Which part of the report a finding belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    Pushes,
    Databases,
    Tunnel,
    Dns,
    Space,
}

/// Something not right, and how bad.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub section: Section,
    pub status: Status,
    pub text: String,
}

/// A judged, rendered report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rendered {
    pub status: Status,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub findings: Vec<Finding>,
}

/// What is not right, section by section.
pub fn judge(f: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |section, status, text: String| {
        out.push(Finding {
            section,
            status,
            text,
        })
    };
    for job in &f.jobs {
        match f.pushes.iter().find(|p| &p.job == job) {
            None => add(
                Section::Pushes,
                Status::Warn,
                format!("push job {job} has not run yet"),
            ),
            Some(p) if p.outcome == Outcome::Fail => add(
                Section::Pushes,
                Status::Fail,
                format!("push job {job} failed: {}", first_error(&p.errors)),
            ),
            Some(p) if p.outcome == Outcome::Warn || !p.errors.is_empty() => add(
                Section::Pushes,
                Status::Warn,
                format!(
                    "push job {job} finished with {} error{}: {}",
                    p.errors.len(),
                    plural(p.errors.len() as u64),
                    first_error(&p.errors)
                ),
            ),
            Some(_) => {}
        }
    }
    for d in &f.databases {
        let status = match d.verdict {
            Verdict::Healthy => continue,
            Verdict::Lagging => Status::Warn,
            Verdict::Broken => Status::Fail,
        };
        add(
            Section::Databases,
            status,
            format!(
                "database {} is {}: {}",
                d.name,
                d.verdict.as_str(),
                d.problems.join("; ")
            ),
        );
    }
    if !f.tunnel.up {
        add(
            Section::Tunnel,
            Status::Fail,
            format!("the tunnel to {} is down", f.tunnel.peer),
        );
    } else if !f.tunnel.peer_agent {
        add(
            Section::Tunnel,
            Status::Warn,
            format!("the agent on {} does not answer", f.tunnel.peer),
        );
    }
    match &f.dns {
        Dns::NotConfigured => {}
        Dns::Error(e) => add(
            Section::Dns,
            Status::Warn,
            format!("DNS could not be read: {e}"),
        ),
        Dns::Records(records) => {
            for r in records {
                if r.kind == "TXT" {
                    if let Some(named) = r.values.iter().find_map(|v| txt_master(v)) {
                        if named != f.master {
                            add(
                                Section::Dns,
                                Status::Fail,
                                format!(
                                    "{} names {named} as master, but {} is master here",
                                    r.name, f.master
                                ),
                            );
                        }
                    }
                }
            }
            if records
                .iter()
                .all(|r| r.kind == "TXT" || r.values.is_empty())
            {
                add(
                    Section::Dns,
                    Status::Warn,
                    "none of the site's records has an address".into(),
                );
            }
        }
    }
    match &f.space {
        Err(e) => {
            if !f.jobs.is_empty() {
                add(
                    Section::Space,
                    Status::Warn,
                    format!("free space on {} unknown: {e}", f.standby),
                );
            }
        }
        Ok(spaces) => {
            for s in spaces {
                let share = share(s.free_bytes, s.total_bytes);
                let status = if share < LOW_SPACE / 2.0 {
                    Status::Fail
                } else if share < LOW_SPACE {
                    Status::Warn
                } else {
                    continue;
                };
                add(
                    Section::Space,
                    status,
                    format!(
                        "only {} free ({:.0}%) under {} on {}",
                        bytes(s.free_bytes),
                        share * 100.0,
                        s.path,
                        s.node
                    ),
                );
            }
        }
    }
    out
}

/// `master=NODE` out of an `_orch` TXT value.
fn txt_master(value: &str) -> Option<&str> {
    value
        .split_whitespace()
        .find_map(|w| w.strip_prefix("master="))
}

fn first_error(errors: &[String]) -> &str {
    errors.first().map_or("no reason recorded", String::as_str)
}

fn share(free: u64, total: u64) -> f64 {
    if total == 0 {
        1.0
    } else {
        free as f64 / total as f64
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The figures of a database check as short phrases ("lag 0 bytes", "IO thread Yes, …").
pub fn db_figures(r: &db::Report) -> Vec<String> {
    let f = &r.figures;
    let mut out = Vec::new();
    if let Some(s) = &f.wal_receiver {
        out.push(format!("wal receiver {s}"));
    }
    if let Some(b) = f.lag_bytes {
        out.push(format!("lag {b} bytes"));
    }
    if let Some(s) = f.replay_lag_seconds {
        out.push(format!("replay lag {s:.1} s"));
    }
    if f.replay_paused == Some(true) {
        out.push("replay PAUSED".into());
    }
    for slot in &f.slots {
        out.push(format!(
            "slot {} {}",
            slot.name,
            slot.wal_status.as_deref().unwrap_or("-")
        ));
    }
    if let (Some(io), Some(sql)) = (&f.io_running, &f.sql_running) {
        out.push(format!("IO thread {io}, SQL thread {sql}"));
    }
    if f.replica_configured.is_some() {
        out.push(match f.seconds_behind {
            Some(s) => format!("{s} s behind"),
            None => "seconds behind NULL".into(),
        });
    }
    if let Some(ms) = f.heartbeat_age_ms {
        out.push(format!("heartbeat {:.1} s old", ms as f64 / 1000.0));
    }
    out
}

fn engine_name(e: db::Engine) -> &'static str {
    match e {
        db::Engine::Postgres => "postgres",
        db::Engine::Mysql => "mysql",
    }
}

/// The worst status among `findings` (OK when there are none).
pub fn status_of(findings: &[Finding]) -> Status {
    findings
        .iter()
        .map(|f| f.status)
        .max()
        .unwrap_or(Status::Ok)
}

/// The failover readiness verdict: can the standby take over now, and if not, why.
pub fn readiness(f: &Facts, findings: &[Finding]) -> (bool, String) {
    let never: Vec<String> = f
        .jobs
        .iter()
        .filter(|j| !f.pushes.iter().any(|p| &p.job == *j))
        .map(|j| format!("{} holds no copy of {j} yet", f.standby))
        .collect();
    let blockers: Vec<&str> = never
        .iter()
        .chain(&f.failover_blockers)
        .map(String::as_str)
        .chain(
            findings
                .iter()
                .filter(|x| x.status == Status::Fail && x.section != Section::Dns)
                .map(|x| x.text.as_str()),
        )
        .collect();
    if blockers.is_empty() {
        let mut reasons = Vec::new();
        if !f.pushes.is_empty() {
            reasons.push(format!("{} holds the last push", f.standby));
        }
        if !f.databases.is_empty() {
            reasons.push("databases replicate".to_owned());
        }
        reasons.push("the tunnel is up".to_owned());
        (
            true,
            format!(
                "READY: {} can take over ({})",
                f.standby,
                reasons.join(", ")
            ),
        )
    } else {
        (false, format!("NOT READY: {}", blockers.join("; ")))
    }
}

/// The subject line: `[orch] SITE nightly replication: STATUS — N files, X MB in T s`.
pub fn subject(f: &Facts, status: Status) -> String {
    let tail = if f.pushes.is_empty() {
        if f.jobs.is_empty() {
            "no sync jobs".to_owned()
        } else {
            "no push has run yet".to_owned()
        }
    } else {
        let files: i64 = f.pushes.iter().map(|p| p.files_changed).sum();
        let sent: i64 = f.pushes.iter().map(|p| p.bytes_sent).sum();
        let ms: i64 = f.pushes.iter().map(|p| p.duration_ms).sum();
        format!(
            "{files} file{}, {:.1} MB in {} s",
            plural(files as u64),
            sent as f64 / 1e6,
            (ms + 500) / 1000
        )
    };
    format!(
        "[orch] {} nightly replication: {} \u{2014} {tail}",
        f.site,
        status.as_str()
    )
}

fn local(f: &Facts, at: i64) -> String {
    const FORMAT: &str = "%Y-%m-%d %H:%M %:z";
    match (
        DateTime::from_timestamp_millis(at),
        FixedOffset::east_opt(f.utc_offset_secs),
    ) {
        (Some(t), Some(offset)) => t.with_timezone(&offset).format(FORMAT).to_string(),
        (Some(t), None) => t.format(FORMAT).to_string(),
        (None, _) => "?".into(),
    }
}

fn ago(f: &Facts, at: i64) -> String {
    format!("{} ago", duration_ms(f.generated_at - at))
}

/// One row per push job: what its latest run did.
fn push_rows(f: &Facts) -> Vec<[String; 7]> {
    f.jobs
        .iter()
        .map(|job| match f.pushes.iter().find(|p| &p.job == job) {
            None => [
                job.clone(),
                "never run".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ],
            Some(p) => [
                job.clone(),
                format!(
                    "{} {} ({})",
                    p.outcome.as_str().to_uppercase(),
                    local(f, p.started_at),
                    ago(f, p.started_at)
                ),
                format!("{} / {}", p.files_changed, p.files_total),
                format!(
                    "{} / {}",
                    bytes(p.bytes_sent.max(0) as u64),
                    bytes(p.bytes_total.max(0) as u64)
                ),
                duration_ms(p.duration_ms),
                p.deletions.to_string(),
                p.diverged.to_string(),
            ],
        })
        .collect()
}

const PUSH_HEADER: [&str; 7] = [
    "job",
    "last run",
    "files changed / total",
    "sent / total",
    "took",
    "deleted",
    "diverged kept",
];

/// Renders the report.
pub fn render(f: &Facts) -> Rendered {
    let findings = judge(f);
    let status = status_of(&findings);
    let subject = subject(f, status);
    let text = render_text(f, status, &findings);
    let html = render_html(f, status, &subject, &findings);
    Rendered {
        status,
        subject,
        text,
        html,
        findings,
    }
}

fn render_text(f: &Facts, status: Status, findings: &[Finding]) -> String {
    let mut t = String::new();
    let (_, ready) = readiness(f, findings);
    let _ = writeln!(
        t,
        "Site {} (cluster {}): {}\nMaster {}, standby {}, epoch {}. Written by {} at {}.\n",
        f.site,
        f.cluster,
        status.as_str(),
        f.master,
        f.standby,
        f.epoch,
        f.node,
        local(f, f.generated_at)
    );
    let _ = writeln!(t, "Failover readiness: {ready}");
    if !findings.is_empty() {
        let _ = writeln!(t, "\nNeeds attention:");
        for x in findings {
            let _ = writeln!(t, "  {} {}", x.status.as_str(), x.text);
        }
    }

    let _ = writeln!(t, "\nPUSHES");
    if f.jobs.is_empty() {
        let _ = writeln!(t, "  no sync jobs configured");
    } else {
        let rows = push_rows(f);
        table(&mut t, &PUSH_HEADER, &rows);
        for p in &f.pushes {
            for e in &p.errors {
                let _ = writeln!(t, "  ! {}: {e}", p.job);
            }
        }
    }

    let _ = writeln!(t, "\nDATABASES");
    if f.databases.is_empty() {
        let _ = writeln!(t, "  no databases configured");
    }
    for d in &f.databases {
        let _ = writeln!(
            t,
            "  {} ({}): {}, checked {}",
            d.name,
            engine_name(d.engine),
            d.verdict.as_str().to_uppercase(),
            ago(f, d.checked_at)
        );
        let figures = db_figures(d);
        if !figures.is_empty() {
            let _ = writeln!(t, "    {}", figures.join(", "));
        }
        for side in [&d.master, &d.standby] {
            if let Some(e) = &side.error {
                let _ = writeln!(t, "    {}: {e}", side.node);
            }
        }
        for p in &d.problems {
            let _ = writeln!(t, "    ! {p}");
        }
    }

    let _ = writeln!(t, "\nTUNNEL");
    for line in tunnel_lines(f) {
        let _ = writeln!(t, "  {line}");
    }

    let _ = writeln!(t, "\nDNS");
    match &f.dns {
        Dns::NotConfigured => {
            let _ = writeln!(t, "  not configured for this site");
        }
        Dns::Error(e) => {
            let _ = writeln!(t, "  could not be read: {e}");
        }
        Dns::Records(records) => {
            let rows: Vec<[String; 3]> = records
                .iter()
                .map(|r| [r.name.clone(), r.kind.clone(), dns_values(r)])
                .collect();
            table(
                &mut t,
                &["name", "type", "at the authoritative servers"],
                &rows,
            );
        }
    }

    let _ = writeln!(t, "\nFREE SPACE ON {}", f.standby.to_uppercase());
    match &f.space {
        Err(e) => {
            let _ = writeln!(t, "  unknown: {e}");
        }
        Ok(spaces) if spaces.is_empty() => {
            let _ = writeln!(t, "  no sync targets");
        }
        Ok(spaces) => {
            let rows: Vec<[String; 4]> = spaces.iter().map(space_row).collect();
            table(&mut t, &["job", "path", "free", "of"], &rows);
        }
    }
    t
}

fn space_row(s: &Space) -> [String; 4] {
    [
        s.job.clone(),
        s.path.clone(),
        format!(
            "{} ({:.0}%)",
            bytes(s.free_bytes),
            share(s.free_bytes, s.total_bytes) * 100.0
        ),
        bytes(s.total_bytes),
    ]
}

fn dns_values(r: &DnsRecord) -> String {
    if r.values.is_empty() {
        "(none)".into()
    } else {
        r.values.join(", ")
    }
}

fn tunnel_lines(f: &Facts) -> Vec<String> {
    let t = &f.tunnel;
    let mut out = vec![format!(
        "to {}: {}{}",
        t.peer,
        if t.up { "up" } else { "DOWN" },
        if t.up && !t.peer_agent {
            ", but its agent does not answer"
        } else {
            ""
        }
    )];
    out.push(format!(
        "endpoint {}, last handshake {}",
        t.endpoint.as_deref().unwrap_or("unknown"),
        t.last_handshake_secs.map_or("never".into(), |s| format!(
            "{} ago",
            duration_ms(s as i64 * 1000)
        ))
    ));
    out.push(format!(
        "traffic since the agent started: {} received, {} sent",
        bytes(t.rx_bytes),
        bytes(t.tx_bytes)
    ));
    out
}

/// A left-aligned text table, two spaces in, two between columns.
fn table<const N: usize>(out: &mut String, header: &[&str; N], rows: &[[String; N]]) {
    let mut width = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from("  ");
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:w$}  ");
            }
        }
        s.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}

fn colour(status: Status) -> &'static str {
    match status {
        Status::Ok => "#1a7f37",
        Status::Warn => "#9a6700",
        Status::Fail => "#cf222e",
    }
}

const TABLE: &str = "border-collapse:collapse;margin:4px 0 12px 0;font-size:14px";
const TH: &str = "text-align:left;padding:4px 10px;border-bottom:2px solid #d0d7de;color:#57606a;font-weight:600";
const TD: &str = "padding:4px 10px;border-bottom:1px solid #eaeef2;vertical-align:top";

fn html_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> Markup {
    html! {
        table style=(TABLE) {
            tr { @for h in header { th style=(TH) { (h) } } }
            @for row in rows {
                tr {
                    @for cell in row {
                        // Short cells (figures, sizes, times) stay on one line.
                        @let nowrap = if cell.chars().count() <= 24 { ";white-space:nowrap" } else { "" };
                        td style={ (TD) (nowrap) } { (cell) }
                    }
                }
            }
        }
        "\n"
    }
}

fn html_section(title: &str, status: Option<Status>) -> Markup {
    html! {
        h2 style="font-size:16px;margin:18px 0 4px 0" {
            (title)
            @if let Some(s) = status {
                " " span style={ "color:" (colour(s)) ";font-size:13px" } { (s.as_str()) }
            }
        }
        "\n"
    }
}

fn section_status(findings: &[Finding], section: Section) -> Status {
    status_of(
        &findings
            .iter()
            .filter(|f| f.section == section)
            .cloned()
            .collect::<Vec<_>>(),
    )
}

fn html_p(text: &str) -> Markup {
    html! { p style="margin:4px 0" { (text) } "\n" }
}

/// How many days the report's chart shows.
pub const CHART_DAYS: usize = 14;

/// One local day of the site's pushes (every job), for the chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Day {
    /// Month and day, `12-01`.
    pub date: String,
    pub pushes: u32,
    pub duration_ms: i64,
    pub bytes_sent: i64,
    /// A push that day did not end ok.
    pub failed: bool,
}

/// The last [`CHART_DAYS`] local days up to the report's, oldest first, from `recent`.
pub fn days(f: &Facts) -> Vec<Day> {
    let Some(offset) = FixedOffset::east_opt(f.utc_offset_secs) else {
        return Vec::new();
    };
    let date = |ms: i64| {
        DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&offset).date_naive())
    };
    let Some(today) = date(f.generated_at) else {
        return Vec::new();
    };
    (0..CHART_DAYS as u64)
        .rev()
        .filter_map(|back| today.checked_sub_days(chrono::Days::new(back)))
        .map(|d| {
            let mut day = Day {
                date: d.format("%m-%d").to_string(),
                ..Day::default()
            };
            for p in f.recent.iter().filter(|p| date(p.started_at) == Some(d)) {
                day.pushes += 1;
                day.duration_ms += p.duration_ms.max(0);
                day.bytes_sent += p.bytes_sent.max(0);
                day.failed |= !matches!(p.outcome, Outcome::Ok | Outcome::Info);
            }
            day
        })
        .collect()
}

/// One chart: its title, bar colour, the day's figure and how to show one.
type ChartRow = (
    &'static str,
    &'static str,
    fn(&Day) -> i64,
    fn(i64) -> String,
);

/// Two small bar charts of the last 14 days, push time and bytes sent per day, as inline
/// SVG (no external assets; a failed day's bars are red; each bar's figures in its
/// tooltip).
fn chart(days: &[Day]) -> Markup {
    const BAR: usize = 22;
    const STEP: usize = 34;
    const HIGH: f64 = 56.0;
    let width = STEP * days.len().max(1);
    let rows: [ChartRow; 2] = [
        (
            "push time per day",
            "#0969da",
            |d| d.duration_ms,
            duration_ms,
        ),
        (
            "sent per day",
            "#8250df",
            |d| d.bytes_sent,
            |b| bytes(b.max(0) as u64),
        ),
    ];
    html! {
        @for (title, fill, value, show) in rows {
            @let max = days.iter().map(value).max().unwrap_or(0).max(1);
            p style="margin:6px 0 0 0;font-size:13px;color:#57606a" {
                (title) " (most: " (show(max)) ")"
            }
            svg xmlns="http://www.w3.org/2000/svg" width=(width) height="74" viewBox={ "0 0 " (width) " 74" } role="img" aria-label=(title) {
                line x1="0" y1="57" x2=(width) y2="57" stroke="#d0d7de" stroke-width="1" {}
                @for (i, d) in days.iter().enumerate() {
                    @let h = (value(d) as f64 / max as f64 * HIGH).round().max(if value(d) > 0 { 1.0 } else { 0.0 });
                    @let colour = if d.failed { "#cf222e" } else { fill };
                    rect x=(i * STEP + (STEP - BAR) / 2) y=(56.0 - h + 1.0) width=(BAR) height=(h) fill=(colour) {
                        title { (d.date) ": " (d.pushes) " push(es), " (duration_ms(d.duration_ms)) ", " (bytes(d.bytes_sent.max(0) as u64)) " sent" @if d.failed { ", one failed" } }
                    }
                    text x=(i * STEP + STEP / 2) y="70" font-size="10" text-anchor="middle" fill="#57606a" font-family="Helvetica,Arial,sans-serif" { (&d.date[3..]) }
                }
            }
            "\n"
        }
    }
}

fn render_html(f: &Facts, status: Status, subject: &str, findings: &[Finding]) -> String {
    let (ready, readiness) = readiness(f, findings);
    let days = days(f);
    let page = html! {
        (DOCTYPE) "\n"
        html lang="en" {
            head { meta charset="utf-8"; title { (subject) } } "\n"
            body style="font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1f2328;max-width:760px;margin:16px" {
                "\n"
                h1 style="font-size:20px;margin:0 0 4px 0" {
                    (f.site) " "
                    span style={ "background:" (colour(status)) ";color:#fff;border-radius:4px;padding:1px 8px;font-size:15px" } { (status.as_str()) }
                }
                "\n"
                (html_p(&format!(
                    "Cluster {}: master {}, standby {}, epoch {}. Written by {} at {}.",
                    f.cluster, f.master, f.standby, f.epoch, f.node, local(f, f.generated_at)
                )))
                p style={ "margin:10px 0;padding:8px 12px;border-left:4px solid " (colour(if ready { Status::Ok } else { Status::Fail })) ";background:#f6f8fa" } {
                    b { "Failover readiness:" } " " (readiness)
                }
                "\n"
                @if !findings.is_empty() {
                    ul style="margin:4px 0 8px 0;padding-left:20px" {
                        @for x in findings {
                            "\n" li { b style={ "color:" (colour(x.status)) } { (x.status.as_str()) } " " (x.text) }
                        }
                        "\n"
                    }
                    "\n"
                }

                (html_section("Pushes", Some(section_status(findings, Section::Pushes))))
                @if f.jobs.is_empty() {
                    (html_p("No sync jobs configured."))
                } @else {
                    (html_table(&PUSH_HEADER, &push_rows(f)))
                    @for p in &f.pushes {
                        @for e in &p.errors { (html_p(&format!("{}: {e}", p.job))) }
                    }
                    (chart(&days))
                }

                (html_section("Databases", Some(section_status(findings, Section::Databases))))
                @if f.databases.is_empty() {
                    (html_p("No databases configured."))
                } @else {
                    (html_table(&["database", "state", "figures", "problems"], &database_rows(f)))
                }

                (html_section("Tunnel", Some(section_status(findings, Section::Tunnel))))
                @for line in tunnel_lines(f) { (html_p(&line)) }

                (html_section("DNS", Some(section_status(findings, Section::Dns))))
                @match &f.dns {
                    Dns::NotConfigured => (html_p("Not configured for this site.")),
                    Dns::Error(e) => (html_p(&format!("Could not be read: {e}"))),
                    Dns::Records(records) => {
                        @let rows: Vec<[String; 3]> = records.iter().map(|r| [r.name.clone(), r.kind.clone(), dns_values(r)]).collect();
                        (html_table(&["name", "type", "at the authoritative servers"], &rows))
                    }
                }

                (html_section(&format!("Free space on {}", f.standby), Some(section_status(findings, Section::Space))))
                @match &f.space {
                    Err(e) => (html_p(&format!("Unknown: {e}"))),
                    Ok(spaces) if spaces.is_empty() => (html_p("No sync targets.")),
                    Ok(spaces) => {
                        @let rows: Vec<[String; 4]> = spaces.iter().map(space_row).collect();
                        (html_table(&["job", "path", "free", "of"], &rows))
                    }
                }
            }
        }
    };
    let mut out = page.into_string();
    out.push('\n');
    out
}

fn database_rows(f: &Facts) -> Vec<[String; 4]> {
    f.databases
        .iter()
        .map(|d| {
            let mut notes: Vec<String> = [&d.master, &d.standby]
                .iter()
                .filter_map(|s| s.error.as_ref().map(|e| format!("{}: {e}", s.node)))
                .collect();
            notes.extend(d.problems.iter().cloned());
            [
                format!("{} ({})", d.name, engine_name(d.engine)),
                format!(
                    "{}, checked {}",
                    d.verdict.as_str().to_uppercase(),
                    ago(f, d.checked_at)
                ),
                db_figures(d).join(", "),
                notes.join("; "),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests;

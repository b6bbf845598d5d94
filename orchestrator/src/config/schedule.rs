//! Cron schedules as crontab users write them (5 fields, or 6 with seconds first), and
//! humantime durations.

use std::str::FromStr;
use std::time::Duration;

/// A checked cron schedule. Weekdays follow crontab: 0 and 7 are Sunday, 1 is Monday.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    pub text: String,
    pub schedule: cron::Schedule,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl CronSchedule {
    /// The first time after `now` the schedule fires, in local time.
    pub fn next_after(
        &self,
        now: &chrono::DateTime<chrono::Local>,
    ) -> Option<chrono::DateTime<chrono::Local>> {
        self.schedule.after(now).next()
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let mut full: Vec<String> = match fields.len() {
            5 => std::iter::once("0")
                .chain(fields.iter().copied())
                .map(str::to_owned)
                .collect(),
            6 => fields.iter().map(|f| (*f).to_owned()).collect(),
            n => {
                return Err(format!(
                    "`{text}` has {n} fields; a schedule has 5 (minute hour day-of-month month \
                     day-of-week), e.g. \"30 4 * * *\", or 6 with seconds first"
                ))
            }
        };
        // The `cron` crate counts weekdays 1 = Sunday .. 7 = Saturday; crontab counts
        // 0 = Sunday, 1 = Monday .. 7 = Sunday. Translate so "1" still means Monday.
        full[5] = crontab_weekdays(&full[5]).map_err(|e| format!("`{text}`: {e}"))?;
        let schedule = cron::Schedule::from_str(&full.join(" ")).map_err(|e| {
            // The crate's message quotes the expanded expression with a caret; its last
            // line is the reason, which is what the user needs.
            let e = e.to_string();
            let reason = e
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid");
            format!("`{text}` is not a cron schedule: {}", reason.trim())
        })?;
        Ok(Self {
            text: text.to_owned(),
            schedule,
        })
    }
}

fn crontab_weekdays(field: &str) -> Result<String, String> {
    let day = |s: &str| -> Result<Option<u8>, String> {
        match s.parse::<u8>() {
            Ok(n @ 0..=7) => Ok(Some(if n == 0 || n == 7 { 1 } else { n + 1 })),
            Ok(n) => Err(format!(
                "day of week {n} is out of range (0-7, 0 and 7 are Sunday)"
            )),
            Err(_) => Ok(None), // a name such as MON, or `*`: the crate reads those as crontab does
        }
    };
    let mut out = Vec::new();
    for part in field.split(',') {
        let (base, step) = match part.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (part, None),
        };
        let translated = match base.split_once('-') {
            Some((a, b)) => match (day(a)?, day(b)?, b == "7") {
                // "5-7" (Friday to Sunday) would wrap around; split it.
                (Some(a), Some(_), true) if step.is_none() => format!("{a}-7,1"),
                (Some(_), Some(_), true) => {
                    return Err(
                        "write a stepped range ending in Sunday as 0-6 or with names".into(),
                    )
                }
                (Some(a), Some(b), false) => format!("{a}-{b}"),
                _ => base.to_owned(),
            },
            None => match day(base)? {
                Some(d) => d.to_string(),
                None => base.to_owned(),
            },
        };
        out.push(match step {
            Some(s) => format!("{translated}/{s}"),
            None => translated,
        });
    }
    Ok(out.join(","))
}

/// Parses "15s", "5m", "1h 30m".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write it like \"90s\", \"5m\" or \"1h 30m\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Utc, Weekday};

    fn next_weekdays(expr: &str, n: usize) -> Vec<Weekday> {
        let s = CronSchedule::parse(expr).unwrap();
        let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(); // a Sunday
        s.schedule
            .after(&start)
            .take(n)
            .map(|t| t.weekday())
            .collect()
    }

    #[test]
    fn weekdays_mean_what_they_mean_in_crontab() {
        assert_eq!(next_weekdays("0 3 * * 1", 1), [Weekday::Mon]);
        assert_eq!(next_weekdays("0 3 * * 0", 1), [Weekday::Sun]);
        assert_eq!(next_weekdays("0 3 * * 7", 1), [Weekday::Sun]);
        assert_eq!(
            next_weekdays("0 3 * * 1-5", 5),
            [
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri
            ]
        );
        assert_eq!(
            next_weekdays("0 3 * * 5-7", 3),
            [Weekday::Sun, Weekday::Fri, Weekday::Sat]
        );
        assert_eq!(next_weekdays("0 3 * * MON", 1), [Weekday::Mon]);
        assert_eq!(next_weekdays("0 0 3 * * 6", 1), [Weekday::Sat]);
    }

    #[test]
    fn five_and_six_fields_parse_others_do_not() {
        assert!(CronSchedule::parse("30 4 * * *").is_ok());
        assert!(CronSchedule::parse("*/10 * * * * *").is_ok());
        let e = CronSchedule::parse("* * *").unwrap_err();
        assert!(e.contains("has 3 fields"), "{e}");
        let e = CronSchedule::parse("61 * * * *").unwrap_err();
        assert!(e.contains("not a cron schedule"), "{e}");
        let e = CronSchedule::parse("0 0 * * 9").unwrap_err();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("not a duration"));
    }
}

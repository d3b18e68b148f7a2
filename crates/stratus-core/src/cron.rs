//! Cron expressions for backup schedules, in UTC: the five fields of crontab(5) (minute, hour,
//! day of month, month, day of week), each `*`, a number, a range `a-b`, a step `*/n` or
//! `a-b/n`, or a list of those; day of week 0–7 with both 0 and 7 Sunday. As in crontab, when both
//! day of month and day of week are restricted, a day matching either counts. A sixth, leading
//! field of seconds is accepted too (`*/10 * * * * *`), for schedules shorter than a minute.

use std::fmt;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: Vec<bool>,
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    days_any: bool,
    weekdays_any: bool,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron expression {expr:?}: {why}")]
pub struct CronError {
    pub expr: String,
    pub why: String,
}

fn field(text: &str, lo: u32, hi: u32, name: &str) -> Result<(Vec<bool>, bool), String> {
    let mut set = vec![false; hi as usize + 1];
    let any = text == "*";
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("bad step {s:?} in the {name} field"))?,
            ),
            None => (part, 1),
        };
        let num = |s: &str| {
            s.parse::<u32>()
                .ok()
                .filter(|n| (lo..=hi).contains(n))
                .ok_or_else(|| format!("{s:?} is not a {name} ({lo}–{hi})"))
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(format!("{range:?} runs backwards in the {name} field"));
            }
            (a, b)
        } else {
            let a = num(range)?;
            (a, if part.contains('/') { hi } else { a })
        };
        for v in (a..=b).step_by(step as usize) {
            set[v as usize] = true;
        }
    }
    Ok((set, any))
}

impl Cron {
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        let err = |why: String| CronError {
            expr: expr.to_owned(),
            why,
        };
        let parts: Vec<&str> = expr.split_whitespace().collect();
        let (sec, rest) = match parts.len() {
            5 => ("0", &parts[..]),
            6 => (parts[0], &parts[1..]),
            n => {
                return Err(err(format!(
                    "{n} fields; a cron expression has 5 (or 6 with seconds)"
                )));
            }
        };
        let (seconds, _) = field(sec, 0, 59, "second").map_err(err)?;
        let (minutes, _) = field(rest[0], 0, 59, "minute").map_err(err)?;
        let (hours, _) = field(rest[1], 0, 23, "hour").map_err(err)?;
        let (days, days_any) = field(rest[2], 1, 31, "day of month").map_err(err)?;
        let (months, _) = field(rest[3], 1, 12, "month").map_err(err)?;
        let (mut weekdays, weekdays_any) = field(rest[4], 0, 7, "day of week").map_err(err)?;
        if weekdays[7] {
            weekdays[0] = true;
        }
        Ok(Self {
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_any,
            weekdays_any,
            text: parts.join(" "),
        })
    }

    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let d = self.days[day as usize];
        let w = self.weekdays[weekday as usize];
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (true, false) => w,
            (false, true) => d,
            (false, false) => d || w,
        }
    }

    /// The first time strictly after `after_ms` (milliseconds since the Unix epoch, UTC) that
    /// matches, within about five years; `None` for an expression that never matches (31 February).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let mut t = after_ms.div_euclid(1000) + 1;
        let limit = t + 5 * 366 * 86_400;
        while t < limit {
            let (days, sod) = (t.div_euclid(86_400), t.rem_euclid(86_400));
            let (_, month, day) = crate::time::civil_from_days(days);
            let weekday = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
            if !self.months[month as usize] || !self.day_matches(day, weekday) {
                t = (days + 1) * 86_400;
                continue;
            }
            let (h, m, s) = (sod / 3600, sod % 3600 / 60, sod % 60);
            if !self.hours[h as usize] {
                t = days * 86_400 + (h + 1) * 3600;
                continue;
            }
            if !self.minutes[m as usize] {
                t = days * 86_400 + h * 3600 + (m + 1) * 60;
                continue;
            }
            if !self.seconds[s as usize] {
                t += 1;
                continue;
            }
            return Some(t * 1000);
        }
        None
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-30T19:45:12Z (a Monday).
    const NOW: i64 = 1_796_067_912_000;

    fn next(expr: &str, after: i64) -> String {
        crate::time::rfc3339(Cron::parse(expr).unwrap().next_after(after).unwrap())
    }

    #[test]
    fn fields_steps_ranges_and_lists() {
        assert_eq!(crate::time::rfc3339(NOW), "2026-11-30T19:45:12.000Z");
        assert_eq!(next("0 3 * * *", NOW), "2026-12-01T03:00:00.000Z");
        assert_eq!(next("*/15 * * * *", NOW), "2026-11-30T20:00:00.000Z");
        assert_eq!(next("50-59/5 19 * * *", NOW), "2026-11-30T19:50:00.000Z");
        assert_eq!(next("0 0 1 1 *", NOW), "2027-01-01T00:00:00.000Z");
        assert_eq!(
            next("30 12 * * 0", NOW),
            "2026-12-06T12:30:00.000Z",
            "Sunday"
        );
        assert_eq!(
            next("30 12 * * 7", NOW),
            "2026-12-06T12:30:00.000Z",
            "7 is Sunday too"
        );
        assert_eq!(next("0 9 1,15 * *", NOW), "2026-12-01T09:00:00.000Z");
        assert_eq!(
            next("*/10 * * * * *", NOW),
            "2026-11-30T19:45:20.000Z",
            "seconds"
        );
        assert_eq!(next("* * * * *", NOW), "2026-11-30T19:46:00.000Z");
        // Day of month or day of week, when both are given.
        assert_eq!(next("0 0 13 * 5", NOW), "2026-12-04T00:00:00.000Z");
        assert_eq!(Cron::parse("0 0 31 2 *").unwrap().next_after(NOW), None);
    }

    #[test]
    fn bad_expressions_say_why() {
        for (expr, why) in [
            ("0 3 * *", "4 fields"),
            ("60 * * * *", "not a minute"),
            ("* 24 * * *", "not a hour"),
            ("*/0 * * * *", "bad step"),
            ("5-1 * * * *", "runs backwards"),
            ("a * * * *", "not a minute"),
            ("", "0 fields"),
        ] {
            let e = Cron::parse(expr).unwrap_err().to_string();
            assert!(e.contains(why), "{expr}: {e}");
        }
    }
}

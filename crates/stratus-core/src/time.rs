//! Wall-clock timestamps: milliseconds since the Unix epoch, printed as RFC 3339 UTC.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `2026-11-29T03:04:05.678Z`.
pub fn rfc3339(ms: i64) -> String {
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// `2026-11-29T03:04:05.678901Z`, from microseconds: a time that restores can be asked for.
pub fn rfc3339_us(us: i64) -> String {
    let ms = rfc3339(us.div_euclid(1000));
    format!("{}{:03}Z", ms.trim_end_matches('Z'), us.rem_euclid(1000))
}

/// The date (year, month 1–12, day 1–31) of a day counted from 1970-01-01, by Howard
/// Hinnant's days-to-civil algorithm
/// (<https://howardhinnant.github.io/date_algorithms.html#civil_from_days>).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Days from 1970-01-01 to a date (the inverse of [`civil_from_days`], same source).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Microseconds since the Unix epoch of an RFC 3339 time (`2026-11-30T22:41:05.123456Z`,
/// `…+01:00`; a fraction of up to 9 digits, kept to the microsecond). `Err` says what is wrong.
pub fn parse_rfc3339_us(text: &str) -> Result<i64, String> {
    let bad = |what: &str| {
        format!("{text:?} is not an RFC 3339 time ({what}), e.g. 2026-11-30T22:41:05.123Z")
    };
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Result<i64, String> {
        let part = text.get(from..from + len).ok_or_else(|| bad("too short"))?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad("digits expected"));
        }
        part.parse().map_err(|_| bad("digits expected"))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad("YYYY-MM-DDTHH:MM:SS"));
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let month = u32::try_from(month).map_err(|_| bad("month"))?;
    let day = u32::try_from(day).map_err(|_| bad("day"))?;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[month as usize - 1] {
        return Err(bad("no such date"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(bad("no such time of day"));
    }
    let mut at = 19;
    let mut micros = 0;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 || digits > 9 {
            return Err(bad("fraction"));
        }
        let frac = &text[at + 1..at + 1 + digits];
        let padded = format!("{frac:0<6}");
        micros = padded[..6].parse::<i64>().map_err(|_| bad("fraction"))?;
        at += 1 + digits;
    }
    let offset = match &text[at..] {
        "Z" | "z" => 0,
        zone if zone.len() == 6
            && matches!(zone.as_bytes()[0], b'+' | b'-')
            && zone.as_bytes()[3] == b':' =>
        {
            let (h, m) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if h > 23 || m > 59 {
                return Err(bad("offset"));
            }
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return Err(bad("a zone, Z or ±HH:MM, must end it")),
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Ok(secs * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::{parse_rfc3339_us, rfc3339, rfc3339_us};

    #[test]
    fn parses_what_it_prints_and_refuses_the_rest() {
        assert_eq!(
            parse_rfc3339_us("2026-11-29T03:04:05.678Z"),
            Ok(1_795_921_445_678_000)
        );
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339_us("2000-02-29T01:00:00.000001+01:00"),
            Ok(951_782_400_000_001)
        );
        assert_eq!(
            parse_rfc3339_us("1970-01-01T00:00:00.123456789Z"),
            Ok(123_456)
        );
        assert_eq!(
            parse_rfc3339_us("2026-11-29T03:04:05.678Z").map(|us| rfc3339(us / 1000)),
            Ok("2026-11-29T03:04:05.678Z".into())
        );
        for bad in [
            "",
            "yesterday",
            "2026-11-29",
            "2026-11-29T03:04:05",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-29T24:00:00Z",
            "2026-11-29T03:04:05.Z",
            "2026-11-29T03:04:05+1:00",
            "2026-11-29T03:04:05Zjunk",
            "２026-11-29T03:04:05Z",
        ] {
            assert!(parse_rfc3339_us(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_921_445_678), "2026-11-29T03:04:05.678Z");
        assert_eq!(
            rfc3339_us(1_795_921_445_678_901),
            "2026-11-29T03:04:05.678901Z"
        );
        assert_eq!(
            parse_rfc3339_us(&rfc3339_us(1_795_921_445_000_001)),
            Ok(1_795_921_445_000_001)
        );
    }
}

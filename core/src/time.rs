//! Event-time parsing and formatting without a calendar crate: CloudTrail and CloudWatch write
//! RFC 3339 / ISO-8601 UTC times, and this is on the hot path of every record.

/// Milliseconds since the Unix epoch, UTC. The lake stores every time as Arrow
/// `Timestamp(Millisecond, "UTC")` because Athena reads no finer.
pub type EpochMillis = i64;

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day number from [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    let mut v = 0u32;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH:MM|±HHMM)` (a space may stand for `T`, as in
/// LookupEvents exports) into epoch milliseconds. Fractions beyond milliseconds are truncated.
/// Returns `None` for anything else: callers turn that into a reject reason, never a panic.
pub fn parse_rfc3339_millis(s: &str) -> Option<EpochMillis> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(b, 0, 4)?, digits(b, 5, 2)?, digits(b, 8, 2)?);
    let (h, mi, sec) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y as i64, mo) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + (b[i] - b'0') as u32;
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') => {
            let rest = &b[i + 1..];
            let (oh, om) = match rest.len() {
                5 if rest[2] == b':' => (digits(rest, 0, 2)?, digits(rest, 3, 2)?),
                4 => (digits(rest, 0, 2)?, digits(rest, 2, 2)?),
                2 => (digits(rest, 0, 2)?, 0),
                _ => return None,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let o = (oh * 3600 + om * 60) as i64;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y as i64, mo, d);
    let secs = days * 86_400 + (h * 3600 + mi * 60 + sec.min(59)) as i64 - offset_secs;
    Some(secs * 1000 + millis as i64)
}

/// The wall clock in ms since the epoch. Read by binaries and handed to the libraries, which
/// never read it themselves, so tests can pin it.
pub fn wall_clock_millis() -> EpochMillis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as EpochMillis)
}

/// `YYYY-MM-DD` of the UTC day holding `ms`: the lake's `date=` partition value.
pub fn utc_date(ms: EpochMillis) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// RFC 3339 with millisecond precision, the way findings and rejects print times.
pub fn format_rfc3339_millis(ms: EpochMillis) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    let r = ms.rem_euclid(86_400_000);
    let (h, mi, s, f) = (r / 3_600_000, r / 60_000 % 60, r / 1000 % 60, r % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{f:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_cloudtrail_shapes() {
        assert_eq!(parse_rfc3339_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_millis("2023-05-19T07:44:30Z"), Some(1_684_482_270_000));
        assert_eq!(parse_rfc3339_millis("2023-05-19T07:44:30.123456Z"), Some(1_684_482_270_123));
        assert_eq!(parse_rfc3339_millis("2023-05-19T07:44:30.5Z"), Some(1_684_482_270_500));
        // LookupEvents export: space separator and an offset.
        assert_eq!(parse_rfc3339_millis("2022-02-08 09:23:37+11:00"), parse_rfc3339_millis("2022-02-07T22:23:37Z"));
        assert_eq!(parse_rfc3339_millis("2022-02-07T22:23:37-0130"), parse_rfc3339_millis("2022-02-07T23:53:37Z"));
    }

    #[test]
    fn rejects_non_iso() {
        for s in [
            "eventTime",
            "",
            "2023-02-30T00:00:00Z",
            "2023-05-19T07:44:30",
            "1684482270",
            "2023-05-19T24:00:00Z",
            "2023-05-19T07:44:30.Z",
            "2023-05-19T07:44:30Zjunk",
            "２０２３-05-19T07:44:30Z",
        ] {
            assert_eq!(parse_rfc3339_millis(s), None, "{s}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(-1), "1969-12-31");
        assert_eq!(utc_date(1_684_482_270_000), "2023-05-19");
        assert_eq!(format_rfc3339_millis(1_684_482_270_123), "2023-05-19T07:44:30.123Z");
    }

    proptest! {
        #[test]
        fn format_then_parse_roundtrips(ms in -62_000_000_000_000i64..253_402_300_799_999i64) {
            prop_assert_eq!(parse_rfc3339_millis(&format_rfc3339_millis(ms)), Some(ms));
        }

        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = parse_rfc3339_millis(&s);
        }
    }
}

//! Timestamps as epoch milliseconds (UTC), parsed and formatted by hand:
//! chrono would add size to every guest for three formats and one calendar
//! routine. The calendar arithmetic is Howard Hinnant's `days_from_civil` /
//! `civil_from_days` (proleptic Gregorian, exact for all i64 day counts we accept).

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: the range that formats
/// as a four-digit year, so every accepted timestamp round-trips through ISO 8601.
pub const MIN_MS: i64 = -62_135_596_800_000;
pub const MAX_MS: i64 = 253_402_300_799_999;

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

/// Calendar fields of an instant, for the Hive partition columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub milli: u32,
}

pub fn civil(ms: i64) -> Civil {
    let days = ms.div_euclid(MS_PER_DAY);
    let rem = ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = (rem / 1000) as u32;
    Civil {
        year: y as i32,
        month: m,
        day: d,
        hour: secs / 3600,
        minute: secs / 60 % 60,
        second: secs % 60,
        milli: (rem % 1000) as u32,
    }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

#[inline]
fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as u32;
    }
    Some(v)
}

/// Parse a timestamp string to epoch milliseconds (UTC).
///
/// Accepts `YYYY-MM-DD HH:MM:SS` and `YYYY-MM-DDTHH:MM:SS`, each with an
/// optional fraction (truncated to milliseconds) and an optional `Z` or
/// `±hh:mm` / `±hhmm` offset (none means UTC), and a bare integer (epoch ms,
/// what a CSV cell of a numeric timestamp looks like).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() >= 19 && b[4] == b'-' {
        return parse_iso(b);
    }
    let (neg, digits_part) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    // 15 digits cannot overflow i64; anything longer is out of range anyway.
    if digits_part.is_empty() || digits_part.len() > 15 {
        return None;
    }
    let mut acc: i64 = 0;
    for &c in digits_part {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        acc = acc * 10 + d as i64;
    }
    let ms = if neg { -acc } else { acc };
    in_range(ms)
}

/// [`parse_timestamp`] remembering the last calendar date: consecutive trips
/// mostly share a day, and the date arithmetic is the costly part.
#[derive(Default)]
pub struct DateCache {
    date: [u8; 10],
    days: i64,
}

impl DateCache {
    #[inline]
    pub fn parse(&mut self, s: &str) -> Option<i64> {
        let b = s.as_bytes();
        if b.len() >= 19 && b[..10] == self.date && self.date[4] == b'-' {
            return parse_iso_with_days(b, self.days);
        }
        let ms = parse_timestamp(s)?;
        if b.len() >= 19 && b[4] == b'-' {
            // Only cache dates that parsed as an ISO date.
            self.date.copy_from_slice(&b[..10]);
            let y = digits(&b[0..4])? as i64;
            self.days = days_from_civil(y, digits(&b[5..7])?, digits(&b[8..10])?);
        }
        Some(ms)
    }
}

/// Epoch milliseconds from a JSON/Arrow number, if it is a representable instant.
pub fn from_epoch_ms_f64(v: f64) -> Option<i64> {
    if !v.is_finite() {
        return None;
    }
    let ms = v.floor();
    if ms < MIN_MS as f64 || ms > MAX_MS as f64 {
        return None;
    }
    Some(ms as i64)
}

#[inline]
pub fn in_range(ms: i64) -> Option<i64> {
    (MIN_MS..=MAX_MS).contains(&ms).then_some(ms)
}

fn parse_iso(b: &[u8]) -> Option<i64> {
    if b[7] != b'-' {
        return None;
    }
    let y = digits(&b[0..4])? as i64;
    let mo = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    if y == 0 || !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return None;
    }
    parse_iso_with_days(b, days_from_civil(y, mo, d))
}

/// The time part of an ISO timestamp whose date (`b[..10]`, already checked) is `days`.
fn parse_iso_with_days(b: &[u8], days: i64) -> Option<i64> {
    if !(b[10] == b' ' || b[10] == b'T') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let h = digits(&b[11..13])?;
    let mi = digits(&b[14..16])?;
    let sec = digits(&b[17..19])?;
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut milli = 0u32;
    if let Some((&b'.', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let mut scale = 100;
        for &c in &frac[..n.min(3)] {
            milli += (c - b'0') as u32 * scale;
            scale /= 10;
        }
        rest = &frac[n..];
    }
    let offset_min: i64 = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let (hh, mm) = match tail {
                [a, b, b':', c, d] | [a, b, c, d] => (digits(&[*a, *b])?, digits(&[*c, *d])?),
                [a, b] => (digits(&[*a, *b])?, 0),
                _ => return None,
            };
            if hh > 23 || mm > 59 {
                return None;
            }
            let m = (hh * 60 + mm) as i64;
            if *sign == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    let ms = days * MS_PER_DAY
        + (h as i64 * 3600 + mi as i64 * 60 + sec as i64) * 1000
        + milli as i64
        - offset_min * 60_000;
    in_range(ms)
}

/// Formats as `2016-03-14T17:24:55Z`, or `2016-03-14T17:24:55.120Z` when the
/// instant has milliseconds. Returns the number of bytes written (20 or 24).
pub fn format_iso_into(ms: i64, out: &mut [u8; 24]) -> usize {
    let c = civil(ms);
    let y = c.year.clamp(0, 9999) as u32;
    let put2 = |o: &mut [u8], v: u32| {
        o[0] = b'0' + (v / 10) as u8;
        o[1] = b'0' + (v % 10) as u8;
    };
    put2(&mut out[0..2], y / 100);
    put2(&mut out[2..4], y % 100);
    out[4] = b'-';
    put2(&mut out[5..7], c.month);
    out[7] = b'-';
    put2(&mut out[8..10], c.day);
    out[10] = b'T';
    put2(&mut out[11..13], c.hour);
    out[13] = b':';
    put2(&mut out[14..16], c.minute);
    out[16] = b':';
    put2(&mut out[17..19], c.second);
    if c.milli == 0 {
        out[19] = b'Z';
        20
    } else {
        out[19] = b'.';
        out[20] = b'0' + (c.milli / 100) as u8;
        put2(&mut out[21..23], c.milli % 100);
        out[23] = b'Z';
        24
    }
}

pub fn format_iso(ms: i64) -> String {
    let mut buf = [0u8; 24];
    let n = format_iso_into(ms, &mut buf);
    // Only ASCII digits and separators were written.
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_accepted_forms_to_the_same_instant() {
        let want = 1_457_976_295_000; // 2016-03-14T17:24:55Z
        for s in [
            "2016-03-14 17:24:55",
            "2016-03-14T17:24:55",
            "2016-03-14T17:24:55Z",
            "2016-03-14T17:24:55.000Z",
            "2016-03-14T18:24:55+01:00",
            "2016-03-14T12:24:55-0500",
            "1457976295000",
        ] {
            assert_eq!(parse_timestamp(s), Some(want), "{s}");
        }
        assert_eq!(parse_timestamp("2016-03-14T17:24:55.1239Z"), Some(want + 123));
    }

    #[test]
    fn rejects_impossible_dates_and_garbage() {
        for s in [
            "", "2016-02-30 00:00:00", "2015-02-29 00:00:00", "2016-13-01 00:00:00", "2016-03-14 24:00:00",
            "2016-03-14 17:24", "2016/03/14 17:24:55", "2016-03-14T17:24:55.Z", "2016-03-14T17:24:55+25:00",
            "2016-03-14T17:24:55 UTC", "abc", "-", "12a",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s:?}");
        }
        assert_eq!(parse_timestamp("2016-02-29 00:00:00"), Some(1_456_704_000_000));
    }

    #[test]
    fn date_cache_agrees_with_the_parser() {
        let mut c = DateCache::default();
        for s in [
            "2016-03-14 17:24:55", "2016-03-14 18:00:00", "2016-03-14T18:00:00+01:00", "2016-03-14 25:00:00",
            "2016-03-15 00:00:00", "1457976295000", "2016-03-15 00:00:01", "2016-02-30 00:00:00", "2016-02-30 00:00:01",
        ] {
            assert_eq!(c.parse(s), parse_timestamp(s), "{s}");
        }
    }

    #[test]
    fn calendar_round_trips_across_eras() {
        for days in (-800_000i64..3_000_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn formats_iso_with_and_without_millis() {
        assert_eq!(format_iso(1_457_976_295_000), "2016-03-14T17:24:55Z");
        assert_eq!(format_iso(1_457_976_295_120), "2016-03-14T17:24:55.120Z");
        assert_eq!(format_iso(MIN_MS), "0001-01-01T00:00:00Z");
        assert_eq!(format_iso(MAX_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(parse_timestamp(&format_iso(-1)), Some(-1));
    }
}

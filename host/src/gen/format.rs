//! Rows as CSV lines and NDJSON documents, formatted by hand: the generator
//! must write over a million rows a second, and `format!` per field would not.

use super::row::{Fault, Field, Row, FIELD_NAMES};

pub const CSV_HEADER: &str = "id,vendorId,pickupDate,dropoffDate,passengerCount,pickupLongitude,pickupLatitude,dropoffLongitude,dropoffLatitude,storeAndFwdFlag,gcDistance,tripDuration,googleDistance,googleDuration";

/// One field's value as written.
#[derive(Clone, Copy)]
enum V {
    Id(u64),
    Int(i64),
    /// Fixed-point with the given number of decimals.
    Fixed(f64, u32),
    /// Epoch seconds, written as "YYYY-MM-DD HH:MM:SS".
    Ts(i64),
    Str(&'static str),
    /// Bad text in place of a value (CSV: raw; JSON: a string).
    Text(&'static str),
    /// Empty CSV cell; JSON key left out.
    Absent,
    /// Empty CSV cell; JSON `null`.
    Null,
}

fn value(row: &Row, f: Field) -> V {
    if let Some(fault) = row.fault {
        match fault {
            Fault::MissingField(m, null) if m == f => return if null { V::Null } else { V::Absent },
            Fault::NotNumeric(m, t) | Fault::BadTimestamp(m, t) if m == f => return V::Text(t),
            _ => {}
        }
    }
    let pre = row.precomputed.as_ref();
    match f {
        Field::Id => V::Id(row.index),
        Field::VendorId => V::Int(row.vendor_id as i64),
        Field::PickupDate => V::Ts(row.pickup_s),
        Field::DropoffDate => V::Ts(row.dropoff_s),
        Field::PassengerCount => V::Int(row.passenger_count as i64),
        Field::PickupLongitude => V::Fixed(row.pickup_lon, 6),
        Field::PickupLatitude => V::Fixed(row.pickup_lat, 6),
        Field::DropoffLongitude => V::Fixed(row.dropoff_lon, 6),
        Field::DropoffLatitude => V::Fixed(row.dropoff_lat, 6),
        Field::StoreAndFwdFlag => V::Str(if row.store_and_fwd { "Y" } else { "N" }),
        Field::GcDistance => pre.map_or(V::Null, |p| V::Fixed(p.gc_distance_km, 3)),
        Field::TripDuration => pre.map_or(V::Null, |p| V::Int(p.trip_duration_s)),
        Field::GoogleDistance => pre.map_or(V::Null, |p| V::Fixed(p.google_distance_km, 3)),
        Field::GoogleDuration => pre.map_or(V::Null, |p| V::Int(p.google_duration_s)),
    }
}

const FIELDS: [Field; 14] = [
    Field::Id,
    Field::VendorId,
    Field::PickupDate,
    Field::DropoffDate,
    Field::PassengerCount,
    Field::PickupLongitude,
    Field::PickupLatitude,
    Field::DropoffLongitude,
    Field::DropoffLatitude,
    Field::StoreAndFwdFlag,
    Field::GcDistance,
    Field::TripDuration,
    Field::GoogleDistance,
    Field::GoogleDuration,
];

impl Row {
    /// One CSV line in header order, without the line terminator.
    pub fn write_csv(&self, out: &mut Vec<u8>) {
        let start = out.len();
        for (n, f) in FIELDS.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            write_raw(out, value(self, *f));
        }
        if let Some(Fault::Malformed(kind)) = self.fault {
            if kind % 2 == 0 {
                // Cut inside field 3..=10 so the line has too few fields.
                let keep = 3 + (self.index % 8) as usize;
                if let Some(cut) = out[start..].iter().enumerate().filter(|(_, &b)| b == b',').nth(keep - 1) {
                    let cut = start + cut.0 + 1 + (self.index % 4) as usize;
                    out.truncate(cut.min(out.len()));
                    // A cut right after a comma leaves a trailing empty field; drop it.
                    while out.len() > start && out[out.len() - 1] == b',' {
                        out.pop();
                    }
                }
            } else {
                out.extend_from_slice(b",0,extra");
            }
        }
    }

    /// One NDJSON document (no trailing newline). Numbers are JSON numbers,
    /// timestamps strings like "2016-03-14 17:24:55", empty columns `null`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let start = out.len();
        if let Some(Fault::Malformed(kind)) = self.fault {
            match kind % 3 {
                // The CSV form: plain text where a document belongs.
                1 => return self.write_csv(out),
                // Valid JSON, but a string rather than an object.
                2 => {
                    out.extend_from_slice(b"\"");
                    write_raw(out, V::Id(self.index));
                    out.extend_from_slice(b"\"");
                    return;
                }
                _ => {}
            }
        }
        out.push(b'{');
        let mut first = true;
        for f in FIELDS {
            let v = value(self, f);
            if matches!(v, V::Absent) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(FIELD_NAMES[f as usize].as_bytes());
            out.extend_from_slice(b"\":");
            match v {
                V::Id(_) | V::Ts(_) | V::Str(_) | V::Text(_) => {
                    out.push(b'"');
                    write_raw(out, v);
                    out.push(b'"');
                }
                V::Null => out.extend_from_slice(b"null"),
                _ => write_raw(out, v),
            }
        }
        out.push(b'}');
        if let Some(Fault::Malformed(_)) = self.fault {
            // A document cut off mid-way (a prefix of an object is never valid JSON).
            let len = out.len() - start;
            out.truncate(start + len * 3 / 5);
        }
    }
}

/// The value's text; strings unquoted (none of the generated strings need escaping).
fn write_raw(out: &mut Vec<u8>, v: V) {
    match v {
        V::Id(i) => {
            out.extend_from_slice(b"id");
            write_padded(out, i, 7);
        }
        V::Int(n) => write_int(out, n),
        V::Fixed(x, d) => write_fixed(out, x, d),
        V::Ts(s) => write_ts(out, s),
        V::Str(s) | V::Text(s) => out.extend_from_slice(s.as_bytes()),
        V::Absent | V::Null => {}
    }
}

pub(super) fn write_uint(out: &mut Vec<u8>, n: u64) {
    write_padded(out, n, 1);
}

pub(super) fn write_id(out: &mut Vec<u8>, index: u64) {
    write_raw(out, V::Id(index));
}

fn write_int(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_padded(out, n.unsigned_abs(), 1);
}

/// Decimal digits of `n`, left-padded with zeros to `width`.
fn write_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    out.extend_from_slice(&buf[start..]);
}

fn write_fixed(out: &mut Vec<u8>, x: f64, decimals: u32) {
    let scale = 10u64.pow(decimals);
    let scaled = (x * scale as f64).round() as i64;
    if scaled < 0 {
        out.push(b'-');
    }
    let a = scaled.unsigned_abs();
    write_padded(out, a / scale, 1);
    out.push(b'.');
    write_padded(out, a % scale, decimals as usize);
}

/// Days since 1970-01-01 to (year, month, day) — Howard Hinnant's algorithm.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn write_ts(out: &mut Vec<u8>, s: i64) {
    let (y, m, d) = civil_from_days(s.div_euclid(86_400));
    let sod = s.rem_euclid(86_400);
    let two = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
    write_padded(out, y.max(0) as u64, 4);
    out.push(b'-');
    two(out, m);
    out.push(b'-');
    two(out, d);
    out.push(b' ');
    two(out, (sod / 3600) as u32);
    out.push(b':');
    two(out, (sod / 60 % 60) as u32);
    out.push(b':');
    two(out, (sod % 60) as u32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_timestamps_format_exactly() {
        let mut o = Vec::new();
        write_fixed(&mut o, -73.985_123_4, 6);
        o.push(b' ');
        write_fixed(&mut o, -0.5, 3);
        o.push(b' ');
        write_fixed(&mut o, 0.0, 6);
        o.push(b' ');
        write_int(&mut o, -42);
        o.push(b' ');
        write_ts(&mut o, super::super::row::BASE_EPOCH_S + 17 * 3600 + 24 * 60 + 55);
        o.push(b' ');
        write_raw(&mut o, V::Id(42));
        o.push(b' ');
        write_raw(&mut o, V::Id(123_456_789));
        assert_eq!(
            String::from_utf8(o).unwrap(),
            "-73.985123 -0.500 0.000000 -42 2016-03-14 17:24:55 id0000042 id123456789"
        );
        assert_eq!(civil_from_days(16_874), (2016, 3, 14));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}

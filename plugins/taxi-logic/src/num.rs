//! Number parsing fast paths. Both are exact: they accept only inputs whose
//! value they compute exactly as `str::parse` would, and say `None` otherwise
//! (the caller falls back to `str::parse`). They exist because parsing is most
//! of what validate does, and in Wasm the general parsers cost twice as much.

/// Powers of ten exactly representable as f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
    1e20, 1e21, 1e22,
];

/// Plain decimals (`-73.981`, `2`, `.5`) with at most 19 digits, a mantissa
/// up to 2^53 and at most 22 fraction digits: nearly every coordinate and
/// distance. Exact (Clinger's fast path: one correctly rounded division of two
/// exact values), so it always equals `str::parse`; `None` means "use the
/// general parser". Digits go eight at a time where they can (coordinates
/// often carry 14 fraction digits).
#[inline]
pub fn fast_f64(b: &[u8]) -> Option<f64> {
    let (neg, b) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    let mut mant = 0u64;
    let (i, int_digits) = digit_run(b, 0, &mut mant);
    let (i, frac) = match b.get(i) {
        Some(b'.') => digit_run(b, i + 1, &mut mant),
        _ => (i, 0),
    };
    let digits = int_digits + frac;
    // Past 19 digits `mant` may have wrapped; it is discarded then.
    if i != b.len() || digits == 0 || digits > 19 || mant > 1 << 53 || frac >= POW10.len() {
        return None;
    }
    let v = mant as f64 / POW10[frac];
    Some(if neg { -v } else { v })
}

/// Accumulates the run of ASCII digits starting at `i` into `mant`
/// (wrapping); returns where the run ends and its length.
#[inline]
fn digit_run(b: &[u8], start: usize, mant: &mut u64) -> (usize, usize) {
    let mut i = start;
    while let Some(chunk) = b.get(i..i + 8) {
        let v = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        if !is_8_digits(v) {
            break;
        }
        *mant = mant.wrapping_mul(100_000_000).wrapping_add(parse_8_digits(v));
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        *mant = mant.wrapping_mul(10).wrapping_add(d as u64);
        i += 1;
    }
    (i, i - start)
}

/// All eight bytes are ASCII digits (the SWAR test from fast-float).
#[inline]
fn is_8_digits(v: u64) -> bool {
    let a = v.wrapping_add(0x4646_4646_4646_4646);
    let b = v.wrapping_sub(0x3030_3030_3030_3030);
    (a | b) & 0x8080_8080_8080_8080 == 0
}

/// The value of eight ASCII digits, first digit in the lowest byte.
#[inline]
fn parse_8_digits(v: u64) -> u64 {
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 0x000F_4240_0000_0064; // 100 + (1_000_000 << 32)
    const MUL2: u64 = 0x0000_2710_0000_0001; // 1 + (10_000 << 32)
    let v = v.wrapping_sub(0x3030_3030_3030_3030);
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let v1 = (v & MASK).wrapping_mul(MUL1);
    let v2 = ((v >> 16) & MASK).wrapping_mul(MUL2);
    (v1.wrapping_add(v2) >> 32) as u32 as u64
}

/// Short plain integers (`1`, `-42`): no overflow is possible below 19 digits,
/// so this skips the checked arithmetic of `str::parse` (128-bit multiplies in Wasm).
#[inline]
pub fn fast_i64(b: &[u8]) -> Option<i64> {
    let (neg, b) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if b.is_empty() || b.len() > 18 {
        return None;
    }
    let mut v = 0i64;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as i64;
    }
    Some(if neg { -v } else { v })
}

/// Any decimal or scientific literal `str::parse` accepts (finite or not).
#[inline]
pub fn parse_f64(s: &str) -> Option<f64> {
    fast_f64(s.as_bytes()).or_else(|| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_float_path_equals_the_standard_parser() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = (x % 18) as usize;
            let s = match x % 5 {
                0 => format!("-73.{:0digits$}", x % 10u64.pow(digits as u32)),
                1 => format!("{}.{}", x % 1000, x % 10u64.pow(digits as u32)),
                2 if x.is_multiple_of(3) => format!("-7{}.{:016}", x % 10, x % 10u64.pow(16)),
                2 => format!("{}", x >> (x % 64)),
                3 => format!(".{}", x % 1_000_000),
                _ => format!("{:?}", f64::from_bits(x >> 2)),
            };
            assert_eq!(parse_f64(&s).map(f64::to_bits), s.parse::<f64>().ok().map(f64::to_bits), "{s}");
        }
        for s in [
            "", ".", "-", "1..2", "1e5", "inf", "NaN", "+3", "5.", "00000000000000000000001.5", "9007199254740993",
            "-73.98215484619139", "40.76793670654297", "12345678.12345678", "1234567890123456789", "12345678a", "-.",
            "1234567.8901234567890",
        ] {
            assert_eq!(parse_f64(s).map(f64::to_bits), s.parse::<f64>().ok().map(f64::to_bits), "{s}");
        }
        for s in ["0", "-42", "+7", "123456789012345678", "1234567890123456789", "", "-", "1.0", "9a"] {
            assert!(fast_i64(s.as_bytes()).is_none() || fast_i64(s.as_bytes()) == s.parse().ok(), "{s}");
        }
        assert_eq!(fast_i64(b"-42"), Some(-42));
    }
}

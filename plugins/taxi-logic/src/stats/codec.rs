//! The byte encodings that cross the plugin boundary: a trip's value (per
//! record, so fixed and small), a window's state and a vendor's baseline.
//! All little-endian; no JSON on this path.

/// Encoded size of a [`Trip`].
pub const TRIP_BYTES: usize = 29;

/// One trip's contribution to its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trip {
    pub duration_s: i64,
    /// Great-circle distance in millimetres (km × 1e6, rounded).
    pub distance_mm: i64,
    /// Pickup latitude and longitude in 1e-7 degrees (rounded; ~1 cm).
    pub lat_e7: i32,
    pub lon_e7: i32,
    pub passengers: i32,
    /// Hour of day (UTC) of the pickup, 0–23.
    pub hour: u8,
}

impl Trip {
    pub fn encode(&self) -> [u8; TRIP_BYTES] {
        let mut b = [0u8; TRIP_BYTES];
        b[0..8].copy_from_slice(&self.duration_s.to_le_bytes());
        b[8..16].copy_from_slice(&self.distance_mm.to_le_bytes());
        b[16..20].copy_from_slice(&self.lat_e7.to_le_bytes());
        b[20..24].copy_from_slice(&self.lon_e7.to_le_bytes());
        b[24..28].copy_from_slice(&self.passengers.to_le_bytes());
        b[28] = self.hour;
        b
    }

    pub fn decode(b: &[u8]) -> Result<Trip, String> {
        if b.len() != TRIP_BYTES || b[28] > 23 {
            return Err(format!(
                "a trip value is {TRIP_BYTES} bytes with an hour 0-23, got {} bytes",
                b.len()
            ));
        }
        let i64_at = |o: usize| i64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let i32_at = |o: usize| i32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        Ok(Trip {
            duration_s: i64_at(0),
            distance_mm: i64_at(8),
            lat_e7: i32_at(16),
            lon_e7: i32_at(20),
            passengers: i32_at(24),
            hour: b[28],
        })
    }
}

/// The state of one (window, vendor): integer sums, so adding trips in any
/// order or batch split gives the same bytes. Wrapping adds keep that true
/// even at overflow (which real windows never reach).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WindowStats {
    pub trips: u64,
    pub passengers: i64,
    pub duration_s: i64,
    pub distance_mm: i64,
    pub lat_e7: i64,
    pub lon_e7: i64,
    /// Trips per pickup hour of day.
    pub hours: [u64; 24],
}

const FIXED: usize = 48;

impl WindowStats {
    #[inline]
    pub fn add(&mut self, t: &Trip) {
        self.trips = self.trips.wrapping_add(1);
        self.passengers = self.passengers.wrapping_add(t.passengers as i64);
        self.duration_s = self.duration_s.wrapping_add(t.duration_s);
        self.distance_mm = self.distance_mm.wrapping_add(t.distance_mm);
        self.lat_e7 = self.lat_e7.wrapping_add(t.lat_e7 as i64);
        self.lon_e7 = self.lon_e7.wrapping_add(t.lon_e7 as i64);
        self.hours[t.hour as usize % 24] += 1;
    }

    /// Adds encoded trips (the `values` of a group).
    pub fn add_encoded<'a>(
        &mut self,
        values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), String> {
        for v in values {
            self.add(&Trip::decode(v)?);
        }
        Ok(())
    }

    /// The hour with the most trips; the earliest hour on a tie.
    pub fn peak_hour(&self) -> u8 {
        let mut best = 0;
        for h in 1..24 {
            if self.hours[h] > self.hours[best] {
                best = h;
            }
        }
        best as u8
    }

    /// 48 bytes of sums, then the non-zero hours as (hour, LEB128 count)
    /// pairs: a 1-minute window has one hour, so ~51 bytes in all.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FIXED + 8);
        b.extend_from_slice(&self.trips.to_le_bytes());
        for v in [
            self.passengers,
            self.duration_s,
            self.distance_mm,
            self.lat_e7,
            self.lon_e7,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for (h, &n) in self.hours.iter().enumerate().filter(|(_, n)| **n > 0) {
            b.push(h as u8);
            leb128(&mut b, n);
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<WindowStats, String> {
        let bad = || format!("trip-stats state of {} bytes does not decode", b.len());
        if b.len() < FIXED {
            return Err(bad());
        }
        let word = |i: usize| <[u8; 8]>::try_from(&b[i * 8..i * 8 + 8]).expect("8 bytes");
        let mut s = WindowStats {
            trips: u64::from_le_bytes(word(0)),
            passengers: i64::from_le_bytes(word(1)),
            duration_s: i64::from_le_bytes(word(2)),
            distance_mm: i64::from_le_bytes(word(3)),
            lat_e7: i64::from_le_bytes(word(4)),
            lon_e7: i64::from_le_bytes(word(5)),
            hours: [0; 24],
        };
        let mut rest = &b[FIXED..];
        while let Some((&h, tail)) = rest.split_first() {
            let (n, tail) = read_leb128(tail).ok_or_else(bad)?;
            *s.hours.get_mut(h as usize).ok_or_else(bad)? = n;
            rest = tail;
        }
        Ok(s)
    }

    /// `state` (none for a new group) plus `values`, encoded.
    pub fn accumulate<'a>(
        state: Option<&[u8]>,
        values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<u8>, String> {
        let mut s = match state {
            Some(b) => WindowStats::decode(b)?,
            None => WindowStats::default(),
        };
        s.add_encoded(values)?;
        Ok(s.encode())
    }
}

fn leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_leb128(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, &b[i + 1..]));
        }
    }
    None
}

/// A vendor's running baseline of window average durations: an
/// exponentially weighted mean and variance (West 1979), kept in the
/// stage's keyed state and updated once per closed window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Baseline {
    pub windows: u64,
    pub mean: f64,
    pub var: f64,
}

impl Baseline {
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&self.windows.to_le_bytes());
        b[8..16].copy_from_slice(&self.mean.to_le_bytes());
        b[16..24].copy_from_slice(&self.var.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Baseline, String> {
        let b: &[u8; 24] = b
            .try_into()
            .map_err(|_| format!("a baseline is 24 bytes, got {}", b.len()))?;
        let word = |i: usize| <[u8; 8]>::try_from(&b[i * 8..i * 8 + 8]).expect("8 bytes");
        Ok(Baseline {
            windows: u64::from_le_bytes(word(0)),
            mean: f64::from_le_bytes(word(1)),
            var: f64::from_le_bytes(word(2)),
        })
    }

    /// The baseline after one more window whose average is `x`.
    pub fn update(self, x: f64, alpha: f64) -> Baseline {
        if self.windows == 0 {
            return Baseline {
                windows: 1,
                mean: x,
                var: 0.0,
            };
        }
        let diff = x - self.mean;
        let incr = alpha * diff;
        Baseline {
            windows: self.windows + 1,
            mean: self.mean + incr,
            var: (1.0 - alpha) * (self.var + diff * incr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trip(i: i64) -> Trip {
        Trip {
            duration_s: 300 + i * 7,
            distance_mm: 1_234_567 + i,
            lat_e7: 407_500_000 + i as i32,
            lon_e7: -739_800_000 - i as i32,
            passengers: 1 + (i % 3) as i32,
            hour: (i % 24) as u8,
        }
    }

    #[test]
    fn values_and_state_round_trip() {
        let t = trip(5);
        assert_eq!(Trip::decode(&t.encode()).unwrap(), t);
        assert!(Trip::decode(&[0; 28]).is_err());
        let mut s = WindowStats::default();
        for i in 0..1000 {
            s.add(&trip(i));
        }
        assert_eq!(WindowStats::decode(&s.encode()).unwrap(), s);
        assert_eq!(
            WindowStats::decode(&WindowStats::default().encode()).unwrap(),
            WindowStats::default()
        );
        assert!(WindowStats::decode(&[1; 10]).is_err());
        let mut bad = s.encode();
        bad.extend_from_slice(&[24, 1]); // hour 24
        assert!(WindowStats::decode(&bad).is_err());
        let b = Baseline {
            windows: 3,
            mean: 412.5,
            var: 17.25,
        };
        assert_eq!(Baseline::decode(&b.encode()).unwrap(), b);
    }

    #[test]
    fn state_does_not_depend_on_batch_split_or_order() {
        let values: Vec<[u8; TRIP_BYTES]> = (0..500).map(|i| trip(i * 31 % 500).encode()).collect();
        let all = WindowStats::accumulate(None, values.iter().map(|v| &v[..])).unwrap();
        let mut state: Option<Vec<u8>> = None;
        for chunk in values.rchunks(37) {
            state = Some(
                WindowStats::accumulate(state.as_deref(), chunk.iter().map(|v| &v[..])).unwrap(),
            );
        }
        assert_eq!(state.unwrap(), all);
    }

    #[test]
    fn one_minute_state_is_small_and_peak_hour_breaks_ties_early() {
        let mut s = WindowStats::default();
        for _ in 0..100 {
            s.add(&Trip {
                hour: 17,
                ..trip(0)
            });
        }
        assert_eq!(s.encode().len(), 48 + 2);
        s.hours[3] = 100;
        assert_eq!(s.peak_hour(), 3);
        s.hours[20] = 101;
        assert_eq!(s.peak_hour(), 20);
    }

    #[test]
    fn baseline_is_an_exponentially_weighted_mean_and_variance() {
        let mut b = Baseline::default();
        for x in [10.0, 10.0, 10.0] {
            b = b.update(x, 0.5);
        }
        assert_eq!((b.windows, b.mean, b.var), (3, 10.0, 0.0));
        b = b.update(20.0, 0.5);
        // diff 10, incr 5: mean 15, var 0.5 * (0 + 10 * 5) = 25.
        assert_eq!((b.windows, b.mean, b.var), (4, 15.0, 25.0));
    }
}

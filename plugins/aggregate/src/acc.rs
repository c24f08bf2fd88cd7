//! The state of one (window, group): the record count and, per numeric
//! field, min, max and an exact sum. Sums use Shewchuk's partials (the
//! algorithm behind Python's `math.fsum`): the result is the correctly
//! rounded sum of all values, whatever the order or batch split they arrived
//! in, so a replay after a restart reproduces every output bit for bit.

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Acc {
    pub records: u64,
    pub fields: Vec<FieldAcc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldAcc {
    pub min: f64,
    pub max: f64,
    partials: Vec<f64>,
}

impl Default for FieldAcc {
    fn default() -> Self {
        Self {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            partials: Vec::new(),
        }
    }
}

impl FieldAcc {
    pub fn add(&mut self, x: f64) {
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        let mut x = x;
        let mut i = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        self.partials.truncate(i);
        self.partials.push(x);
    }

    /// The correctly rounded sum (Python's `fsum` final step, with its
    /// half-even correction).
    pub fn sum(&self) -> f64 {
        let p = &self.partials;
        let mut n = p.len();
        if n == 0 {
            return 0.0;
        }
        n -= 1;
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi
    }
}

impl Acc {
    pub fn new(fields: usize) -> Self {
        Acc {
            records: 0,
            fields: vec![FieldAcc::default(); fields],
        }
    }

    /// Adds one record's value (one f64 per field).
    pub fn add(&mut self, value: &[u8]) -> Result<(), String> {
        if value.len() != self.fields.len() * 8 {
            return Err(format!(
                "a value of {} bytes for {} numeric fields",
                value.len(),
                self.fields.len()
            ));
        }
        self.records += 1;
        for (f, b) in self.fields.iter_mut().zip(value.chunks_exact(8)) {
            f.add(f64::from_le_bytes(b.try_into().expect("8 bytes")));
        }
        Ok(())
    }

    /// records (u64), then per field: min, max, partial count (u8), partials; little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + self.fields.len() * 32);
        b.extend_from_slice(&self.records.to_le_bytes());
        for f in &self.fields {
            b.extend_from_slice(&f.min.to_le_bytes());
            b.extend_from_slice(&f.max.to_le_bytes());
            b.push(f.partials.len() as u8);
            for p in &f.partials {
                b.extend_from_slice(&p.to_le_bytes());
            }
        }
        b
    }

    pub fn decode(b: &[u8], fields: usize) -> Result<Acc, String> {
        let bad = || {
            format!(
                "aggregate state of {} bytes does not decode for {fields} numeric fields",
                b.len()
            )
        };
        let mut r = Reader(b);
        let records = u64::from_le_bytes(r.take8().ok_or_else(bad)?);
        let mut acc = Acc {
            records,
            fields: Vec::with_capacity(fields),
        };
        for _ in 0..fields {
            let min = f64::from_le_bytes(r.take8().ok_or_else(bad)?);
            let max = f64::from_le_bytes(r.take8().ok_or_else(bad)?);
            let n = r.take1().ok_or_else(bad)?;
            let partials = (0..n)
                .map(|_| r.take8().map(f64::from_le_bytes))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(bad)?;
            acc.fields.push(FieldAcc { min, max, partials });
        }
        if !r.0.is_empty() {
            return Err(bad());
        }
        Ok(acc)
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take8(&mut self) -> Option<[u8; 8]> {
        let (h, t) = self.0.split_first_chunk::<8>()?;
        self.0 = t;
        Some(*h)
    }
    fn take1(&mut self) -> Option<u8> {
        let (h, t) = self.0.split_first()?;
        self.0 = t;
        Some(*h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(xs: &[f64]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn exact_sum_ignores_order_and_split() {
        let xs: Vec<f64> = (0..2000)
            .map(|i| {
                ((i * 7919) % 1000) as f64 * 0.01 - 3.3
                    + if i % 3 == 0 { 1e15 } else { -1e15 } * ((i % 2) as f64)
            })
            .collect();
        let mut a = FieldAcc::default();
        xs.iter().for_each(|x| a.add(*x));
        let mut b = FieldAcc::default();
        xs.iter().rev().for_each(|x| b.add(*x));
        assert_eq!(a.sum().to_bits(), b.sum().to_bits());
        // The classic: 0.1 ten times is 1.0 exactly rounded (naive: 0.9999999999999999).
        let mut c = FieldAcc::default();
        (0..10).for_each(|_| c.add(0.1));
        assert_eq!(c.sum(), 1.0);
        let mut d = FieldAcc::default();
        [1e100, 1.0, -1e100].iter().for_each(|x| d.add(*x));
        assert_eq!(d.sum(), 1.0);
    }

    #[test]
    fn state_round_trips_through_bytes_in_any_split() {
        let vals: Vec<Vec<u8>> = (0..300)
            .map(|i| value(&[i as f64 * 0.1, -(i as f64)]))
            .collect();
        let mut whole = Acc::new(2);
        vals.iter().for_each(|v| whole.add(v).unwrap());
        let mut state = Acc::new(2).encode();
        for chunk in vals.chunks(17).rev() {
            let mut a = Acc::decode(&state, 2).unwrap();
            chunk.iter().for_each(|v| a.add(v).unwrap());
            state = a.encode();
        }
        let back = Acc::decode(&state, 2).unwrap();
        assert_eq!(back.records, 300);
        assert_eq!((back.fields[1].min, back.fields[1].max), (-299.0, 0.0));
        assert_eq!(
            back.fields[0].sum().to_bits(),
            whole.fields[0].sum().to_bits()
        );
        assert!(Acc::decode(&state, 3).is_err());
        assert!(Acc::decode(&state[..state.len() - 1], 2).is_err());
        assert!(Acc::new(2).add(&value(&[1.0])).is_err());
    }
}

//! The columnar values of the aggregate contract (0.2.0's `columns`
//! interface), which the aggregate stage works with whatever contract its
//! plugin speaks: reading and building them, checking what a plugin
//! answered, and the conversions to and from 0.1.0's per-record lists.

use super::bindings::columns::{Blobs, Extracted, Groups};
use super::bindings::types;

impl Blobs {
    pub fn with_capacity(items: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(items + 1);
        offsets.push(0);
        Self { data: Vec::with_capacity(bytes), offsets }
    }
    pub fn push(&mut self, item: &[u8]) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.data.extend_from_slice(item);
        self.offsets.push(self.data.len() as u32);
    }
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
    /// Item `i`: only for blobs that passed `check` (or were built here).
    pub fn get(&self, i: usize) -> &[u8] {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
    /// Offsets that ascend and stay within `data`, so every `get` is in range.
    pub fn check(&self, what: &str) -> Result<(), String> {
        let ascending = self.offsets.windows(2).all(|w| w[0] <= w[1]);
        let within = self.offsets.last().is_none_or(|&e| e as usize <= self.data.len());
        if ascending && within {
            Ok(())
        } else {
            Err(format!("{what}: offsets out of order or past the end of the data"))
        }
    }
}

impl Default for Blobs {
    fn default() -> Self {
        Self::with_capacity(0, 0)
    }
}

impl FromIterator<Vec<u8>> for Blobs {
    fn from_iter<I: IntoIterator<Item = Vec<u8>>>(items: I) -> Self {
        let mut b = Blobs::default();
        for i in items {
            b.push(&i);
        }
        b
    }
}

impl Extracted {
    pub fn len(&self) -> usize {
        self.index.len()
    }
    /// Every column as long as the index, every input index below `n`.
    pub fn check(&self, n: usize) -> Result<(), String> {
        let k = self.index.len();
        let lens = [self.event_time_ms.len(), self.keys.len(), self.values.len()];
        if lens.iter().any(|&l| l != k) {
            return Err(format!(
                "extract returned columns of different lengths (index {k}, event times {}, keys {}, values {})",
                lens[0], lens[1], lens[2]
            ));
        }
        self.keys.check("extract's keys")?;
        self.values.check("extract's values")?;
        if let Some(i) = self.index.iter().find(|&&i| i as usize >= n) {
            return Err(format!("extract returned index {i} (batch of {n})"));
        }
        if let Some(r) = self.rejected.iter().find(|r| r.index as usize >= n) {
            return Err(format!("extract rejected index {} (batch of {n})", r.index));
        }
        Ok(())
    }

    /// 0.1.0's answer (one list per key and value) in columns.
    pub fn from_0_1(x: types::Extracted) -> Self {
        let n = x.records.len();
        let (kb, vb) = x.records.iter().fold((0, 0), |(k, v), r| (k + r.key.len(), v + r.value.len()));
        let mut out = Extracted {
            index: Vec::with_capacity(n),
            event_time_ms: Vec::with_capacity(n),
            keys: Blobs::with_capacity(n, kb),
            values: Blobs::with_capacity(n, vb),
            rejected: x.rejected,
        };
        for r in x.records {
            out.index.push(r.index);
            out.event_time_ms.push(r.event_time_ms);
            out.keys.push(&r.key);
            out.values.push(&r.value);
        }
        out
    }
}

/// Builds the `groups` of one `accumulate` call, group by group.
#[derive(Default)]
pub struct GroupsBuilder {
    g: Groups,
}

impl Default for Groups {
    fn default() -> Self {
        Groups {
            window_start_ms: Vec::new(),
            window_end_ms: Vec::new(),
            keys: Blobs::default(),
            states: Blobs::default(),
            has_state: Vec::new(),
            values: Blobs::default(),
            value_ends: Vec::new(),
        }
    }
}

impl GroupsBuilder {
    /// Starts a group; the values pushed next are its values.
    pub fn group(&mut self, start_ms: i64, end_ms: i64, key: &[u8], state: Option<&[u8]>) {
        let g = &mut self.g;
        g.window_start_ms.push(start_ms);
        g.window_end_ms.push(end_ms);
        g.keys.push(key);
        g.states.push(state.unwrap_or_default());
        g.has_state.push(state.is_some());
        g.value_ends.push(g.values.len() as u32);
    }
    pub fn value(&mut self, v: &[u8]) {
        self.g.values.push(v);
        if let Some(end) = self.g.value_ends.last_mut() {
            *end += 1;
        }
    }
    pub fn finish(self) -> Groups {
        self.g
    }
}

impl Groups {
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    /// The same groups as 0.1.0's list of groups (one list per value).
    pub fn to_0_1(&self) -> Vec<types::Group> {
        let mut from = 0usize;
        (0..self.len())
            .map(|i| {
                let to = self.value_ends[i] as usize;
                let g = types::Group {
                    window: types::Window { start_ms: self.window_start_ms[i], end_ms: self.window_end_ms[i] },
                    key: self.keys.get(i).to_vec(),
                    state: self.has_state[i].then(|| self.states.get(i).to_vec()),
                    values: (from..to).map(|v| self.values.get(v).to_vec()).collect(),
                };
                from = to;
                g
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_built_here_read_back_as_0_1_groups() {
        let mut b = GroupsBuilder::default();
        b.group(0, 10, b"a", None);
        b.value(b"1");
        b.value(b"");
        b.group(0, 10, b"b", Some(b"s"));
        b.group(10, 20, b"a", Some(b""));
        b.value(b"3");
        let g = b.finish();
        assert_eq!(g.value_ends, [2, 2, 3]);
        let old = g.to_0_1();
        let shown: Vec<_> = old.iter().map(|g| (g.window.start_ms, g.key.clone(), g.state.clone(), g.values.clone())).collect();
        assert_eq!(
            shown,
            [
                (0, b"a".to_vec(), None, vec![b"1".to_vec(), vec![]]),
                (0, b"b".to_vec(), Some(b"s".to_vec()), vec![]),
                (10, b"a".to_vec(), Some(vec![]), vec![b"3".to_vec()]),
            ]
        );
    }

    #[test]
    fn a_plugin_answer_that_breaks_the_layout_is_refused() {
        let x = Extracted::from_0_1(types::Extracted {
            records: vec![types::Keyed { index: 1, key: b"k".to_vec(), event_time_ms: 5, value: b"vv".to_vec() }],
            rejected: vec![],
        });
        assert_eq!((x.len(), x.keys.get(0), x.values.get(0)), (1, &b"k"[..], &b"vv"[..]));
        assert!(x.check(2).is_ok());
        assert!(x.check(1).unwrap_err().contains("index 1"));
        let mut short = x.clone();
        short.event_time_ms.clear();
        assert!(short.check(2).unwrap_err().contains("different lengths"));
        let mut bad = x;
        bad.values.offsets = vec![0, 9];
        assert!(bad.check(2).unwrap_err().contains("past the end"));
    }
}

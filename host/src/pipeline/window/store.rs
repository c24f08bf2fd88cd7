//! The open windows of an aggregate stage: per (window, key) the plugin's
//! accumulator (and, for session windows, the values not accumulated yet,
//! see `mod.rs`), ordered by (window end, key, window start) — the order
//! windows fire in — with a per-key index of open sessions, per key the
//! last session that fired while a record could still reach into it, and a
//! running byte count for the `state_memory` bound. Encodes to compact
//! binary blobs for the checkpoint.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::assign::Span;

/// Firing order: window end, then key, then start.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WinKey {
    pub end: i64,
    pub key: Vec<u8>,
    pub start: i64,
}

impl WinKey {
    pub fn new(span: Span, key: Vec<u8>) -> Self {
        Self {
            end: span.end,
            key,
            start: span.start,
        }
    }
    pub fn span(&self) -> Span {
        Span {
            start: self.start,
            end: self.end,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The accumulator (`None`: nothing accumulated yet).
    pub state: Option<Vec<u8>>,
    /// Session windows: extracted values waiting for the window to close.
    pub values: Vec<Vec<u8>>,
}

/// What one open (window, key) costs beyond its bytes: map node, vectors,
/// the session index (measured order of magnitude, not exact).
const ENTRY_OVERHEAD: usize = 96;

fn cost(k: &WinKey, e: &Entry) -> usize {
    ENTRY_OVERHEAD
        + k.key.len()
        + e.state.as_ref().map_or(0, Vec::len)
        + e.values.iter().map(|v| v.len() + 24).sum::<usize>()
}

#[derive(Debug, Default)]
pub struct Store {
    entries: BTreeMap<WinKey, Entry>,
    /// Session windows only: key → its open sessions.
    sessions: HashMap<Vec<u8>, Vec<Span>>,
    /// Session windows only: key → the latest-ending session of it that has
    /// fired, while a record that is not late by its own session's end could
    /// still reach into it (see `remember_fired`).
    fired: HashMap<Vec<u8>, Span>,
    /// The remembered sessions as they fired (so in end order), oldest
    /// first: what `remember_fired` forgets from.
    fired_order: VecDeque<(i64, Vec<u8>)>,
    bytes: usize,
}

/// What one remembered fired session costs beyond its key (twice: in the
/// map and in the firing order).
const FIRED_OVERHEAD: usize = 64;

impl Store {
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    pub fn get(&self, k: &WinKey) -> Option<&Entry> {
        self.entries.get(k)
    }
    pub fn sessions_of(&self, key: &[u8]) -> &[Span] {
        self.sessions.get(key).map_or(&[], Vec::as_slice)
    }

    pub fn put(&mut self, k: WinKey, e: Entry, session: bool) {
        self.bytes += cost(&k, &e);
        if session {
            let spans = self.sessions.entry(k.key.clone()).or_default();
            if !spans.contains(&k.span()) {
                spans.push(k.span());
            }
        }
        if let Some(old) = self.entries.insert(k.clone(), e) {
            self.bytes -= cost(&k, &old);
        }
    }

    pub fn remove(&mut self, k: &WinKey) -> Option<Entry> {
        let e = self.entries.remove(k)?;
        self.bytes -= cost(k, &e);
        if let Some(spans) = self.sessions.get_mut(&k.key) {
            spans.retain(|s| *s != k.span());
            if spans.is_empty() {
                self.sessions.remove(&k.key);
            }
        }
        Some(e)
    }

    /// Remove and return every window with `end <= up_to`, in firing order.
    pub fn take_through(&mut self, up_to: i64) -> Vec<(WinKey, Entry)> {
        let Some(first) = self.entries.keys().next() else {
            return Vec::new();
        };
        if first.end > up_to {
            return Vec::new();
        }
        let rest = match up_to.checked_add(1) {
            Some(bound) => self.entries.split_off(&WinKey {
                end: bound,
                key: Vec::new(),
                start: i64::MIN,
            }),
            None => BTreeMap::new(),
        };
        let fired = std::mem::replace(&mut self.entries, rest);
        for (k, e) in &fired {
            self.bytes -= cost(k, e);
            if let Some(spans) = self.sessions.get_mut(&k.key) {
                spans.retain(|s| *s != k.span());
                if spans.is_empty() {
                    self.sessions.remove(&k.key);
                }
            }
        }
        fired.into_iter().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&WinKey, &Entry)> {
        self.entries.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&WinKey, &mut Entry)> {
        self.entries.iter_mut()
    }

    /// Recompute the byte count after states were replaced in place (migration).
    pub fn recount(&mut self) {
        self.bytes = self.entries.iter().map(|(k, e)| cost(k, e)).sum::<usize>()
            + self.fired.keys().chain(self.fired_order.iter().map(|(_, k)| k)).map(|k| k.len() + FIRED_OVERHEAD).sum::<usize>();
    }

    /// The latest-ending fired session of `key` still remembered.
    pub fn fired_of(&self, key: &[u8]) -> Option<Span> {
        self.fired.get(key).copied()
    }

    /// Session windows: remember the sessions that just fired (per key the
    /// latest-ending one) and forget those no record can reach any more.
    /// A record at `t` reaches a session ending at `end` only when
    /// `t < end`; its own session `[t, t + gap)` then ends before
    /// `end + gap`, so once `end + gap <= closed` (closed: the watermark
    /// less the allowed lateness, which only grows) such a record is late
    /// by its own session's end and the fired one need not be known.
    /// Sessions fire in end order, so forgetting walks the oldest first and
    /// stops at the first one still reachable: no pass over every key.
    pub fn remember_fired(&mut self, fired: impl IntoIterator<Item = WinKey>, gap: i64, closed: i64) {
        for k in fired {
            let span = k.span();
            match self.fired.get_mut(&k.key) {
                Some(s) if s.end >= span.end => continue,
                Some(s) => *s = span,
                None => {
                    self.bytes += k.key.len() + FIRED_OVERHEAD;
                    self.fired.insert(k.key.clone(), span);
                }
            }
            self.bytes += k.key.len() + FIRED_OVERHEAD;
            self.fired_order.push_back((span.end, k.key));
        }
        while let Some((end, _)) = self.fired_order.front() {
            if end.saturating_add(gap) > closed {
                break;
            }
            let (end, key) = self.fired_order.pop_front().expect("front exists");
            self.bytes -= key.len() + FIRED_OVERHEAD;
            // A later session of the key may have fired since: it stays.
            if self.fired.get(&key).is_some_and(|s| s.end == end) {
                self.fired.remove(&key);
                self.bytes -= key.len() + FIRED_OVERHEAD;
            }
        }
    }

    /// The remembered fired sessions: start, end (i64 LE) and key (u32 LE
    /// length + bytes) of each, in the order they fired.
    pub fn encode_fired(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (end, key) in &self.fired_order {
            let Some(s) = self.fired.get(key).filter(|s| s.end == *end) else { continue };
            out.extend_from_slice(&s.start.to_le_bytes());
            out.extend_from_slice(&s.end.to_le_bytes());
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
        }
        out
    }

    pub fn decode_fired(&mut self, mut b: &[u8]) -> Result<(), String> {
        while !b.is_empty() {
            let (start, end) = (codec::i64_(&mut b)?, codec::i64_(&mut b)?);
            let key = codec::bytes(&mut b)?;
            self.remember_fired([WinKey { end, key, start }], 0, i64::MIN);
        }
        Ok(())
    }

    /// Binary encoding: per entry start, end (i64 LE), key, state (flag +
    /// bytes), values (count + each); lengths as u32 LE.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes);
        let bytes = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        };
        for (k, e) in &self.entries {
            out.extend_from_slice(&k.start.to_le_bytes());
            out.extend_from_slice(&k.end.to_le_bytes());
            bytes(&mut out, &k.key);
            match &e.state {
                Some(s) => {
                    out.push(1);
                    bytes(&mut out, s);
                }
                None => out.push(0),
            }
            out.extend_from_slice(&(e.values.len() as u32).to_le_bytes());
            for v in &e.values {
                bytes(&mut out, v);
            }
        }
        out
    }

    pub fn decode(mut b: &[u8], session: bool) -> Result<Self, String> {
        use codec::{bytes, i64_, take, u32_};
        let mut s = Store::default();
        while !b.is_empty() {
            let (start, end) = (i64_(&mut b)?, i64_(&mut b)?);
            let key = bytes(&mut b)?;
            let state = match take(&mut b, 1)?[0] {
                0 => None,
                _ => Some(bytes(&mut b)?),
            };
            let n = u32_(&mut b)?;
            let values = (0..n).map(|_| bytes(&mut b)).collect::<Result<_, _>>()?;
            s.put(WinKey { end, key, start }, Entry { state, values }, session);
        }
        Ok(s)
    }
}

/// Reading the blobs back; every read checks the length first.
mod codec {
    pub fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if b.len() < n {
            return Err("window state is truncated".into());
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h)
    }
    pub fn u32_(b: &mut &[u8]) -> Result<usize, String> {
        Ok(u32::from_le_bytes(take(b, 4)?.try_into().expect("4 bytes")) as usize)
    }
    pub fn i64_(b: &mut &[u8]) -> Result<i64, String> {
        Ok(i64::from_le_bytes(take(b, 8)?.try_into().expect("8 bytes")))
    }
    pub fn bytes(b: &mut &[u8]) -> Result<Vec<u8>, String> {
        let n = u32_(b)?;
        Ok(take(b, n)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(start: i64, end: i64, key: &str) -> WinKey {
        WinKey {
            end,
            key: key.into(),
            start,
        }
    }

    #[test]
    fn windows_fire_in_end_then_key_order_and_only_through_the_bound() {
        let mut s = Store::default();
        for (st, en, key) in [
            (60, 120, "b"),
            (0, 60, "b"),
            (0, 60, "a"),
            (60, 120, "a"),
            (120, 180, "a"),
        ] {
            s.put(
                k(st, en, key),
                Entry {
                    state: Some(vec![1]),
                    values: vec![],
                },
                false,
            );
        }
        assert!(s.take_through(59).is_empty());
        let fired: Vec<_> = s
            .take_through(120)
            .into_iter()
            .map(|(k, _)| (k.start, String::from_utf8(k.key).unwrap()))
            .collect();
        assert_eq!(
            fired,
            [
                (0, "a".into()),
                (0, "b".into()),
                (60, "a".into()),
                (60, "b".into())
            ]
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s.take_through(i64::MAX).len(), 1);
        assert_eq!(
            (s.len(), s.bytes()),
            (0, 0),
            "the byte count returns to zero"
        );
    }

    #[test]
    fn fired_sessions_are_remembered_counted_encoded_and_forgotten() {
        let mut s = Store::default();
        s.remember_fired([k(10, 20, "b"), k(0, 30, "a"), k(40, 70, "a")], 30, 50);
        assert_eq!(s.fired_of(b"a"), Some(Span { start: 40, end: 70 }), "the latest-ending one");
        assert_eq!(s.fired_of(b"b"), None, "20 + 30 <= 50: nothing can reach it");
        assert!(s.bytes() > 0);
        let mut d = Store::default();
        d.decode_fired(&s.encode_fired()).unwrap();
        assert_eq!((d.fired_of(b"a"), d.fired_of(b"b")), (s.fired_of(b"a"), None));
        assert_eq!(d.encode_fired(), s.encode_fired(), "the superseded (0, 30) of a is not written");
        assert!(d.decode_fired(&s.encode_fired()[..9]).is_err());
        s.remember_fired([], 30, 100);
        assert_eq!((s.fired_of(b"a"), s.bytes()), (None, 0));
    }

    #[test]
    fn encoding_round_trips_with_the_session_index() {
        let mut s = Store::default();
        s.put(
            k(0, 30, "a"),
            Entry {
                state: None,
                values: vec![b"x".to_vec(), vec![]],
            },
            true,
        );
        s.put(
            k(100, 130, "a"),
            Entry {
                state: Some(vec![]),
                values: vec![],
            },
            true,
        );
        s.put(
            k(5, 35, "b"),
            Entry {
                state: Some(vec![9; 8]),
                values: vec![],
            },
            true,
        );
        let d = Store::decode(&s.encode(), true).unwrap();
        assert_eq!(d.iter().collect::<Vec<_>>(), s.iter().collect::<Vec<_>>());
        assert_eq!(d.bytes(), s.bytes());
        assert_eq!(
            d.sessions_of(b"a"),
            &[
                Span { start: 0, end: 30 },
                Span {
                    start: 100,
                    end: 130
                }
            ]
        );
        assert!(Store::decode(&s.encode()[..10], true).is_err());
    }
}

//! The aggregate contract: windowed aggregation where the host owns windows,
//! watermarks and state, and the plugin is pure (which is what makes state
//! checkpointable and hot swap safe).
//!
//! `export_aggregate!` exports contract 0.2.0 (columns: a call carries a few
//! flat buffers whatever the number of records); `export_aggregate_0_1!`
//! exports the same plugin as 0.1.0, for hosts that only speak that. The
//! trait is the same for both: what differs is only the glue below.

use std::ops::Range;

use crate::bindings::aggregator::sluice::plugin0_2_0::columns;
use crate::bindings::transformer::sluice::plugin::types as v01_types;
use crate::instance::{self, with};
use crate::{Batch, Config, Format, Info, Rejection, Window};

pub use columns::Blobs;

/// An aggregate plugin. Per input batch the host calls `extract` (key, event
/// time and value per record), groups the values by (window, key), and calls
/// `accumulate` once per group with its prior state (all groups of a batch
/// in one call across the boundary); when windows close it calls `finish`
/// per (window, key) to get the output record (all windows closing together
/// in one call across the boundary).
pub trait Aggregate: Sized + 'static {
    const TAKES: Format;
    /// Format of `finish` output records (JSON documents).
    const EMITS: Format = Format::Json;
    /// Version of the state encoding; bump it when it changes and implement `migrate`.
    const STATE_VERSION: u32 = 0;

    fn init(config: Config) -> Result<Self, String>;
    /// Push each record's key, event time and value into `out`, or reject it there.
    fn extract(&mut self, input: Batch, out: &mut Extracted) -> Result<(), String>;
    /// The new state of one group: its prior state and this batch's values.
    fn accumulate(&mut self, group: Group<'_>) -> Result<Vec<u8>, String>;
    /// The output record (one JSON document) of a closed window, or none.
    fn finish(&mut self, window: Window, key: &[u8], state: &[u8]) -> Option<Vec<u8>>;
    /// Re-encodes state written under an older `STATE_VERSION`.
    fn migrate(&mut self, from_state_version: u32, state: Vec<u8>) -> Result<Vec<u8>, String> {
        if from_state_version == Self::STATE_VERSION {
            Ok(state)
        } else {
            Err(format!("cannot migrate state from version {from_state_version} to {}", Self::STATE_VERSION))
        }
    }
}

impl Blobs {
    pub fn new() -> Self {
        Self { data: Vec::new(), offsets: vec![0] }
    }
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
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Item `i`; panics when out of range or when the offsets are not ascending.
    pub fn get(&self, i: usize) -> &[u8] {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
    pub fn iter(&self) -> Values<'_> {
        Values::new(self, 0..self.len())
    }
    /// Offsets that ascend and stay within `data`, so every `get` is in range.
    fn in_range(&self) -> bool {
        self.offsets.windows(2).all(|w| w[0] <= w[1]) && self.offsets.last().is_none_or(|&e| e as usize <= self.data.len())
    }
}

impl Default for Blobs {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: AsRef<[u8]>> FromIterator<T> for Blobs {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut b = Blobs::new();
        for i in items {
            b.push(i.as_ref());
        }
        b
    }
}

/// Items `range` of a [`Blobs`], in order.
#[derive(Clone)]
pub struct Values<'a> {
    blobs: &'a Blobs,
    range: Range<usize>,
}

impl<'a> Values<'a> {
    pub fn new(blobs: &'a Blobs, range: Range<usize>) -> Self {
        Self { blobs, range }
    }
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let i = self.range.next()?;
        Some(self.blobs.get(i))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl ExactSizeIterator for Values<'_> {}

/// One (window, key) of an `accumulate` call.
#[derive(Clone)]
pub struct Group<'a> {
    pub window: Window,
    pub key: &'a [u8],
    /// `None` the first time the key is seen in the window.
    pub state: Option<&'a [u8]>,
    /// This batch's values for the group, in input order.
    pub values: Values<'a>,
}

/// What `extract` found: per record kept its input index, grouping key,
/// event time and value; and the records refused.
#[derive(Debug, Default, Clone)]
pub struct Extracted {
    index: Vec<u32>,
    event_time_ms: Vec<i64>,
    keys: Blobs,
    values: Blobs,
    rejected: Vec<Rejection>,
}

/// One record of [`Extracted`], as `Extracted::records` reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyed<'a> {
    pub index: u32,
    pub key: &'a [u8],
    pub event_time_ms: i64,
    pub value: &'a [u8],
}

impl Extracted {
    pub fn new() -> Self {
        Self::default()
    }
    /// Room for `records` records with keys and values of about these sizes.
    pub fn with_capacity(records: usize, key_bytes: usize, value_bytes: usize) -> Self {
        Self {
            index: Vec::with_capacity(records),
            event_time_ms: Vec::with_capacity(records),
            keys: Blobs::with_capacity(records, records * key_bytes),
            values: Blobs::with_capacity(records, records * value_bytes),
            rejected: Vec::new(),
        }
    }
    /// Record `index` of the input goes to the group `key` at `event_time_ms` with `value`.
    pub fn push(&mut self, index: u32, key: &[u8], event_time_ms: i64, value: &[u8]) {
        self.index.push(index);
        self.event_time_ms.push(event_time_ms);
        self.keys.push(key);
        self.values.push(value);
    }
    /// Record `index` of the input goes to the dead-letter queue with `code` and `message`.
    pub fn reject(&mut self, index: u32, code: impl Into<String>, message: impl Into<String>) {
        self.rejected.push(Rejection::new(index, code, message));
    }
    /// Records kept.
    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
    pub fn records(&self) -> impl Iterator<Item = Keyed<'_>> {
        (0..self.len()).map(|i| Keyed {
            index: self.index[i],
            key: self.keys.get(i),
            event_time_ms: self.event_time_ms[i],
            value: self.values.get(i),
        })
    }
    pub fn rejected(&self) -> &[Rejection] {
        &self.rejected
    }

    fn into_columns(self) -> columns::Extracted {
        columns::Extracted {
            index: self.index,
            event_time_ms: self.event_time_ms,
            keys: self.keys,
            values: self.values,
            rejected: self.rejected,
        }
    }

    fn into_0_1(self) -> v01_types::Extracted {
        let records = self
            .records()
            .map(|r| v01_types::Keyed { index: r.index, key: r.key.to_vec(), event_time_ms: r.event_time_ms, value: r.value.to_vec() })
            .collect();
        v01_types::Extracted { records, rejected: self.rejected }
    }
}

fn extract<T: Aggregate>(input: Batch) -> Result<Extracted, String> {
    instance::check_format(&input, T::TAKES)?;
    with::<T, _>(|p| {
        let mut out = Extracted::new();
        p.extract(input, &mut out)?;
        Ok(out)
    })
}

/// A group's values out of range or offsets that do not ascend are a host
/// bug; say so instead of panicking in the guest.
fn check_groups(g: &columns::Groups) -> Result<(), String> {
    let n = g.window_start_ms.len();
    let same = [g.window_end_ms.len(), g.keys.len(), g.states.len(), g.has_state.len(), g.value_ends.len()];
    if same.iter().any(|&l| l != n) {
        return Err(format!("malformed groups from the host: column lengths {n} and {same:?}"));
    }
    for b in [&g.keys, &g.states, &g.values] {
        if !b.in_range() {
            return Err("malformed groups from the host: offsets out of order or out of range".into());
        }
    }
    if g.value_ends.windows(2).any(|w| w[0] > w[1]) || g.value_ends.last().is_some_and(|&e| e as usize > g.values.len()) {
        return Err("malformed groups from the host: value ends out of order or out of range".into());
    }
    Ok(())
}

#[doc(hidden)]
pub fn __describe<T: Aggregate>(name: &str, version: &str) -> Info {
    instance::info(name, version, T::STATE_VERSION, T::TAKES, T::EMITS)
}

#[doc(hidden)]
pub fn __init<T: Aggregate>(config: String) -> Result<(), String> {
    instance::install(T::init(Config::new(config))?);
    Ok(())
}

#[doc(hidden)]
pub fn __extract<T: Aggregate>(input: Batch) -> Result<columns::Extracted, String> {
    extract::<T>(input).map(Extracted::into_columns)
}

#[doc(hidden)]
pub fn __accumulate<T: Aggregate>(groups: columns::Groups) -> Result<Blobs, String> {
    check_groups(&groups)?;
    with::<T, _>(|p| {
        let mut out = Blobs::with_capacity(groups.keys.len(), 0);
        let mut from = 0;
        for i in 0..groups.keys.len() {
            let to = groups.value_ends[i] as usize;
            let g = Group {
                window: Window { start_ms: groups.window_start_ms[i], end_ms: groups.window_end_ms[i] },
                key: groups.keys.get(i),
                state: groups.has_state[i].then(|| groups.states.get(i)),
                values: Values::new(&groups.values, from..to),
            };
            out.push(&p.accumulate(g)?);
            from = to;
        }
        Ok(out)
    })
}

#[doc(hidden)]
pub fn __finish<T: Aggregate>(closed: columns::Closed) -> Result<columns::Finished, String> {
    let n = closed.window_start_ms.len();
    if [closed.window_end_ms.len(), closed.keys.len(), closed.states.len()].iter().any(|&l| l != n) {
        return Err("malformed closed windows from the host: columns of different lengths".into());
    }
    for b in [&closed.keys, &closed.states] {
        if !b.in_range() {
            return Err("malformed closed windows from the host: offsets out of order or out of range".into());
        }
    }
    // Windows of the same keys close together: state reads and writes per
    // window are served from one per-call cache (see `state`).
    crate::state::in_call(|| with::<T, _>(|p| {
        let mut out = columns::Finished { origin: Vec::with_capacity(n), docs: Blobs::with_capacity(n, n * 256) };
        for i in 0..n {
            let w = Window { start_ms: closed.window_start_ms[i], end_ms: closed.window_end_ms[i] };
            if let Some(doc) = p.finish(w, closed.keys.get(i), closed.states.get(i)) {
                out.origin.push(i as u32);
                out.docs.push(&doc);
            }
        }
        Ok(out)
    }))
}

#[doc(hidden)]
pub fn __migrate<T: Aggregate>(from: u32, states: Blobs) -> Result<Blobs, String> {
    with::<T, _>(|p| {
        let mut out = Blobs::with_capacity(states.len(), states.data.len());
        for s in states.iter() {
            out.push(&p.migrate(from, s.to_vec())?);
        }
        Ok(out)
    })
}

#[doc(hidden)]
pub fn __finish_0_1<T: Aggregate>(window: Window, key: Vec<u8>, state: Vec<u8>) -> Option<Vec<u8>> {
    with::<T, _>(|p| Ok(p.finish(window, &key, &state))).ok().flatten()
}

#[doc(hidden)]
pub fn __migrate_0_1<T: Aggregate>(from: u32, state: Vec<u8>) -> Result<Vec<u8>, String> {
    with::<T, _>(|p| p.migrate(from, state))
}

#[doc(hidden)]
pub fn __extract_0_1<T: Aggregate>(input: Batch) -> Result<v01_types::Extracted, String> {
    extract::<T>(input).map(Extracted::into_0_1)
}

#[doc(hidden)]
pub fn __accumulate_0_1<T: Aggregate>(groups: Vec<v01_types::Group>) -> Result<Vec<Vec<u8>>, String> {
    with::<T, _>(|p| {
        groups
            .iter()
            .map(|g| {
                let values: Blobs = g.values.iter().collect();
                p.accumulate(Group { window: g.window, key: &g.key, state: g.state.as_deref(), values: values.iter() })
            })
            .collect()
    })
}

/// `describe` and `init` of either contract version's `Guest` impl.
#[doc(hidden)]
#[macro_export]
macro_rules! __aggregate_lifecycle {
    ($ty:ty) => {
        fn describe() -> $crate::Info {
            $crate::aggregate::__describe::<$ty>(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
        }
        fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
            $crate::aggregate::__init::<$ty>(config)
        }
    };
}

/// Exports an [`Aggregate`] implementation as the component's `aggregate`
/// interface, contract 0.2.0 (the `aggregator` world).
#[macro_export]
macro_rules! export_aggregate {
    ($ty:ty) => {
        const _: () = {
            struct __SluiceAggregate;
            impl $crate::bindings::aggregator::exports::sluice::plugin0_2_0::aggregate::Guest for __SluiceAggregate {
                $crate::__aggregate_lifecycle!($ty);
                fn extract(
                    input: $crate::Batch,
                ) -> ::std::result::Result<$crate::bindings::aggregator::sluice::plugin0_2_0::columns::Extracted, ::std::string::String> {
                    $crate::aggregate::__extract::<$ty>(input)
                }
                fn accumulate(
                    groups: $crate::bindings::aggregator::sluice::plugin0_2_0::columns::Groups,
                ) -> ::std::result::Result<$crate::aggregate::Blobs, ::std::string::String> {
                    $crate::aggregate::__accumulate::<$ty>(groups)
                }
                fn finish(
                    closed: $crate::bindings::aggregator::sluice::plugin0_2_0::columns::Closed,
                ) -> ::std::result::Result<
                    $crate::bindings::aggregator::sluice::plugin0_2_0::columns::Finished,
                    ::std::string::String,
                > {
                    $crate::aggregate::__finish::<$ty>(closed)
                }
                fn migrate(
                    from_state_version: u32,
                    states: $crate::aggregate::Blobs,
                ) -> ::std::result::Result<$crate::aggregate::Blobs, ::std::string::String> {
                    $crate::aggregate::__migrate::<$ty>(from_state_version, states)
                }
            }
            $crate::bindings::aggregator::__export_aggregator!(
                __SluiceAggregate with_types_in $crate::bindings::aggregator
            );
        };
    };
}

/// Exports an [`Aggregate`] implementation as contract 0.1.0's `aggregate`
/// interface (one list per record and per value), for hosts that do not
/// speak 0.2.0. Slower across the boundary; the plugin code is the same.
#[macro_export]
macro_rules! export_aggregate_0_1 {
    ($ty:ty) => {
        const _: () = {
            struct __SluiceAggregate01;
            impl $crate::bindings::aggregator_0_1::exports::sluice::plugin::aggregate::Guest for __SluiceAggregate01 {
                $crate::__aggregate_lifecycle!($ty);
                fn extract(
                    input: $crate::Batch,
                ) -> ::std::result::Result<
                    $crate::bindings::aggregator_0_1::exports::sluice::plugin::aggregate::Extracted,
                    ::std::string::String,
                > {
                    $crate::aggregate::__extract_0_1::<$ty>(input)
                }
                fn accumulate(
                    groups: ::std::vec::Vec<$crate::bindings::aggregator_0_1::exports::sluice::plugin::aggregate::Group>,
                ) -> ::std::result::Result<::std::vec::Vec<::std::vec::Vec<u8>>, ::std::string::String> {
                    $crate::aggregate::__accumulate_0_1::<$ty>(groups)
                }
                fn finish(
                    window: $crate::Window,
                    key: ::std::vec::Vec<u8>,
                    state: ::std::vec::Vec<u8>,
                ) -> ::std::option::Option<::std::vec::Vec<u8>> {
                    $crate::aggregate::__finish_0_1::<$ty>(window, key, state)
                }
                fn migrate(
                    from_state_version: u32,
                    state: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::aggregate::__migrate_0_1::<$ty>(from_state_version, state)
                }
            }
            $crate::bindings::aggregator_0_1::__export_aggregator_0_1!(
                __SluiceAggregate01 with_types_in $crate::bindings::aggregator_0_1
            );
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_and_extracted_read_back_what_was_pushed() {
        let b: Blobs = ["ab", "", "c"].into_iter().collect();
        assert_eq!((b.len(), b.get(0), b.get(1), b.get(2)), (3, &b"ab"[..], &b""[..], &b"c"[..]));
        assert_eq!(Values::new(&b, 1..3).collect::<Vec<_>>(), [&b""[..], b"c"]);
        let mut x = Extracted::new();
        x.push(3, b"k", 7, b"v");
        x.reject(4, "bad", "no");
        let r: Vec<_> = x.records().collect();
        assert_eq!(r, [Keyed { index: 3, key: b"k", event_time_ms: 7, value: b"v" }]);
        assert_eq!(x.rejected()[0].index, 4);
        let v01 = x.clone().into_0_1();
        assert_eq!((v01.records.len(), v01.records[0].key.as_slice()), (1, &b"k"[..]));
    }

    #[test]
    fn malformed_groups_are_an_error_not_a_panic() {
        let mut g = columns::Groups {
            window_start_ms: vec![0],
            window_end_ms: vec![10],
            keys: ["k"].into_iter().collect(),
            states: [""].into_iter().collect(),
            has_state: vec![false],
            values: ["a", "b"].into_iter().collect(),
            value_ends: vec![2],
        };
        assert!(check_groups(&g).is_ok());
        g.value_ends = vec![3];
        assert!(check_groups(&g).is_err());
        g.value_ends = vec![2];
        g.values.offsets = vec![0, 2, 1];
        assert!(check_groups(&g).is_err());
    }
}

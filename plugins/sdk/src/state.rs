//! Keyed state owned and checkpointed by the host (transformer and aggregator
//! worlds; both import the same interface), scoped to the calling stage, not
//! to a window. Writes take effect only if the call that made them succeeds.
//!
//! Batch your keys: one call per batch, not per record. `finish` of an
//! aggregate is the exception made easy: it runs per window, and within the
//! host's one call for all closing windows the SDK keeps what was read and
//! written (a key is read from the host at most once, the writes go in one
//! `put-many` at the end). Semantics stay the host's: a call sees its own
//! writes, and they count only if the call succeeds.
//! Natively (unit tests) an in-memory map stands in for the host.

use std::cell::RefCell;
use std::collections::HashMap;

#[cfg(target_arch = "wasm32")]
use crate::bindings::transformer::sluice::plugin::state as host;

/// What the current call read and wrote: value, and whether it was written.
type Call = HashMap<Vec<u8>, (Option<Vec<u8>>, bool)>;

thread_local! {
    // Wasm guests are single-threaded: one call at a time.
    static CALL: RefCell<Option<Call>> = const { RefCell::new(None) };
}

/// Runs one export call with the per-call cache, then hands the call's
/// writes to the host.
pub(crate) fn in_call<R>(f: impl FnOnce() -> R) -> R {
    CALL.with(|c| *c.borrow_mut() = Some(Call::default()));
    let r = f();
    if let Some(call) = CALL.with(|c| c.borrow_mut().take()) {
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = call
            .into_iter()
            .filter_map(|(k, (v, written))| v.filter(|_| written).map(|v| (k, v)))
            .collect();
        if !entries.is_empty() {
            entries.sort_unstable();
            host_put(&entries);
        }
    }
    r
}

/// The values of `keys`, in order; `None` for keys never put.
pub fn get_many(keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
    CALL.with(|c| {
        let mut c = c.borrow_mut();
        let Some(call) = c.as_mut() else { return host_get(keys) };
        let missing: Vec<Vec<u8>> = keys.iter().filter(|k| !call.contains_key(*k)).cloned().collect();
        if !missing.is_empty() {
            let values = host_get(&missing);
            call.extend(missing.into_iter().zip(values).map(|(k, v)| (k, (v, false))));
        }
        keys.iter().map(|k| call.get(k).and_then(|e| e.0.clone())).collect()
    })
}

/// Stores `entries`; visible to later `get_many` calls and checkpointed with the source positions.
pub fn put_many(entries: &[(Vec<u8>, Vec<u8>)]) {
    CALL.with(|c| {
        let mut c = c.borrow_mut();
        let Some(call) = c.as_mut() else { return host_put(entries) };
        for (k, v) in entries {
            call.insert(k.clone(), (Some(v.clone()), true));
        }
    })
}

fn host_get(keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
    #[cfg(target_arch = "wasm32")]
    return host::get_many(keys);
    #[cfg(not(target_arch = "wasm32"))]
    native::MAP.with(|m| keys.iter().map(|k| m.borrow().get(k).cloned()).collect())
}

fn host_put(entries: &[(Vec<u8>, Vec<u8>)]) {
    #[cfg(target_arch = "wasm32")]
    host::put_many(entries);
    #[cfg(not(target_arch = "wasm32"))]
    native::MAP.with(|m| m.borrow_mut().extend(entries.iter().cloned()));
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        pub static MAP: RefCell<HashMap<Vec<u8>, Vec<u8>>> = RefCell::new(HashMap::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_reads_its_own_writes_and_hands_them_over_once_at_the_end() {
        put_many(&[(b"a".to_vec(), b"1".to_vec())]);
        in_call(|| {
            assert_eq!(get_many(&[b"a".to_vec(), b"b".to_vec()]), [Some(b"1".to_vec()), None]);
            put_many(&[(b"b".to_vec(), b"2".to_vec())]);
            put_many(&[(b"b".to_vec(), b"3".to_vec()), (b"a".to_vec(), b"4".to_vec())]);
            assert_eq!(get_many(&[b"b".to_vec(), b"a".to_vec()]), [Some(b"3".to_vec()), Some(b"4".to_vec())]);
            // Not handed over yet.
            assert_eq!(host_get(&[b"b".to_vec()]), [None]);
        });
        assert_eq!(get_many(&[b"a".to_vec(), b"b".to_vec()]), [Some(b"4".to_vec()), Some(b"3".to_vec())]);
    }
}

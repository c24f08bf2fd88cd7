//! Keyed state owned and checkpointed by the host (transformer and aggregator
//! worlds; both import the same interface), scoped to the calling stage, not
//! to a window. Writes take effect only if the call that made them succeeds. Batch your keys: one call per batch, not per record.
//! Natively (unit tests) an in-memory map stands in for the host.

#[cfg(target_arch = "wasm32")]
use crate::bindings::transformer::sluice::plugin::state as host;

/// The values of `keys`, in order; `None` for keys never put.
pub fn get_many(keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
    #[cfg(target_arch = "wasm32")]
    return host::get_many(keys);
    #[cfg(not(target_arch = "wasm32"))]
    native::MAP.with(|m| keys.iter().map(|k| m.borrow().get(k).cloned()).collect())
}

/// Stores `entries`; visible to later `get_many` calls and checkpointed with the source positions.
pub fn put_many(entries: &[(Vec<u8>, Vec<u8>)]) {
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

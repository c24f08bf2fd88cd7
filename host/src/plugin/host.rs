//! What a plugin instance sees of the host: the store data behind the `log`
//! and `state` imports, the memory limiter, and a WASI context that grants
//! nothing unless the pipeline says so.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::transformer::sluice::plugin::{log, state};
use super::bindings::{aggregator, transformer};
use super::error::PluginError;
use crate::config::GrantsSpec;

/// Keyed state of one stage, shared by its successive instances (a rebuilt or
/// hot-swapped instance keeps it) and snapshotted into checkpoints. Only
/// committed writes of successful calls are in it (see `StateWrites`).
pub type StateMap = Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>;

/// The `put-many` writes of one call, held back from the stage's state until
/// the call is known to have succeeded: a failed call's writes must not be
/// seen by its retry, by the bisection that follows, or by the checkpoint
/// (a dedupe plugin would otherwise drop the records of its own retry).
#[derive(Debug, Default)]
#[must_use = "a call's state writes take effect only when committed"]
pub struct StateWrites(BTreeMap<Vec<u8>, Vec<u8>>);

impl StateWrites {
    /// Apply the writes to the stage's state.
    pub fn commit(self, state: &StateMap) {
        if !self.0.is_empty() {
            state.lock().expect("state lock").extend(self.0);
        }
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Add the writes of a later call of the same unit of work (they win).
    pub fn extend(&mut self, later: StateWrites) {
        self.0.extend(later.0);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemLimiter,
    pub stage: Arc<str>,
    pub plugin: Arc<str>,
    state: StateMap,
    /// Writes of the call in progress; reads see them before `state`.
    writes: StateWrites,
    /// The guest's stderr (panic messages), to put in trap errors.
    pub stderr: MemoryOutputPipe,
    log_window: (Instant, u32),
}

impl HostState {
    pub fn new(stage: Arc<str>, plugin: Arc<str>, memory: u64, grants: &GrantsSpec, state: StateMap) -> Result<Self, PluginError> {
        let stderr = MemoryOutputPipe::new(64 * 1024);
        let mut b = WasiCtxBuilder::new();
        // Deny by default: no preopens, no env, no args, no sockets, no name lookup.
        b.stderr(stderr.clone()).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        for name in &grants.env {
            if let Ok(v) = std::env::var(name) {
                b.env(name, v);
            }
        }
        for d in &grants.dirs {
            b.preopened_dir(&d.host, &d.guest, FsPerms::ReadOnly).map_err(|e| PluginError::Load {
                plugin: plugin.to_string(),
                message: format!("cannot grant directory {}: {e}", d.host),
            })?;
        }
        if !grants.network.is_none() {
            // Every socket address the plugin uses goes through the grant's check.
            b.allow_tcp(true).allow_udp(true).allow_ip_name_lookup(grants.network.allows_lookup());
            b.socket_addr_check(grants.network.checker());
        }
        Ok(Self {
            wasi: b.build(),
            table: ResourceTable::new(),
            limiter: MemLimiter { max: memory as usize, hit: false },
            stage,
            plugin,
            state,
            writes: StateWrites::default(),
            stderr,
            log_window: (Instant::now(), 0),
        })
    }

    /// The state writes of the call that just returned (the buffer is empty
    /// afterwards): commit them if the call succeeded, drop them otherwise.
    pub fn take_writes(&mut self) -> StateWrites {
        std::mem::take(&mut self.writes)
    }

    /// What the guest said before it died: a Rust panic message (its
    /// "panicked at" line and the message after it), else its last line.
    pub fn last_stderr_line(&self) -> Option<String> {
        let c = self.stderr.contents();
        let text = String::from_utf8_lossy(&c);
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if let Some(i) = lines.iter().rposition(|l| l.contains("panicked at")) {
            let msg = lines.get(i + 1).filter(|l| !l.starts_with("note:")).map_or(String::new(), |m| format!(": {m}"));
            return Some(format!("{}{msg}", lines[i]));
        }
        lines.last().map(|l| l.to_string())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Caps linear memory per instance. Growth past the cap fails (the guest
/// sees an allocation failure, usually an abort) and `hit` tells the host why.
pub struct MemLimiter {
    pub max: usize,
    pub hit: bool,
}

impl ResourceLimiter for MemLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }
    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Log lines per second a plugin may emit; the rest are counted and dropped
/// so a chatty plugin cannot flood the host's logs.
const LOG_PER_SEC: u32 = 100;

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let now = Instant::now();
        if now.duration_since(self.log_window.0).as_secs() >= 1 {
            if self.log_window.1 > LOG_PER_SEC {
                tracing::warn!(stage = %self.stage, plugin = %self.plugin, dropped = self.log_window.1 - LOG_PER_SEC, "plugin log lines dropped (rate limit)");
            }
            self.log_window = (now, 0);
        }
        self.log_window.1 += 1;
        if self.log_window.1 > LOG_PER_SEC {
            return;
        }
        let (stage, plugin) = (&*self.stage, &*self.plugin);
        match level {
            log::Level::Trace => tracing::trace!(stage, plugin, "{message}"),
            log::Level::Debug => tracing::debug!(stage, plugin, "{message}"),
            log::Level::Info => tracing::info!(stage, plugin, "{message}"),
            log::Level::Warn => tracing::warn!(stage, plugin, "{message}"),
            log::Level::Error => tracing::error!(stage, plugin, "{message}"),
        }
    }
}

impl state::Host for HostState {
    fn get_many(&mut self, keys: Vec<Vec<u8>>) -> Vec<Option<Vec<u8>>> {
        let m = self.state.lock().expect("state lock");
        keys.iter().map(|k| self.writes.0.get(k).or_else(|| m.get(k)).cloned()).collect()
    }
    fn put_many(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) {
        self.writes.0.extend(entries);
    }
}

impl super::bindings::types::Host for HostState {}

/// The linker shared by every instance of both worlds.
pub fn linker(engine: &wasmtime::Engine) -> Result<Linker<HostState>, PluginError> {
    let mut l = Linker::new(engine);
    let err = |e: wasmtime::Error| PluginError::Load { plugin: "<linker>".into(), message: e.to_string() };
    wasmtime_wasi::p2::add_to_linker_sync(&mut l).map_err(err)?;
    transformer::Transformer::add_to_linker::<HostState, HasSelf<HostState>>(&mut l, |s| s).map_err(err)?;
    // The aggregator world imports `log` and `state`, both linked above.
    let _ = aggregator::Aggregator::add_to_linker::<HostState, HasSelf<HostState>>;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use state::Host as _;

    #[test]
    fn a_call_reads_its_own_writes_and_the_state_waits_for_commit() {
        let shared = StateMap::default();
        shared.lock().unwrap().insert(b"old".to_vec(), b"1".to_vec());
        let mut h = HostState::new("stages.s".into(), "p".into(), 1 << 20, &GrantsSpec::default(), shared.clone()).unwrap();
        h.put_many(vec![(b"new".to_vec(), b"2".to_vec()), (b"old".to_vec(), b"3".to_vec())]);
        assert_eq!(h.get_many(vec![b"new".to_vec(), b"old".to_vec(), b"none".to_vec()]), [Some(b"2".to_vec()), Some(b"3".to_vec()), None]);
        assert_eq!(shared.lock().unwrap().len(), 1, "a write reached the shared state during the call");
        // A failed call: its writes are taken and dropped.
        drop(h.take_writes());
        assert_eq!(h.get_many(vec![b"new".to_vec(), b"old".to_vec()]), [None, Some(b"1".to_vec())]);
        // A successful call: committed.
        h.put_many(vec![(b"new".to_vec(), b"4".to_vec())]);
        h.take_writes().commit(&shared);
        assert_eq!(shared.lock().unwrap().get(&b"new"[..]), Some(&b"4".to_vec()));
        assert!(h.take_writes().is_empty());
    }
}

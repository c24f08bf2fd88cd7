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
/// hot-swapped instance keeps it) and snapshotted into checkpoints.
pub type StateMap = Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>;

pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemLimiter,
    pub stage: Arc<str>,
    pub plugin: Arc<str>,
    state: StateMap,
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
        if grants.network {
            b.allow_tcp(true).allow_udp(true).allow_ip_name_lookup(true).inherit_network();
        }
        Ok(Self {
            wasi: b.build(),
            table: ResourceTable::new(),
            limiter: MemLimiter { max: memory as usize, hit: false },
            stage,
            plugin,
            state,
            stderr,
            log_window: (Instant::now(), 0),
        })
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
        keys.iter().map(|k| m.get(k).cloned()).collect()
    }
    fn put_many(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) {
        let mut m = self.state.lock().expect("state lock");
        for (k, v) in entries {
            m.insert(k, v);
        }
    }
}

impl super::bindings::types::Host for HostState {}

/// The linker shared by every instance of both worlds.
pub fn linker(engine: &wasmtime::Engine) -> Result<Linker<HostState>, PluginError> {
    let mut l = Linker::new(engine);
    let err = |e: wasmtime::Error| PluginError::Load { plugin: "<linker>".into(), message: e.to_string() };
    wasmtime_wasi::p2::add_to_linker_sync(&mut l).map_err(err)?;
    transformer::Transformer::add_to_linker::<HostState, HasSelf<HostState>>(&mut l, |s| s).map_err(err)?;
    // The aggregator world imports only `log`, already linked above.
    let _ = aggregator::Aggregator::add_to_linker::<HostState, HasSelf<HostState>>;
    Ok(l)
}

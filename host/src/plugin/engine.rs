//! The wasmtime engine: configuration, the epoch ticker that enforces call
//! deadlines, and the compiled-artifact cache keyed by component hash.
//!
//! Epoch interruption rather than fuel: measured 12–30% overhead vs 16–42%,
//! and a wall-clock budget is what operators reason about.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use super::error::PluginError;

/// Granularity of call deadlines.
pub const TICK: Duration = Duration::from_millis(10);

#[derive(Clone)]
pub struct PluginEngine {
    pub engine: Engine,
    cache_dir: Option<PathBuf>,
    _ticker: Arc<Ticker>,
}

struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl PluginEngine {
    /// `cache_dir`: where compiled components are kept (`None` disables the cache).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, PluginError> {
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&cfg).map_err(|e| PluginError::Load { plugin: "<engine>".into(), message: e.to_string() })?;
        let stop = Arc::new(AtomicBool::new(false));
        let (e2, s2) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !s2.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    e2.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Load { plugin: "<engine>".into(), message: e.to_string() })?;
        Ok(Self { engine, cache_dir, _ticker: Arc::new(Ticker { stop }) })
    }

    /// Epoch ticks for a per-call time limit (at least one).
    pub fn ticks(limit: Duration) -> u64 {
        (limit.as_millis() / TICK.as_millis()).max(1) as u64
    }

    /// Load a component, from the cache when this exact file was compiled
    /// before by a compatible engine (0.3 ms instead of 0.1–1.6 s).
    pub fn load(&self, path: &Path) -> Result<Component, PluginError> {
        let plugin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| PluginError::Load { plugin: plugin.clone(), message: e.to_string() })?;
        check_is_component(&plugin, &bytes)?;
        let cached = self.cache_dir.as_ref().map(|d| d.join(format!("{}.cwasm", self.cache_key(&bytes))));
        if let Some(c) = cached.as_ref().filter(|c| c.exists()) {
            // SAFETY: the file was written by `Component::serialize` of an engine with
            // the same compatibility hash (it is part of the name), in a directory
            // only sluice writes to; wasmtime still validates its header.
            match unsafe { Component::deserialize_file(&self.engine, c) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(cache = %c.display(), error = %e, "ignoring unusable cached component"),
            }
        }
        let component = Component::new(&self.engine, &bytes)
            .map_err(|e| PluginError::Load { plugin: plugin.clone(), message: format!("{e:#}") })?;
        if let Some(c) = cached {
            if let Err(e) = write_cache(&c, &component) {
                tracing::warn!(cache = %c.display(), error = %e, "cannot cache the compiled component");
            }
        }
        Ok(component)
    }

    fn cache_key(&self, bytes: &[u8]) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let digest = Sha256::digest(bytes);
        format!("{}-{:016x}", hex::encode(&digest[..16]), h.finish())
    }
}

fn write_cache(path: &Path, component: &Component) -> std::io::Result<()> {
    let data = component.serialize().map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(tmp, path)
}

/// A clear error for the two common mistakes: not Wasm at all, or a core
/// module (built for wasm32-unknown-unknown / wasip1) instead of a component.
fn check_is_component(plugin: &str, bytes: &[u8]) -> Result<(), PluginError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(PluginError::Load {
            plugin: plugin.into(),
            message: "not a WebAssembly file (build plugins with `cargo build --release --target wasm32-wasip2`)".into(),
        });
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(PluginError::Load {
            plugin: plugin.into(),
            message: "a core Wasm module, not a component: build for the wasm32-wasip2 target (or with `cargo component build`)".into(),
        });
    }
    Ok(())
}

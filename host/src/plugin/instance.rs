//! One long-lived plugin instance per stage (a fresh instance per batch costs
//! 9–38% in memory warm-up). A trapped instance is dropped and rebuilt from
//! the pre-linked component before the next call; it is never reused.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::Store;

use super::bindings::transformer::{Transformer, TransformerPre};
use super::bindings::types;
use super::engine::PluginEngine;
use super::error::PluginError;
use super::host::{HostState, StateMap, StateWrites};
use crate::config::GrantsSpec;

/// Everything needed to (re)build a stage's instance.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub path: PathBuf,
    /// `stages.NAME`.
    pub stage: String,
    /// The stage's `config` table as JSON, for `init`.
    pub config_json: String,
    pub memory: u64,
    pub timeout: Duration,
    pub grants: GrantsSpec,
}

impl PluginSpec {
    /// The plugin's display name: its file stem.
    pub fn name(&self) -> String {
        self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| self.path.display().to_string())
    }
}

pub struct TransformPlugin {
    engine: PluginEngine,
    pre: TransformerPre<HostState>,
    spec: PluginSpec,
    plugin: Arc<str>,
    stage: Arc<str>,
    state: StateMap,
    info: types::Info,
    live: Option<Live>,
    /// Instances built so far (1 + rebuilds after failures).
    pub instantiations: u64,
}

struct Live {
    store: Store<HostState>,
    bindings: Transformer,
}

/// What kind of component a file is. A transform comes back ready to run
/// (instantiated and `init`ed), so checking it costs nothing extra.
pub enum PluginKind {
    Transform(TransformPlugin),
    Aggregate(super::aggregate::AggregatePlugin),
}

impl TransformPlugin {
    pub fn new(engine: &PluginEngine, linker: &Linker<HostState>, spec: PluginSpec, state: StateMap) -> Result<Self, PluginError> {
        let plugin: Arc<str> = spec.name().into();
        let component = engine.load(&spec.path)?;
        let pre = transformer_pre(linker, &component, &plugin)?;
        let mut me = Self {
            engine: engine.clone(),
            pre,
            stage: spec.stage.as_str().into(),
            spec,
            plugin,
            state,
            info: types::Info {
                name: String::new(),
                version: String::new(),
                state_version: 0,
                takes: types::Format::Json,
                emits: types::Format::Json,
            },
            live: None,
            instantiations: 0,
        };
        me.ensure_live()?;
        Ok(me)
    }

    pub fn info(&self) -> &types::Info {
        &self.info
    }

    pub fn name(&self) -> &str {
        &self.plugin
    }

    /// Run one batch. On success the call's state writes come back with the
    /// output, not yet applied: the caller commits them once it accepts the
    /// output (`StateWrites::commit`). On any failure they are dropped, and
    /// after a trap the instance is discarded too; the next call gets a fresh one.
    pub fn process(&mut self, input: &types::Batch) -> Result<(types::Transformed, StateWrites), PluginError> {
        let ticks = PluginEngine::ticks(self.spec.timeout);
        let live = self.ensure_live()?;
        live.store.set_epoch_deadline(ticks);
        let result = live.bindings.sluice_plugin_transform().call_process(&mut live.store, input);
        let writes = live.store.data_mut().take_writes();
        match result {
            Ok(Ok(out)) => Ok((out, writes)),
            Ok(Err(message)) => {
                // A guest error leaves the instance sound; keep it (its writes are dropped).
                Err(PluginError::Guest { plugin: self.plugin.to_string(), stage: self.stage.to_string(), message })
            }
            Err(e) => {
                let live = self.live.take().expect("live instance");
                Err(self.classify(e, &live.store))
            }
        }
    }

    fn classify(&self, e: wasmtime::Error, store: &Store<HostState>) -> PluginError {
        classify(&self.plugin, &self.stage, &self.spec, e, store)
    }

    /// Replace the instance with a fresh one, `init`ed against the stage's
    /// state as it is now. The runtime calls this after restoring checkpointed
    /// state, so `init` sees what the plugin wrote before the restart.
    pub fn reinit(&mut self) -> Result<(), PluginError> {
        self.live = None;
        self.ensure_live().map(|_| ())
    }

    fn ensure_live(&mut self) -> Result<&mut Live, PluginError> {
        if self.live.is_none() {
            let live = self.instantiate()?;
            self.live = Some(live);
        }
        Ok(self.live.as_mut().expect("just built"))
    }

    fn instantiate(&mut self) -> Result<Live, PluginError> {
        let host = HostState::new(self.stage.clone(), self.plugin.clone(), self.spec.memory, &self.spec.grants, self.state.clone())?;
        let mut store = Store::new(&self.engine.engine, host);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        // The deadline must be set before instantiation: start-up code runs too.
        store.set_epoch_deadline(PluginEngine::ticks(self.spec.timeout));
        let bindings = self.pre.instantiate(&mut store).map_err(|e| PluginError::Trap {
            plugin: self.plugin.to_string(),
            stage: self.stage.to_string(),
            message: format!("instantiation failed: {e}"),
        })?;
        self.instantiations += 1;
        let t = bindings.sluice_plugin_transform();
        store.set_epoch_deadline(PluginEngine::ticks(self.spec.timeout));
        let fail = |e: wasmtime::Error| PluginError::Trap {
            plugin: self.plugin.to_string(),
            stage: self.stage.to_string(),
            message: e.to_string(),
        };
        self.info = t.call_describe(&mut store).map_err(fail)?;
        store.set_epoch_deadline(PluginEngine::ticks(self.spec.timeout));
        t.call_init(&mut store, &self.spec.config_json).map_err(fail)?.map_err(|message| PluginError::Init {
            plugin: self.plugin.to_string(),
            stage: self.stage.to_string(),
            message,
        })?;
        // State written by a successful `init` applies like a successful call's.
        store.data_mut().take_writes().commit(&self.state);
        Ok(Live { store, bindings })
    }
}

/// A failed call (trap, timeout, memory limit) as the `PluginError` an
/// operator can act on. Shared by both worlds' instances.
pub(super) fn classify(plugin: &str, stage: &str, spec: &PluginSpec, e: wasmtime::Error, store: &Store<HostState>) -> PluginError {
    let (plugin, stage) = (plugin.to_string(), stage.to_string());
    if store.data().limiter.hit {
        return PluginError::MemoryLimit { plugin, stage, limit: spec.memory };
    }
    if matches!(e.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt)) {
        return PluginError::Timeout { plugin, stage, limit: spec.timeout };
    }
    // The backtrace goes to debug logs; the message keeps what an operator
    // can act on: the trap kind and the guest's own panic message.
    tracing::debug!(%plugin, %stage, error = ?e, "plugin trap");
    let mut message = match e.downcast_ref::<wasmtime::Trap>() {
        Some(t) => t.to_string(),
        None => e.to_string().lines().next().unwrap_or_default().to_string(),
    };
    if let Some(panic) = store.data().last_stderr_line() {
        message = format!("{message}; the plugin wrote: {panic}");
    }
    PluginError::Trap { plugin, stage, message }
}

fn transformer_pre(linker: &Linker<HostState>, component: &Component, plugin: &str) -> Result<TransformerPre<HostState>, PluginError> {
    let pre = linker.instantiate_pre(component).map_err(|e| PluginError::Incompatible {
        plugin: plugin.into(),
        message: format!("imports something this host does not provide ({e}); it must target {}", super::bindings::WIT_PACKAGE),
    })?;
    TransformerPre::new(pre).map_err(|e| PluginError::Incompatible {
        plugin: plugin.into(),
        message: format!("does not export sluice:plugin/transform as {} expects: {e}", super::bindings::WIT_PACKAGE),
    })
}

/// Load a component and tell what it is, without running a pipeline.
pub fn inspect(engine: &PluginEngine, linker: &Linker<HostState>, spec: &PluginSpec, state: StateMap) -> Result<PluginKind, PluginError> {
    let plugin = spec.name();
    let component = engine.load(&spec.path)?;
    let exports: Vec<String> = component.component_type().exports(&engine.engine).map(|(n, _)| n.to_string()).collect();
    if exports.iter().any(|e| e.starts_with("sluice:plugin/aggregate")) {
        return Ok(PluginKind::Aggregate(super::aggregate::AggregatePlugin::new(engine, linker, spec.clone(), state)?));
    }
    if !exports.iter().any(|e| e.starts_with("sluice:plugin/transform")) {
        return Err(PluginError::Incompatible {
            plugin,
            message: format!(
                "exports neither sluice:plugin/transform nor sluice:plugin/aggregate ({}); it exports: {}",
                super::bindings::WIT_PACKAGE,
                if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") }
            ),
        });
    }
    Ok(PluginKind::Transform(TransformPlugin::new(engine, linker, spec.clone(), state)?))
}

//! One long-lived plugin instance per stage, for either world (a fresh
//! instance per batch costs 9–38% in memory warm-up). The instance is built
//! from the pre-linked component, `describe`d and `init`ed; a guest `err`
//! keeps it, a trap drops it and the next call builds a fresh one — it is
//! never reused after a trap. Every call returns the `state` writes it made,
//! not yet applied: the caller commits them only when it accepts the result
//! (invariant 5).
//!
//! What differs between the worlds (their exports and calls) is the `World`
//! trait; `instance.rs` (transforms) and `aggregate.rs` (aggregators) add
//! the world's own calls on top.

use std::sync::Arc;

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::Store;

use super::bindings::types;
use super::engine::PluginEngine;
use super::error::PluginError;
use super::host::{HostState, StateMap, StateWrites};
use super::instance::PluginSpec;

/// A WIT world a stage's plugin is built against.
pub trait World: Sized {
    type Pre;
    /// The interface the world exports, for error messages.
    const EXPORT: &'static str;
    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self>;
    fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<types::Info>;
    fn init(&self, store: &mut Store<HostState>, config: &str) -> wasmtime::Result<Result<(), String>>;
}

/// A stage's plugin: what it takes to (re)build its instance, and the
/// instance once built.
pub struct Managed<W: World> {
    engine: PluginEngine,
    pre: W::Pre,
    spec: PluginSpec,
    plugin: Arc<str>,
    stage: Arc<str>,
    state: StateMap,
    info: types::Info,
    live: Option<Live<W>>,
    /// Instances built so far (1 + rebuilds after failures).
    pub instantiations: u64,
}

struct Live<W> {
    store: Store<HostState>,
    bindings: W,
}

impl<W: World> Managed<W> {
    /// Loads and links the component and builds its first instance (so a
    /// plugin that cannot start fails the pipeline before any record).
    pub fn new(engine: &PluginEngine, linker: &Linker<HostState>, spec: PluginSpec, state: StateMap) -> Result<Self, PluginError> {
        let plugin: Arc<str> = spec.name().into();
        let component = engine.load(&spec.path)?;
        let pre = pre::<W>(linker, &component, &plugin)?;
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

    pub(super) fn pre(&self) -> &W::Pre {
        &self.pre
    }

    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// Replace the instance with a fresh one, `init`ed against the stage's
    /// state as it is now. The runtime calls this after restoring checkpointed
    /// state, so `init` sees what the plugin wrote before the restart.
    pub fn reinit(&mut self) -> Result<(), PluginError> {
        self.live = None;
        self.ensure_live().map(|_| ())
    }

    /// The plugin broke the contract (e.g. answered with the wrong count).
    pub fn contract(&self, message: String) -> PluginError {
        PluginError::Contract { plugin: self.plugin.to_string(), stage: self.stage.to_string(), message }
    }

    /// One guest call with the deadline set; a guest `err` keeps the
    /// instance (its writes are dropped), a trap drops it. Writes come back
    /// only on success.
    pub(super) fn call<R>(
        &mut self,
        f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<(R, StateWrites), PluginError> {
        let ticks = PluginEngine::ticks(self.spec.timeout);
        let live = self.ensure_live()?;
        live.store.set_epoch_deadline(ticks);
        let result = f(&live.bindings, &mut live.store);
        let writes = live.store.data_mut().take_writes();
        match result {
            Ok(Ok(out)) => Ok((out, writes)),
            Ok(Err(message)) => {
                Err(PluginError::Guest { plugin: self.plugin.to_string(), stage: self.stage.to_string(), message })
            }
            Err(e) => {
                let live = self.live.take().expect("live instance");
                Err(classify(&self.plugin, &self.stage, &self.spec, e, &live.store))
            }
        }
    }

    fn ensure_live(&mut self) -> Result<&mut Live<W>, PluginError> {
        if self.live.is_none() {
            let live = self.instantiate()?;
            self.live = Some(live);
        }
        Ok(self.live.as_mut().expect("just built"))
    }

    fn instantiate(&mut self) -> Result<Live<W>, PluginError> {
        let host = HostState::new(self.stage.clone(), self.plugin.clone(), self.spec.memory, &self.spec.grants, self.state.clone())?;
        let mut store = Store::new(&self.engine.engine, host);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        // The deadline must be set before instantiation: start-up code runs too.
        store.set_epoch_deadline(PluginEngine::ticks(self.spec.timeout));
        let trap = |message: String| PluginError::Trap { plugin: self.plugin.to_string(), stage: self.stage.to_string(), message };
        let bindings = W::instantiate(&self.pre, &mut store).map_err(|e| trap(format!("instantiation failed: {e}")))?;
        self.instantiations += 1;
        store.set_epoch_deadline(PluginEngine::ticks(self.spec.timeout));
        self.info = bindings.describe(&mut store).map_err(|e| trap(e.to_string()))?;
        store.set_epoch_deadline(PluginEngine::ticks(self.spec.timeout));
        bindings.init(&mut store, &self.spec.config_json).map_err(|e| trap(e.to_string()))?.map_err(|message| {
            PluginError::Init { plugin: self.plugin.to_string(), stage: self.stage.to_string(), message }
        })?;
        // State written by a successful `init` applies like a successful call's.
        store.data_mut().take_writes().commit(&self.state);
        Ok(Live { store, bindings })
    }
}

/// The component linked against this host, checked to export `W::EXPORT`.
fn pre<W: World>(linker: &Linker<HostState>, component: &Component, plugin: &str) -> Result<W::Pre, PluginError> {
    let incompatible = |message: String| PluginError::Incompatible { plugin: plugin.into(), message };
    let pre = linker.instantiate_pre(component).map_err(|e| {
        incompatible(format!(
            "imports something this host does not provide ({e}); it must target {}",
            super::bindings::WIT_PACKAGE
        ))
    })?;
    W::pre(pre).map_err(|e| {
        incompatible(format!("does not export {} as {} expects: {e}", W::EXPORT, super::bindings::WIT_PACKAGE))
    })
}

/// A failed call (trap, timeout, memory limit) as the `PluginError` an
/// operator can act on.
fn classify(plugin: &str, stage: &str, spec: &PluginSpec, e: wasmtime::Error, store: &Store<HostState>) -> PluginError {
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

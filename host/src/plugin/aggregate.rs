//! One long-lived instance of an aggregate plugin (the `aggregator` world),
//! rebuilt after a trap like a transform's. Every call returns the `state`
//! writes it made, not yet applied: the caller commits them only when it
//! accepts the result (invariant 5).

use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime::Store;

use super::bindings::aggregator::{Aggregator, AggregatorPre};
use super::bindings::types;
use super::engine::PluginEngine;
use super::error::PluginError;
use super::host::{HostState, StateMap, StateWrites};
use super::instance::{classify, PluginSpec};

pub struct AggregatePlugin {
    engine: PluginEngine,
    pre: AggregatorPre<HostState>,
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
    bindings: Aggregator,
}

impl AggregatePlugin {
    pub fn new(
        engine: &PluginEngine,
        linker: &Linker<HostState>,
        spec: PluginSpec,
        state: StateMap,
    ) -> Result<Self, PluginError> {
        let plugin: Arc<str> = spec.name().into();
        let component = engine.load(&spec.path)?;
        let incompatible = |message: String| PluginError::Incompatible {
            plugin: plugin.to_string(),
            message,
        };
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            incompatible(format!(
                "imports something this host does not provide ({e}); it must target {}",
                super::bindings::WIT_PACKAGE
            ))
        })?;
        let pre = AggregatorPre::new(pre).map_err(|e| {
            incompatible(format!(
                "does not export sluice:plugin/aggregate as {} expects: {e}",
                super::bindings::WIT_PACKAGE
            ))
        })?;
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

    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// Replace the instance with a fresh one, `init`ed against the stage's
    /// keyed state as it is now (after a restore).
    pub fn reinit(&mut self) -> Result<(), PluginError> {
        self.live = None;
        self.ensure_live().map(|_| ())
    }

    pub fn extract(
        &mut self,
        input: &types::Batch,
    ) -> Result<(types::Extracted, StateWrites), PluginError> {
        self.call(|a, s| a.call_extract(s, input))
    }

    pub fn accumulate(
        &mut self,
        groups: &[types::Group],
    ) -> Result<(Vec<Vec<u8>>, StateWrites), PluginError> {
        let n = groups.len();
        let (states, writes) = self.call(|a, s| a.call_accumulate(s, groups))?;
        if states.len() != n {
            return Err(self.contract(format!(
                "accumulate returned {} states for {n} groups",
                states.len()
            )));
        }
        Ok((states, writes))
    }

    pub fn finish(
        &mut self,
        window: types::Window,
        key: &[u8],
        state: &[u8],
    ) -> Result<(Option<Vec<u8>>, StateWrites), PluginError> {
        self.call(|a, s| a.call_finish(s, window, key, state).map(Ok))
    }

    /// Re-encode one state written under `from` (an older state-version).
    pub fn migrate(&mut self, from: u32, state: &[u8]) -> Result<Vec<u8>, PluginError> {
        // Writes made while migrating are dropped: migration re-encodes what
        // the checkpoint holds and must not change anything else.
        self.call(|a, s| a.call_migrate(s, from, state))
            .map(|(v, _)| v)
    }

    pub fn contract(&self, message: String) -> PluginError {
        PluginError::Contract {
            plugin: self.plugin.to_string(),
            stage: self.stage.to_string(),
            message,
        }
    }

    /// One guest call with the deadline set; a guest `err` keeps the
    /// instance, a trap drops it. Writes come back only on success.
    fn call<R>(
        &mut self,
        f: impl FnOnce(
            &super::bindings::aggregator::exports::sluice::plugin::aggregate::Guest,
            &mut Store<HostState>,
        ) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<(R, StateWrites), PluginError> {
        let ticks = PluginEngine::ticks(self.spec.timeout);
        let live = self.ensure_live()?;
        live.store.set_epoch_deadline(ticks);
        let result = f(live.bindings.sluice_plugin_aggregate(), &mut live.store);
        let writes = live.store.data_mut().take_writes();
        match result {
            Ok(Ok(out)) => Ok((out, writes)),
            Ok(Err(message)) => Err(PluginError::Guest {
                plugin: self.plugin.to_string(),
                stage: self.stage.to_string(),
                message,
            }),
            Err(e) => {
                let live = self.live.take().expect("live instance");
                Err(classify(
                    &self.plugin,
                    &self.stage,
                    &self.spec,
                    e,
                    &live.store,
                ))
            }
        }
    }

    fn ensure_live(&mut self) -> Result<&mut Live, PluginError> {
        if self.live.is_none() {
            let live = self.instantiate()?;
            self.live = Some(live);
        }
        Ok(self.live.as_mut().expect("just built"))
    }

    fn instantiate(&mut self) -> Result<Live, PluginError> {
        let host = HostState::new(
            self.stage.clone(),
            self.plugin.clone(),
            self.spec.memory,
            &self.spec.grants,
            self.state.clone(),
        )?;
        let mut store = Store::new(&self.engine.engine, host);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(PluginEngine::ticks(self.spec.timeout));
        let (plugin, stage) = (self.plugin.to_string(), self.stage.to_string());
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| PluginError::Trap {
                plugin: plugin.clone(),
                stage: stage.clone(),
                message: format!("instantiation failed: {e}"),
            })?;
        self.instantiations += 1;
        let a = bindings.sluice_plugin_aggregate();
        let fail = |e: wasmtime::Error| PluginError::Trap {
            plugin: plugin.clone(),
            stage: stage.clone(),
            message: e.to_string(),
        };
        store.set_epoch_deadline(PluginEngine::ticks(self.spec.timeout));
        self.info = a.call_describe(&mut store).map_err(fail)?;
        store.set_epoch_deadline(PluginEngine::ticks(self.spec.timeout));
        a.call_init(&mut store, &self.spec.config_json)
            .map_err(fail)?
            .map_err(|message| PluginError::Init {
                plugin: plugin.clone(),
                stage: stage.clone(),
                message,
            })?;
        // State written by a successful `init` applies like a successful call's.
        store.data_mut().take_writes().commit(&self.state);
        Ok(Live { store, bindings })
    }
}

//! Aggregate plugins (the `aggregator` world) on the shared instance
//! lifecycle (`managed.rs`): their calls, each returning the `state` writes
//! it made, not yet applied (invariant 5).

use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::bindings::aggregator::{Aggregator, AggregatorPre};
use super::bindings::types;
use super::error::PluginError;
use super::host::{HostState, StateWrites};
use super::managed::{Managed, World};

/// An aggregate stage's plugin (the `aggregator` world).
pub type AggregatePlugin = Managed<Aggregator>;

impl World for Aggregator {
    type Pre = AggregatorPre<HostState>;
    const EXPORT: &'static str = "sluice:plugin/aggregate";

    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        AggregatorPre::new(pre)
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        pre.instantiate(store)
    }
    fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<types::Info> {
        self.sluice_plugin_aggregate().call_describe(store)
    }
    fn init(&self, store: &mut Store<HostState>, config: &str) -> wasmtime::Result<Result<(), String>> {
        self.sluice_plugin_aggregate().call_init(store, config)
    }
}

impl Managed<Aggregator> {
    pub fn extract(
        &mut self,
        input: &types::Batch,
    ) -> Result<(types::Extracted, StateWrites), PluginError> {
        self.call(|a, s| a.sluice_plugin_aggregate().call_extract(s, input))
    }

    pub fn accumulate(
        &mut self,
        groups: &[types::Group],
    ) -> Result<(Vec<Vec<u8>>, StateWrites), PluginError> {
        let n = groups.len();
        let (states, writes) = self.call(|a, s| a.sluice_plugin_aggregate().call_accumulate(s, groups))?;
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
        self.call(|a, s| a.sluice_plugin_aggregate().call_finish(s, window, key, state).map(Ok))
    }

    /// Re-encode one state written under `from` (an older state-version).
    pub fn migrate(&mut self, from: u32, state: &[u8]) -> Result<Vec<u8>, PluginError> {
        // Writes made while migrating are dropped: migration re-encodes what
        // the checkpoint holds and must not change anything else.
        self.call(|a, s| a.sluice_plugin_aggregate().call_migrate(s, from, state))
            .map(|(v, _)| v)
    }
}

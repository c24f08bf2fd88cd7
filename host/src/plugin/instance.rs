//! Transform plugins (the `transformer` world) on the shared instance
//! lifecycle (`managed.rs`), the stage's plugin spec, and telling a
//! component's world before a pipeline runs (`inspect`).

use std::path::PathBuf;
use std::time::Duration;

use wasmtime::component::{InstancePre, Linker};
use wasmtime::Store;

use super::bindings::transformer::{Transformer, TransformerPre};
use super::bindings::types;
use super::engine::PluginEngine;
use super::error::PluginError;
use super::host::{HostState, StateMap, StateWrites};
use super::managed::{Managed, World};
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

/// A transform stage's plugin (the `transformer` world).
pub type TransformPlugin = Managed<Transformer>;

impl World for Transformer {
    type Pre = TransformerPre<HostState>;
    const EXPORT: &'static str = "sluice:plugin/transform";

    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        TransformerPre::new(pre)
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        pre.instantiate(store)
    }
    fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<types::Info> {
        self.sluice_plugin_transform().call_describe(store)
    }
    fn init(&self, store: &mut Store<HostState>, config: &str) -> wasmtime::Result<Result<(), String>> {
        self.sluice_plugin_transform().call_init(store, config)
    }
}

/// What kind of component a file is. A transform comes back ready to run
/// (instantiated and `init`ed), so checking it costs nothing extra.
pub enum PluginKind {
    Transform(TransformPlugin),
    Aggregate(super::aggregate::AggregatePlugin),
}

impl Managed<Transformer> {
    /// Run one batch. On success the call's state writes come back with the
    /// output, not yet applied: the caller commits them once it accepts the
    /// output (`StateWrites::commit`). On any failure they are dropped, and
    /// after a trap the instance is discarded too; the next call gets a fresh one.
    pub fn process(&mut self, input: &types::Batch) -> Result<(types::Transformed, StateWrites), PluginError> {
        self.call(|t, store| t.sluice_plugin_transform().call_process(store, input))
    }
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

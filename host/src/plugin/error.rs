//! Everything that can go wrong with a plugin, always naming the plugin and
//! the stage. None of these stop the host: the runtime rebuilds the instance
//! and quarantines the batch (see `pipeline::stage`).

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {plugin}: cannot load: {message}")]
    Load { plugin: String, message: String },
    #[error("plugin {plugin}: {message}")]
    Incompatible { plugin: String, message: String },
    #[error("plugin {plugin} (stage {stage}) refused its config: {message}")]
    Init { plugin: String, stage: String, message: String },
    #[error("plugin {plugin} (stage {stage}) trapped: {message}")]
    Trap { plugin: String, stage: String, message: String },
    #[error("plugin {plugin} (stage {stage}) ran longer than its {limit:?} limit per call and was interrupted")]
    Timeout { plugin: String, stage: String, limit: Duration },
    #[error("plugin {plugin} (stage {stage}) tried to grow its memory past its {limit} byte limit")]
    MemoryLimit { plugin: String, stage: String, limit: u64 },
    #[error("plugin {plugin} (stage {stage}) failed the batch: {message}")]
    Guest { plugin: String, stage: String, message: String },
    #[error("plugin {plugin} (stage {stage}) broke the contract: {message}")]
    Contract { plugin: String, stage: String, message: String },
    #[error("plugin {plugin} (stage {stage}) could not migrate the checkpointed state from state-version {from} to {to}: {message}; the checkpoint is unchanged (run the older plugin version, or fix its migrate)")]
    Migration { plugin: String, stage: String, from: u32, to: u32, message: String },
}

impl PluginError {
    /// The DLQ code for records quarantined because of this error.
    pub fn code(&self) -> &'static str {
        match self {
            PluginError::Timeout { .. } => "plugin_timeout",
            PluginError::MemoryLimit { .. } => "plugin_memory",
            PluginError::Trap { .. } => "plugin_trap",
            PluginError::Guest { .. } => "plugin_error",
            PluginError::Contract { .. } => "plugin_contract",
            PluginError::Load { .. } | PluginError::Incompatible { .. } | PluginError::Init { .. } => "plugin_init",
            PluginError::Migration { .. } => "plugin_migration",
        }
    }
}

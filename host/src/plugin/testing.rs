//! Stand-in plugins for unit tests: real components from the plugin
//! workspace (`plugins/target/wasm32-wasip2/release`, which `make test`
//! builds before the host's tests), so tests exercise the real boundary.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use super::host::{linker, StateMap};
use super::{PluginEngine, PluginError, PluginSpec, TransformPlugin};

/// The component `file` (e.g. `dedupe.wasm`); panics with the build command when missing.
pub(crate) fn wasm(file: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/wasm32-wasip2/release").join(file);
    assert!(
        p.is_file(),
        "{} is missing: build the plugins first (cd plugins && cargo build --release --target wasm32-wasip2)",
        p.display()
    );
    p
}

/// One engine for every test (compiled components are cached on disk).
pub(crate) fn engine() -> &'static PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE.get_or_init(|| PluginEngine::new(Some(std::env::temp_dir().join("sluice-unit-test-cache"))).expect("engine"))
}

pub(crate) fn spec(file: &str, stage: &str, config: serde_json::Value) -> PluginSpec {
    PluginSpec {
        path: wasm(file),
        stage: format!("stages.{stage}"),
        config_json: config.to_string(),
        memory: 128 << 20,
        timeout: Duration::from_secs(10),
        grants: Default::default(),
    }
}

/// A ready transform plugin (instantiated and `init`ed) over `state`.
pub(crate) fn plugin(file: &str, stage: &str, config: serde_json::Value, state: StateMap) -> Result<TransformPlugin, PluginError> {
    let l = linker(&engine().engine)?;
    TransformPlugin::new(engine(), &l, spec(file, stage, config), state)
}

/// A ready aggregate plugin (instantiated and `init`ed) over `state`.
pub(crate) fn aggregate(file: &str, stage: &str, config: serde_json::Value, state: StateMap) -> Result<super::AggregatePlugin, PluginError> {
    let l = linker(&engine().engine)?;
    super::AggregatePlugin::new(engine(), &l, spec(file, stage, config), state)
}

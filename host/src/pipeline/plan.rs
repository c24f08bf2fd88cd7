//! From a checked pipeline file to a runnable plan: every plugin loaded,
//! instantiated and `init`ed with its config, every edge's formats known.
//! `sluice validate` and `sluice run` share this, so whatever validate
//! accepts, run can start.

use std::collections::BTreeMap;
use std::path::PathBuf;

use wasmtime::component::Linker;

use crate::batch::Format;
use crate::config::{ConfigErrors, Pipeline, SinkSpec};
use crate::plugin::host::{HostState, StateMap};
use crate::config::window::{Windowing, DEFAULT_STATE_MEMORY};
use crate::plugin::bindings::types;
use crate::plugin::{wire, AggregatePlugin, PluginEngine, PluginError, PluginKind, PluginSpec, TransformPlugin};

pub struct StagePlan {
    pub name: String,
    pub plugin: StagePlugin,
    pub state: StateMap,
    pub takes: Format,
    pub emits: Format,
}

/// What runs a stage: a transform, or an aggregate with its window.
pub enum StagePlugin {
    Transform(TransformPlugin),
    Aggregate { plugin: AggregatePlugin, windowing: Windowing, state_memory: u64 },
}

impl StagePlugin {
    pub fn info(&self) -> &types::Info {
        match self {
            StagePlugin::Transform(p) => p.info(),
            StagePlugin::Aggregate { plugin, .. } => plugin.info(),
        }
    }
}

/// An edge where the producer's format differs from what the consumer takes:
/// the host converts there, at a cost `sluice validate` makes visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    pub from: String,
    pub to: String,
    pub emits: Format,
    pub takes: Format,
}

pub struct Plan {
    pub stages: BTreeMap<String, StagePlan>,
    /// What each source emits (chosen to suit its consumers).
    pub source_formats: BTreeMap<String, Format>,
    pub conversions: Vec<Conversion>,
}

pub fn build(
    p: &Pipeline,
    engine: &PluginEngine,
    linker: &Linker<HostState>,
) -> Result<Plan, ConfigErrors> {
    // Outputs, checkpoint store and admin first: what `run` would refuse
    // when it starts them.
    let mut errors = super::preflight::check(p);
    for (name, src) in &p.spec.sources {
        match src {
            crate::config::SourceSpec::File(f) if !std::path::Path::new(&f.path).is_file() => {
                errors.push(p.error_at(&["sources", name, "path"], format!("input file {} does not exist", f.path)));
            }
            crate::config::SourceSpec::File(f) => {
                if let Err(e) = crate::source::file::check(f) {
                    errors.push(p.error_at(&["sources", name, "columns"], e));
                }
            }
            crate::config::SourceSpec::Kinesis(k) => {
                if let Err(e) = k.validate() {
                    errors.push(p.error_at(&["sources", name], e));
                }
            }
            _ => {}
        }
    }
    let mut stages = BTreeMap::new();
    for name in &p.stage_order {
        let st = &p.spec.stages[name];
        let spec = PluginSpec {
            path: PathBuf::from(&st.plugin),
            stage: format!("stages.{name}"),
            config_json: serde_json::to_string(&st.config.clone().unwrap_or_default()).expect("toml table → json"),
            memory: st.limits.memory.unwrap_or(p.spec.limits.memory).0,
            timeout: st.limits.timeout.unwrap_or(p.spec.limits.timeout).0,
            grants: st.grants.clone(),
        };
        let at = |key: &str, e: PluginError| p.error_at(&["stages", name, key], e.to_string());
        if !spec.path.exists() {
            errors.push(p.error_at(
                &["stages", name, "plugin"],
                format!(
                    "plugin file {} does not exist; build the repository's plugins with `tests/scripts/build.sh` \
                     (or `cd plugins && cargo build --release --target wasm32-wasip2`), or fix the path",
                    spec.path.display()
                ),
            ));
            continue;
        }
        let state = StateMap::default();
        match crate::plugin::inspect(engine, linker, &spec, state.clone()) {
            Ok(PluginKind::Aggregate(plugin)) => {
                let Some(window) = &st.window else {
                    errors.push(p.error_at(
                        &["stages", name, "plugin"],
                        format!(
                            "{} is an aggregate plugin: the stage needs a window table, e.g. [stages.{name}.window] tumbling = \"1m\"",
                            plugin.name()
                        ),
                    ));
                    continue;
                };
                let windowing = match window.resolve() {
                    Ok(w) => w,
                    Err((key, message)) => {
                        errors.push(p.error_at(&["stages", name, "window", key], message));
                        continue;
                    }
                };
                let takes = wire::from_wit_format(plugin.info().takes);
                let state_memory = st.state_memory.map_or(DEFAULT_STATE_MEMORY, |b| b.0);
                let plugin = StagePlugin::Aggregate { plugin, windowing, state_memory };
                // The host decorates `finish` results (JSON objects): the stage emits JSON.
                stages.insert(name.clone(), StagePlan { name: name.clone(), plugin, state, takes, emits: Format::Json });
            }
            Err(e @ PluginError::Init { .. }) => {
                errors.push(at("config", e));
                continue;
            }
            Err(e) => {
                errors.push(at("plugin", e));
                continue;
            }
            Ok(PluginKind::Transform(plugin)) => {
                for key in ["window", "state_memory"] {
                    let set = if key == "window" { st.window.is_some() } else { st.state_memory.is_some() };
                    if set {
                        errors.push(p.error_at(
                            &["stages", name, key],
                            format!("{} is a transform plugin; only aggregate plugins take `{key}`", plugin.name()),
                        ));
                    }
                }
                let plugin = StagePlugin::Transform(plugin);
                let (takes, emits) = (wire::from_wit_format(plugin.info().takes), wire::from_wit_format(plugin.info().emits));
                stages.insert(name.clone(), StagePlan { name: name.clone(), plugin, state, takes, emits });
            }
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let consumers = p.consumers();
    let takes = |node: &str| -> Option<Format> {
        stages.get(node).map(|s: &StagePlan| s.takes).or_else(|| p.spec.sinks.get(node).map(SinkSpec::takes))
    };
    let mut source_formats = BTreeMap::new();
    for name in p.spec.sources.keys() {
        let wants_arrow = consumers.get(name).into_iter().flatten().any(|c| takes(c) == Some(Format::Arrow));
        source_formats.insert(name.clone(), if wants_arrow { Format::Arrow } else { Format::Json });
    }
    let mut conversions = Vec::new();
    for (producer, cs) in &consumers {
        let emits = source_formats.get(producer).copied().or_else(|| stages.get(producer).map(|s| s.emits));
        for c in cs {
            if let (Some(e), Some(t)) = (emits, takes(c)) {
                if e != t {
                    conversions.push(Conversion { from: producer.clone(), to: c.clone(), emits: e, takes: t });
                }
            }
        }
    }
    Ok(Plan { stages, source_formats, conversions })
}

/// Human-readable description of the plan (for `sluice validate`).
pub fn describe(p: &Pipeline, plan: &Plan) -> String {
    let mut s = format!("pipeline {} ({}): OK\n", p.name, p.file.display());
    for (name, f) in &plan.source_formats {
        s += &format!("  source  {name}: emits {f}\n");
    }
    for name in &p.stage_order {
        let st = &plan.stages[name];
        let info = st.plugin.info();
        s += &format!(
            "  stage   {name}: plugin {} {} (takes {}, emits {}) ← {}\n",
            info.name,
            info.version,
            st.takes,
            st.emits,
            p.spec.stages[name].inputs.join(", ")
        );
        if let StagePlugin::Aggregate { plugin, windowing: w, state_memory } = &st.plugin {
            s += &format!(
                "          window {:?}, allowed lateness {}ms, idle timeout {:?}, state-version {}, state_memory {state_memory} bytes, contract {}\n",
                w.kind,
                w.allowed_lateness,
                w.idle_timeout,
                info.state_version,
                plugin.contract_version()
            );
        }
    }
    for (name, sk) in &p.spec.sinks {
        let path = sk.describe_destination();
        s += &format!(
            "  sink    {name}: takes {} ← {} → {path}\n",
            sk.takes(),
            sk.inputs().join(", ")
        );
    }
    s += &format!("  dlq     {}\n", p.spec.dlq.path);
    s += &format!(
        "  checkpoint {} (every {})\n",
        p.spec.checkpoint.dir,
        humantime::format_duration(p.spec.checkpoint.interval.0)
    );
    if let Some(a) = &p.spec.admin {
        s += &format!("  admin   http://{} (GET /metrics, /status; bearer token set)\n", a.listen.0);
    }
    if plan.conversions.is_empty() {
        s += "  conversions: none\n";
    }
    for c in &plan.conversions {
        s += &format!("  conversion: {} → {}: {} → {} (converted by the host for every batch)\n", c.from, c.to, c.emits, c.takes);
    }
    s
}

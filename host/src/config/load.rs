//! Loading a pipeline file: read → interpolate → deserialise → check the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::error::{line_of, ConfigError, ConfigErrors};
use super::model::PipelineFile;
use super::{interp, locate};

/// A pipeline file that parsed and whose graph is sound. Plugins are checked
/// separately (`plugin::Registry::check`) because that needs the engine.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub file: PathBuf,
    /// The interpolated text, kept to locate later errors.
    pub text: String,
    pub spec: PipelineFile,
    pub name: String,
    /// Stages in an order where every stage comes after its inputs.
    pub stage_order: Vec<String>,
}

/// What kind of node a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Source,
    Stage,
    Sink,
}

impl NodeKind {
    pub fn table(self) -> &'static str {
        match self {
            NodeKind::Source => "sources",
            NodeKind::Stage => "stages",
            NodeKind::Sink => "sinks",
        }
    }
}

impl Pipeline {
    /// `sources.NAME`, `stages.NAME` or `sinks.NAME` for a bare node name.
    pub fn node_key(&self, name: &str) -> Option<String> {
        self.kind_of(name).map(|k| format!("{}.{name}", k.table()))
    }

    pub fn kind_of(&self, name: &str) -> Option<NodeKind> {
        if self.spec.sources.contains_key(name) {
            Some(NodeKind::Source)
        } else if self.spec.stages.contains_key(name) {
            Some(NodeKind::Stage)
        } else if self.spec.sinks.contains_key(name) {
            Some(NodeKind::Sink)
        } else {
            None
        }
    }

    /// Consumers of each node, in a stable order.
    pub fn consumers(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, st) in &self.spec.stages {
            for i in &st.inputs {
                out.entry(i.clone()).or_default().push(name.clone());
            }
        }
        for (name, sk) in &self.spec.sinks {
            for i in sk.inputs() {
                out.entry(i.clone()).or_default().push(name.clone());
            }
        }
        out
    }

    /// An error located at a key path of this file.
    pub fn error_at(&self, path: &[&str], message: impl Into<String>) -> ConfigError {
        error_at(&self.file, &self.text, path, message.into())
    }
}

fn error_at(file: &Path, text: &str, path: &[&str], message: String) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: locate::offset_of(text, path).map(|o| line_of(text, o)),
        path: path.join("."),
        message,
    }
}

pub fn load(file: &Path) -> Result<Pipeline, ConfigErrors> {
    let raw = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        line: None,
        path: String::new(),
        message: format!("cannot read the pipeline file: {e}"),
    })?;
    parse(file, &raw, |k| std::env::var(k).ok())
}

/// Parse and check a pipeline given its text (the environment is a parameter for tests).
pub fn parse(file: &Path, raw: &str, env: impl Fn(&str) -> Option<String>) -> Result<Pipeline, ConfigErrors> {
    let text = interp::interpolate(file, raw, env).map_err(ConfigErrors)?;
    let spec = deserialize(file, &text)?;
    let name = spec
        .pipeline
        .name
        .clone()
        .unwrap_or_else(|| file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
    let mut p = Pipeline { file: file.to_path_buf(), text, spec, name, stage_order: Vec::new() };
    resolve_defaults(&mut p)?;
    p.stage_order = check_graph(&p)?;
    Ok(p)
}

/// Where a pipeline keeps its state and dead letters unless the file says:
/// `.sluice/<pipeline name>/` holds `checkpoint.json`, its lock and
/// `dlq.ndjson`. Per pipeline, because a checkpoint (and so the DLQ it
/// commits) belongs to exactly one pipeline.
pub const STATE_ROOT: &str = ".sluice";

fn resolve_defaults(p: &mut Pipeline) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    let name_at = if locate::has_key(&p.text, &["pipeline", "name"]) {
        vec!["pipeline", "name"]
    } else {
        vec![]
    };
    if p.name.is_empty() || p.name == "." || p.name == ".." || p.name.contains(['/', '\\']) {
        errors.push(p.error_at(
            &name_at,
            format!("the pipeline name {:?} cannot name its state directory; use letters, digits, '-', '_' or '.'", p.name),
        ));
    }
    let explicit_empty = |p: &Pipeline, path: &[&str], value: &str| {
        value.is_empty() && locate::has_key(&p.text, path)
    };
    if explicit_empty(p, &["checkpoint", "dir"], &p.spec.checkpoint.dir) {
        errors.push(p.error_at(
            &["checkpoint", "dir"],
            "is empty; name a directory or s3://bucket/prefix, or leave the key out",
        ));
    }
    if explicit_empty(p, &["dlq", "path"], &p.spec.dlq.path) {
        errors.push(p.error_at(
            &["dlq", "path"],
            "is empty; name an NDJSON file, or leave the key out",
        ));
    }
    if let Some(r) = p.spec.pipeline.max_reject_rate {
        if !(0.0..=1.0).contains(&r) {
            errors.push(p.error_at(
                &["pipeline", "max_reject_rate"],
                format!("{r} is not a fraction; write a number from 0 to 1 (e.g. 0.05 for 5%)"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let own = Path::new(STATE_ROOT).join(&p.name);
    if p.spec.checkpoint.dir.is_empty() {
        p.spec.checkpoint.dir = own.to_string_lossy().into_owned();
    }
    if p.spec.dlq.path.is_empty() {
        let dir = if p.spec.checkpoint.dir.starts_with("s3://") {
            own
        } else {
            PathBuf::from(&p.spec.checkpoint.dir)
        };
        p.spec.dlq.path = dir.join("dlq.ndjson").to_string_lossy().into_owned();
    }
    Ok(())
}

fn deserialize(file: &Path, text: &str) -> Result<PipelineFile, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        line: e.span().map(|s| line_of(text, s.start)),
        path: String::new(),
        message: format!("invalid TOML: {}", e.message().trim()),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let segments: Vec<&str> = if path == "." { vec![] } else { path.split('.').collect() };
        let mut message = inner.message().trim().to_string();
        // For plain tables serde_path_to_error's path already ends with the
        // unknown key; for tagged tables (sources, sinks), which serde
        // buffers, it stops at the table. Add the key only in that case: the
        // path then names a table of the file that holds the key.
        let mut located: Vec<&str> = segments.clone();
        let unknown = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()).map(str::to_owned);
        if let Some(u) = &unknown {
            if locate::table_has_key(text, &segments, u) {
                located.push(u);
            }
        }
        // Tagged tables (sources, sinks) are buffered by serde, so their span
        // covers the whole table: for an unknown key, finding the key wins.
        let by_key = || locate::offset_of(text, &located).map(|o| line_of(text, o));
        let by_span = || inner.span().map(|s| line_of(text, s.start));
        let line = if unknown.is_some() { by_key().or_else(by_span) } else { by_span().or_else(by_key) };
        if unknown.is_some() {
            message.push_str(" (check the spelling; see pipelines/README.md for every key)");
        }
        ConfigError { file: file.to_path_buf(), line, path: located.join("."), message }
    })
}

/// Names unique, inputs exist, no cycles, every stage consumed. Returns a
/// topological order of the stages.
fn check_graph(p: &Pipeline) -> Result<Vec<String>, ConfigErrors> {
    let s = &p.spec;
    let mut errors = Vec::new();
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    let tables: [(&str, Vec<&String>); 3] = [
        ("sources", s.sources.keys().collect()),
        ("stages", s.stages.keys().collect()),
        ("sinks", s.sinks.keys().collect()),
    ];
    for (table, names) in &tables {
        for n in names {
            if let Some(prev) = seen.insert(n.as_str(), table) {
                errors.push(p.error_at(&[table, n], format!("the name {n:?} is already used in [{prev}]; node names must be unique")));
            }
        }
    }
    if s.sources.is_empty() {
        errors.push(p.error_at(&[], "the pipeline has no [sources.NAME] table"));
    }
    if s.sinks.is_empty() {
        errors.push(p.error_at(&[], "the pipeline has no [sinks.NAME] table; records would go nowhere"));
    }
    let mut check_inputs = |table: &str, name: &str, inputs: &[String]| {
        if inputs.is_empty() {
            errors.push(p.error_at(&[table, name, "inputs"], "`inputs` is empty; name at least one source or stage"));
        }
        let mut dup = BTreeSet::new();
        for (i, input) in inputs.iter().enumerate() {
            let idx = i.to_string();
            let at = [table, name, "inputs", idx.as_str()];
            match p.kind_of(input) {
                None => errors.push(p.error_at(&at, format!("input {input:?} is not a source or stage of this pipeline"))),
                Some(super::NodeKind::Sink) => {
                    errors.push(p.error_at(&at, format!("input {input:?} is a sink; sinks have no output")))
                }
                _ if input == name => errors.push(p.error_at(&at, "a stage cannot be its own input")),
                _ => {}
            }
            if !dup.insert(input) {
                errors.push(p.error_at(&at, format!("input {input:?} is listed twice")));
            }
        }
    };
    for (name, st) in &s.stages {
        check_inputs("stages", name, &st.inputs);
    }
    for (name, sk) in &s.sinks {
        check_inputs("sinks", name, sk.inputs());
    }
    let consumers = p.consumers();
    for name in s.sources.keys().chain(s.stages.keys()) {
        if !consumers.contains_key(name) {
            let table = if s.sources.contains_key(name) { "sources" } else { "stages" };
            errors.push(p.error_at(&[table, name], format!("{name:?} feeds nothing; add it to a stage's or sink's `inputs`")));
        }
    }
    // Kahn's algorithm over stages; whatever is left is on a cycle.
    let mut order = Vec::new();
    let mut pending: BTreeMap<&str, usize> = s
        .stages
        .iter()
        .map(|(n, st)| (n.as_str(), st.inputs.iter().filter(|i| s.stages.contains_key(*i)).count()))
        .collect();
    let mut ready: Vec<&str> = pending.iter().filter(|(_, &d)| d == 0).map(|(n, _)| *n).collect();
    while let Some(n) = ready.pop() {
        pending.remove(n);
        order.push(n.to_string());
        for c in consumers.get(n).into_iter().flatten() {
            if let Some(d) = pending.get_mut(c.as_str()) {
                *d -= 1;
                if *d == 0 {
                    ready.push(c.as_str());
                }
            }
        }
    }
    if !pending.is_empty() {
        let cycle: Vec<&str> = pending.keys().copied().collect();
        errors.push(p.error_at(
            &["stages", cycle[0], "inputs"],
            format!("stages {} form a cycle through their inputs", cycle.join(" → ")),
        ));
    }
    if errors.is_empty() {
        Ok(order)
    } else {
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
[sources.a]
type = "file"
path = "x.csv"

[stages.v]
inputs = ["a"]
plugin = "v.wasm"

[sinks.out]
type = "file"
inputs = ["v"]
path = "o.ndjson"
"#;

    fn parse_str(t: &str) -> Result<Pipeline, ConfigErrors> {
        parse(Path::new("p.toml"), t, |_| None)
    }

    #[test]
    fn valid_file_parses() {
        let p = parse_str(OK).unwrap();
        assert_eq!(p.stage_order, vec!["v"]);
        assert_eq!(p.name, "p");
    }

    #[test]
    fn unknown_key_has_line_and_path() {
        let t = OK.replace("path = \"o.ndjson\"", "path = \"o.ndjson\"\ncompresion = \"x\"");
        let e = parse_str(&t).unwrap_err().0.remove(0);
        assert_eq!(e.path, "sinks.out.compresion", "{e}");
        assert_eq!(e.line, Some(14), "{e}");
    }

    #[test]
    fn missing_input_and_cycle() {
        let t = OK.replace("inputs = [\"a\"]", "inputs = [\"a\", \"nope\"]");
        let e = parse_str(&t).unwrap_err().0;
        assert!(e.iter().any(|e| e.path == "stages.v.inputs.1" && e.line == Some(7)), "{e:?}");
        let t = format!("{OK}\n[stages.w]\ninputs = [\"w2\"]\nplugin = \"w.wasm\"\n[stages.w2]\ninputs = [\"w\"]\nplugin = \"w.wasm\"\n");
        let t = t.replace("inputs = [\"v\"]", "inputs = [\"v\", \"w\"]");
        let e = parse_str(&t).unwrap_err().0;
        assert!(e.iter().any(|e| e.message.contains("cycle")), "{e:?}");
    }

    #[test]
    fn unknown_keys_of_plain_tables_are_not_doubled() {
        let t = OK.replace(
            "plugin = \"v.wasm\"",
            "plugin = \"v.wasm\"\ninput = [\"a\"]",
        );
        let e = parse_str(&t).unwrap_err().0.remove(0);
        assert_eq!(e.path, "stages.v.input", "{e}");
        assert_eq!(e.line, Some(9), "{e}");
        let t = format!("[checkpiont]\ndir = \"x\"\n{OK}");
        let e = parse_str(&t).unwrap_err().0.remove(0);
        assert_eq!(e.path, "checkpiont", "{e}");
        assert_eq!(e.line, Some(1), "{e}");
        let t = format!("[checkpoint]\nintervl = \"1s\"\n{OK}");
        let e = parse_str(&t).unwrap_err().0.remove(0);
        assert_eq!(e.path, "checkpoint.intervl", "{e}");
        // A tagged table whose name equals the unknown key still gets the key.
        let t = OK
            .replace("[sinks.out]", "[sinks.path2]")
            .replace("path = \"o.ndjson\"", "path = \"o.ndjson\"\npath2 = 1");
        let e = parse_str(&t).unwrap_err().0.remove(0);
        assert_eq!(e.path, "sinks.path2.path2", "{e}");
    }

    #[test]
    fn state_and_dlq_default_per_pipeline() {
        let p = parse_str(OK).unwrap();
        assert_eq!(p.spec.checkpoint.dir, ".sluice/p");
        assert_eq!(p.spec.dlq.path, ".sluice/p/dlq.ndjson");
        let p = parse_str(&format!(
            "[pipeline]\nname = \"q\"\n[checkpoint]\ndir = \"st/q\"\n{OK}"
        ))
        .unwrap();
        assert_eq!(p.spec.dlq.path, "st/q/dlq.ndjson");
        let p = parse_str(&format!("[checkpoint]\ndir = \"s3://bucket/cp\"\n{OK}")).unwrap();
        assert_eq!(p.spec.dlq.path, ".sluice/p/dlq.ndjson");
        let e = parse_str(&format!("[dlq]\npath = \"\"\n{OK}"))
            .unwrap_err()
            .0
            .remove(0);
        assert_eq!((e.path.as_str(), e.line), ("dlq.path", Some(2)), "{e}");
        let e = parse_str(&format!("[pipeline]\nname = \"a/b\"\n{OK}"))
            .unwrap_err()
            .0
            .remove(0);
        assert_eq!((e.path.as_str(), e.line), ("pipeline.name", Some(2)), "{e}");
        let e = parse_str(&format!("[pipeline]\nmax_reject_rate = 2.0\n{OK}"))
            .unwrap_err()
            .0
            .remove(0);
        assert_eq!(e.path, "pipeline.max_reject_rate", "{e}");
    }

    #[test]
    fn bad_duration_is_located() {
        let t = format!("[checkpoint]\ninterval = \"soon\"\n{OK}");
        let e = parse_str(&t).unwrap_err().0.remove(0);
        assert_eq!(e.path, "checkpoint.interval", "{e}");
        assert_eq!(e.line, Some(2), "{e}");
    }
}

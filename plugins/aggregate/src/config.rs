//! The stage config and the checks `init` runs on it: every mistake is an
//! `init` error naming the key, so a bad config never starts a pipeline.

use serde::{Deserialize, Serialize};

/// `config = { time_field = "ts", time_format = "auto", group_by = ["station"],
///             metrics = [{ op = "count" }, { op = "avg", field = "temp" }] }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggConfig {
    /// Field holding the event time (a dotted path reaches into objects).
    pub time_field: String,
    #[serde(default)]
    pub time_format: TimeFormat,
    /// Fields whose values form the group key (none: one group per window).
    #[serde(default)]
    pub group_by: Vec<String>,
    pub metrics: Vec<Metric>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Numbers are epoch milliseconds; strings are ISO 8601 / RFC 3339 (or digits: epoch ms).
    #[default]
    Auto,
    EpochMs,
    EpochS,
    #[serde(alias = "rfc3339")]
    Iso8601,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Count => "count",
            Op::Sum => "sum",
            Op::Avg => "avg",
            Op::Min => "min",
            Op::Max => "max",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub op: Op,
    /// Required for sum/avg/min/max; for count, a field every counted record must have.
    #[serde(default)]
    pub field: Option<String>,
    /// Output name; default `count`, or `<op>_<field>` with dots as underscores.
    #[serde(default, rename = "as")]
    pub name: Option<String>,
}

/// Names the host adds to every output record.
const RESERVED: [&str; 3] = ["id", "window_start", "window_end"];

/// The checked config: numeric fields deduplicated, each metric pointing at its slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub time_field: Vec<String>,
    pub time_format: TimeFormat,
    /// (output name, path) per group field.
    pub group_by: Vec<(String, Vec<String>)>,
    /// Paths of the fields whose values are summed/compared, in value order.
    pub numeric: Vec<Vec<String>>,
    /// Paths that must be present (count with a field).
    pub required: Vec<Vec<String>>,
    pub outputs: Vec<Output>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: String,
    pub op: Op,
    /// Index into `Plan::numeric` (sum/avg/min/max).
    pub slot: Option<usize>,
}

fn path(field: &str) -> Vec<String> {
    field.split('.').map(str::to_owned).collect()
}

impl AggConfig {
    pub fn plan(&self) -> Result<Plan, String> {
        let valid = |f: &str| !f.is_empty() && f.split('.').all(|p| !p.is_empty());
        if !valid(&self.time_field) {
            return Err(format!(
                "time_field must name a field (a.b reaches into objects), got {:?}",
                self.time_field
            ));
        }
        if self.metrics.is_empty() {
            return Err(
                "metrics must list at least one metric, e.g. [{ op = \"count\" }]".to_owned(),
            );
        }
        let mut names: Vec<String> = Vec::new();
        let mut claim = |name: String, what: String| -> Result<String, String> {
            if RESERVED.contains(&name.as_str()) {
                return Err(format!("{what}: output name {name:?} is reserved (the host adds id, window_start, window_end)"));
            }
            if names.contains(&name) {
                return Err(format!(
                    "{what}: output name {name:?} is used twice (rename one with `as`)"
                ));
            }
            names.push(name.clone());
            Ok(name)
        };
        let mut group_by = Vec::new();
        for (i, g) in self.group_by.iter().enumerate() {
            if !valid(g) {
                return Err(format!("group_by[{i}] must name a field, got {g:?}"));
            }
            group_by.push((claim(g.clone(), format!("group_by[{i}]"))?, path(g)));
        }
        let (mut numeric, mut required, mut outputs) = (Vec::new(), Vec::new(), Vec::new());
        for (i, m) in self.metrics.iter().enumerate() {
            let what = format!("metrics[{i}]");
            if let Some(f) = &m.field {
                if !valid(f) {
                    return Err(format!("{what}.field must name a field, got {f:?}"));
                }
            }
            let slot = match (m.op, &m.field) {
                (Op::Count, None) => None,
                (Op::Count, Some(f)) => {
                    if !required.contains(&path(f)) {
                        required.push(path(f));
                    }
                    None
                }
                (op, None) => return Err(format!("{what}: op {:?} needs a field", op.name())),
                (_, Some(f)) => Some(match numeric.iter().position(|p| *p == path(f)) {
                    Some(s) => s,
                    None => {
                        numeric.push(path(f));
                        numeric.len() - 1
                    }
                }),
            };
            let default = match &m.field {
                None => m.op.name().to_owned(),
                Some(f) => format!("{}_{}", m.op.name(), f.replace('.', "_")),
            };
            let name = m.name.clone().unwrap_or(default);
            if name.is_empty() {
                return Err(format!("{what}.as must not be empty"));
            }
            outputs.push(Output {
                name: claim(name, what)?,
                op: m.op,
                slot,
            });
        }
        Ok(Plan {
            time_field: path(&self.time_field),
            time_format: self.time_format,
            group_by,
            numeric,
            required,
            outputs,
        })
    }

    /// What the window state's layout depends on, as text kept in the stage's
    /// state: open windows accumulated under another layout cannot be read.
    pub fn layout(plan: &Plan) -> String {
        let ops: Vec<String> = plan
            .outputs
            .iter()
            .map(|o| format!("{}:{}:{:?}", o.name, o.op.name(), o.slot))
            .collect();
        let numeric: Vec<String> = plan.numeric.iter().map(|p| p.join(".")).collect();
        format!("numeric={numeric:?} outputs={ops:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: &str) -> Result<Plan, String> {
        sluice_plugin_sdk::Config::new(json.to_owned())
            .parse::<AggConfig>()?
            .plan()
    }

    #[test]
    fn names_slots_and_defaults() {
        let p = plan(
            r#"{"time_field": "ts", "group_by": ["site", "dev.kind"], "metrics": [
                {"op": "count"}, {"op": "sum", "field": "x"}, {"op": "avg", "field": "x"},
                {"op": "max", "field": "m.y", "as": "peak"}, {"op": "count", "field": "z"}]}"#,
        )
        .unwrap();
        assert_eq!(p.time_format, TimeFormat::Auto);
        assert_eq!(
            p.group_by[1],
            (
                "dev.kind".to_owned(),
                vec!["dev".to_owned(), "kind".to_owned()]
            )
        );
        let names: Vec<_> = p
            .outputs
            .iter()
            .map(|o| (o.name.as_str(), o.slot))
            .collect();
        assert_eq!(
            names,
            [
                ("count", None),
                ("sum_x", Some(0)),
                ("avg_x", Some(0)),
                ("peak", Some(1)),
                ("count_z", None)
            ]
        );
        assert_eq!(p.numeric.len(), 2);
        assert_eq!(p.required, vec![vec!["z".to_owned()]]);
    }

    #[test]
    fn bad_configs_are_init_errors_that_name_the_key() {
        for (cfg, want) in [
            (
                r#"{"metrics": [{"op": "count"}]}"#,
                "missing field `time_field`",
            ),
            (
                r#"{"time_field": "", "metrics": [{"op": "count"}]}"#,
                "time_field must name a field",
            ),
            (
                r#"{"time_field": "t", "metrics": []}"#,
                "metrics must list at least one metric",
            ),
            (
                r#"{"time_field": "t", "metrics": [{"op": "mean", "field": "x"}]}"#,
                "invalid config at metrics[0].op: unknown variant `mean`",
            ),
            (
                r#"{"time_field": "t", "metrics": [{"op": "sum"}]}"#,
                "metrics[0]: op \"sum\" needs a field",
            ),
            (
                r#"{"time_field": "t", "metrics": [{"op": "sum", "field": "x"}, {"op": "sum", "field": "x"}]}"#,
                "metrics[1]: output name \"sum_x\" is used twice",
            ),
            (
                r#"{"time_field": "t", "group_by": ["count"], "metrics": [{"op": "count"}]}"#,
                "metrics[0]: output name \"count\" is used twice",
            ),
            (
                r#"{"time_field": "t", "group_by": ["id"], "metrics": [{"op": "count"}]}"#,
                "group_by[0]: output name \"id\" is reserved",
            ),
            (
                r#"{"time_field": "t", "time_format": "unix", "metrics": [{"op": "count"}]}"#,
                "invalid config at time_format: unknown variant `unix`",
            ),
            (
                r#"{"time_field": "t", "metrics": [{"op": "count", "feild": "x"}]}"#,
                "unknown field `feild`",
            ),
            (
                r#"{"time_field": "t", "metrics": [{"op": "min", "field": "a..b"}]}"#,
                "metrics[0].field must name a field",
            ),
        ] {
            let e = plan(cfg).unwrap_err();
            assert!(e.contains(want), "{cfg}: {e}");
        }
    }
}

//! A closed window's state → its output document: the group fields (by
//! their configured names) and the metrics, one JSON object (keys sorted).

use serde_json::{Map, Value};

use crate::acc::Acc;
use crate::config::{Op, Plan};

fn number(x: f64) -> Value {
    // Non-finite results (a sum that overflowed) have no JSON form.
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// The document of one (window, group); `key` is what `extract` produced.
pub fn document(plan: &Plan, key: &[u8], acc: &Acc) -> Result<Vec<u8>, String> {
    let group: Vec<Value> =
        serde_json::from_slice(key).map_err(|e| format!("group key does not parse: {e}"))?;
    if group.len() != plan.group_by.len() {
        return Err(format!(
            "group key has {} values for {} group_by fields",
            group.len(),
            plan.group_by.len()
        ));
    }
    let mut doc = Map::new();
    for ((name, _), v) in plan.group_by.iter().zip(group) {
        doc.insert(name.clone(), v);
    }
    for o in &plan.outputs {
        let f = o.slot.map(|s| &acc.fields[s]);
        let v = match (o.op, f) {
            (Op::Count, _) => Value::from(acc.records),
            (Op::Sum, Some(f)) => number(f.sum()),
            (Op::Avg, Some(f)) => number(f.sum() / acc.records as f64),
            (Op::Min, Some(f)) => number(f.min),
            (Op::Max, Some(f)) => number(f.max),
            (op, None) => return Err(format!("metric {} ({op:?}) has no field slot", o.name)),
        };
        doc.insert(o.name.clone(), v);
    }
    serde_json::to_vec(&Value::Object(doc)).map_err(|e| e.to_string())
}

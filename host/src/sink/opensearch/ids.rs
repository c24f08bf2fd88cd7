//! Deterministic document ids, so a replayed record overwrites itself
//! instead of adding a second document (the exactly-once effect without a
//! transaction).
//!
//! Default: the record's provenance, `{source}:{partition}:{seq}:{sub}:{n}`,
//! where `n` counts the outputs a stage made from one input record (0 for the
//! first), in the order the stage emitted them. With `id_field`, the value of
//! that field (aggregates carry their own key: window + group).

use std::collections::HashMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::batch::Batch;

/// OpenSearch refuses longer ids; longer provenance ids are hashed.
const MAX_ID_BYTES: usize = 512;

/// Provenance ids of every record of `batch`, in order.
pub fn provenance_ids(batch: &Batch) -> Vec<String> {
    let mut seen: HashMap<(&str, u32), u32> = HashMap::with_capacity(batch.len());
    batch
        .meta
        .iter()
        .map(|m| {
            let n = seen.entry((m.seq.as_str(), m.sub)).or_insert(0);
            let id = format!(
                "{}:{}:{}:{}:{}",
                batch.origin.source, batch.origin.partition, m.seq, m.sub, *n
            );
            *n += 1;
            bounded(id)
        })
        .collect()
}

fn bounded(id: String) -> String {
    if id.len() <= MAX_ID_BYTES {
        id
    } else {
        hex::encode(Sha256::digest(id.as_bytes()))
    }
}

/// The `_id` from `field` of `doc`; `Err` is why the record has none.
pub fn field_id(doc: &Value, field: &str) -> Result<String, String> {
    let v = field
        .split('.')
        .try_fold(doc, |v, k| v.get(k))
        .filter(|v| !v.is_null());
    match v {
        Some(Value::String(s)) if !s.is_empty() => Ok(bounded(s.clone())),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(format!(
            "id_field {field:?} is {other}, not a non-empty string or a number"
        )),
        None => Err(format!("the record has no id_field {field:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::RecordMeta;

    #[test]
    fn ids_follow_provenance_and_count_outputs_of_one_input() {
        let mut b = Batch::json_docs("src", &["{}", "{}", "{}", "{}"]);
        b.meta = vec![
            RecordMeta::line(7),
            RecordMeta::line(8),
            RecordMeta::line(8),
            RecordMeta::line(9),
        ];
        b.meta[3].sub = 2;
        assert_eq!(
            provenance_ids(&b),
            ["src:p:7:0:0", "src:p:8:0:0", "src:p:8:0:1", "src:p:9:2:0"]
        );
        // The same batch replayed gives the same ids.
        assert_eq!(provenance_ids(&b), provenance_ids(&b.clone()));
    }

    #[test]
    fn long_ids_are_hashed_and_fields_give_ids() {
        let mut b = Batch::json_docs("s", &["{}"]);
        b.meta[0].seq = "9".repeat(600).into();
        let id = &provenance_ids(&b)[0];
        assert_eq!(id.len(), 64);
        let doc = serde_json::json!({"id": "w1|CMT", "n": 5, "o": {"k": "x"}});
        assert_eq!(field_id(&doc, "id").unwrap(), "w1|CMT");
        assert_eq!(field_id(&doc, "n").unwrap(), "5");
        assert_eq!(field_id(&doc, "o.k").unwrap(), "x");
        assert!(field_id(&doc, "missing")
            .unwrap_err()
            .contains("no id_field"));
        assert!(field_id(&doc, "o").is_err());
    }
}

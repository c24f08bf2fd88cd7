//! The index template shipped with a pipeline (`template = "..."`): read and
//! checked by `validate`, put as `_index_template/NAME` at every start, so
//! new indices matching its `index_patterns` get the declared mappings.

use serde_json::Value;

use super::client::{Client, RequestError};

/// The template file as JSON, checked enough that the PUT cannot fail for
/// an obvious reason (the cluster judges the mappings themselves).
pub fn load(path: &str, name: &str) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the index template {path}: {e}"))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("the index template {path} is not JSON: {e}"))?;
    let Some(obj) = v.as_object() else {
        return Err(format!("the index template {path} must be a JSON object"));
    };
    match obj.get("index_patterns") {
        Some(Value::String(_)) => {}
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {}
        _ => {
            return Err(format!(
                "the index template {path} ({name}) needs \"index_patterns\": [\"pattern-*\", ...]"
            ))
        }
    }
    Ok(v)
}

/// Create or replace the template on the cluster.
pub async fn put(client: &Client, name: &str, body: &Value) -> Result<(), String> {
    let path = format!("/_index_template/{name}");
    let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
    match client
        .send(
            opensearch::http::Method::Put,
            &path,
            Some(bytes.into()),
            false,
        )
        .await
    {
        Ok((s, _)) if s.is_success() => Ok(()),
        Ok((s, body)) => Err(format!(
            "OpenSearch at {} refused the index template {name} (HTTP {s}): {}",
            client.endpoints(),
            super::bulk::reason_of_body(&body)
        )),
        Err(RequestError(m)) => Err(format!("cannot put the index template {name}: {m}")),
    }
}

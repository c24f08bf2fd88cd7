//! An aggregate stage's part of the checkpoint: its open windows (one
//! binary blob, base64), for session windows the fired sessions a record
//! could still reach (another), watermarks per partition and of the stage,
//! the keyed state, and the plugin's `state-version`. Restoring with a plugin
//! of a higher state-version migrates every accumulator once, through the
//! plugin's `migrate`; a failure stops the start with nothing written.
//!
//! Cost: every checkpoint re-encodes all open windows (not incremental).
//! Measured (count-aggregate, 1M keys open): see ARCHITECTURE.md.

use std::time::Instant;

use serde_json::{json, Value};

use super::store::Store;
use super::AggregateNode;
use crate::config::window::WindowKind;
use crate::plugin::bindings::columns::Blobs;
use crate::plugin::host::StateMap;
use crate::plugin::{AggregatePlugin, PluginError};

/// The checkpoint value of the node, as it is now.
pub fn take(n: &AggregateNode) -> Value {
    let (parts, stage) = n.marks.snapshot();
    json!({
        "state_version": n.plugin.info().state_version,
        "watermark": stage,
        "partitions": parts,
        "open_windows": n.store.len(),
        "windows": aws_smithy_types::base64::encode(n.store.encode()),
        // Absent from checkpoints written before sessions were remembered
        // after firing: such a checkpoint restores with none remembered.
        "fired_sessions": aws_smithy_types::base64::encode(n.store.encode_fired()),
        "keyed": crate::pipeline::stage::snapshot(&n.keyed),
    })
}

/// The keyed state of a checkpoint value (restored before `init`).
pub fn keyed(v: Option<&Value>) -> Option<&Value> {
    v.and_then(|v| v.get("keyed")).filter(|k| !k.is_null())
}

/// Restore windows and watermarks from a checkpoint value, migrating the
/// accumulators when the plugin's state-version is newer.
pub fn restore(n: &mut AggregateNode, v: Option<&Value>) -> Result<(), PluginError> {
    let Some(v) = v else { return Ok(()) };
    let plugin = &mut n.plugin;
    let corrupt = |p: &AggregatePlugin, m: String| PluginError::Migration {
        plugin: p.name().to_string(),
        stage: p.stage().to_string(),
        from: 0,
        to: p.info().state_version,
        message: format!("the checkpointed window state is unreadable: {m}"),
    };
    let blob = v.get("windows").and_then(Value::as_str).unwrap_or("");
    let bytes =
        aws_smithy_types::base64::decode(blob).map_err(|e| corrupt(plugin, e.to_string()))?;
    let session = matches!(n.windowing.kind, WindowKind::Session { .. });
    let mut store = Store::decode(&bytes, session).map_err(|m| corrupt(plugin, m))?;
    let fired = v.get("fired_sessions").and_then(Value::as_str).unwrap_or("");
    let fired = aws_smithy_types::base64::decode(fired).map_err(|e| corrupt(plugin, e.to_string()))?;
    store.decode_fired(&fired).map_err(|m| corrupt(plugin, m))?;
    let from = v.get("state_version").and_then(Value::as_u64).unwrap_or(0) as u32;
    migrate(plugin, &mut store, from)?;
    let parts = v
        .get("partitions")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_i64().map(|x| (k.clone(), x)))
                .collect()
        })
        .unwrap_or_default();
    let stage = v
        .get("watermark")
        .and_then(Value::as_i64)
        .unwrap_or(i64::MIN);
    n.marks.restore(parts, stage, Instant::now());
    n.store = store;
    n.keyed_bytes = keyed_bytes(&n.keyed);
    Ok(())
}

/// Re-encode every accumulator written under `from`; all or nothing.
pub fn migrate(
    plugin: &mut AggregatePlugin,
    store: &mut Store,
    from: u32,
) -> Result<(), PluginError> {
    let to = plugin.info().state_version;
    let fail = |p: &AggregatePlugin, message: String| PluginError::Migration {
        plugin: p.name().to_string(),
        stage: p.stage().to_string(),
        from,
        to,
        message,
    };
    if from > to {
        return Err(fail(plugin, format!("the checkpoint was written by a newer plugin (state-version {from}); this one cannot read it")));
    }
    if from == to || store.len() == 0 {
        return Ok(());
    }
    let started = Instant::now();
    // One call for every state (all or nothing): those of session windows
    // still waiting for values have none to migrate.
    let olds: Blobs = store.iter().filter_map(|(_, e)| e.state.clone()).collect();
    let migrated = olds.len();
    let new = plugin
        .migrate(from, &olds)
        .map_err(|err| fail(plugin, err.to_string()))?;
    let mut new = new.iter();
    for (_, e) in store.iter_mut() {
        if e.state.is_some() {
            e.state = new.next().map(<[u8]>::to_vec);
        }
    }
    store.recount();
    tracing::info!(stage = %plugin.stage(), plugin = %plugin.name(), from, to, migrated, took_ms = started.elapsed().as_millis() as u64, "migrated window state");
    Ok(())
}

/// Bytes held by a keyed state map (keys, values, per-entry overhead).
pub fn keyed_bytes(m: &StateMap) -> usize {
    m.lock()
        .expect("state lock")
        .iter()
        .map(|(k, v)| k.len() + v.len() + 64)
        .sum()
}

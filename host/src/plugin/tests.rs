//! Plugin instances against real stand-in components: state is
//! transactional per call, and `init` runs against the state it is given.

use serde_json::json;

use super::host::StateMap;
use super::testing::plugin;
use super::PluginError;
use crate::plugin::bindings::types;

fn json_batch(docs: &[&str]) -> types::Batch {
    let mut data = Vec::new();
    let mut offsets = vec![0u32];
    for d in docs {
        data.extend_from_slice(d.as_bytes());
        offsets.push(data.len() as u32);
    }
    types::Batch { format: types::Format::Json, data, offsets }
}

fn output_docs(t: &types::Transformed) -> Vec<String> {
    let o = &t.output.offsets;
    o.windows(2).map(|w| String::from_utf8(t.output.data[w[0] as usize..w[1] as usize].to_vec()).unwrap()).collect()
}

fn keys(state: &StateMap) -> Vec<String> {
    state.lock().unwrap().keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect()
}

#[test]
fn a_calls_state_writes_apply_only_when_committed() {
    let state = StateMap::default();
    let mut p = plugin("dedupe.wasm", "d", json!({"key": "id"}), state.clone()).unwrap();
    // `init` succeeded: its marker is committed.
    assert_eq!(keys(&state), ["m:key"]);
    let (out, writes) = p.process(&json_batch(&[r#"{"id":"a"}"#, r#"{"id":"b"}"#, r#"{"id":"a"}"#])).unwrap();
    assert_eq!(output_docs(&out), [r#"{"id":"a"}"#, r#"{"id":"b"}"#]);
    assert_eq!(writes.len(), 2);
    assert_eq!(keys(&state), ["m:key"], "writes reached the state before the call was accepted");
    writes.commit(&state);
    assert_eq!(keys(&state), [r#"k:"a""#, r#"k:"b""#, "m:key"]);
    let (out, writes) = p.process(&json_batch(&[r#"{"id":"a"}"#, r#"{"id":"c"}"#])).unwrap();
    assert_eq!(output_docs(&out), [r#"{"id":"c"}"#]);
    writes.commit(&state);
}

#[test]
fn a_trapping_call_leaves_no_state_behind() {
    let state = StateMap::default();
    let mut p = plugin("dedupe.wasm", "d", json!({"key": "id", "trap_on": "POISON"}), state.clone()).unwrap();
    let poisoned = json_batch(&[r#"{"id":"a"}"#, r#"{"id":"p","x":"POISON"}"#]);
    let e = p.process(&poisoned).unwrap_err();
    assert!(matches!(e, PluginError::Trap { .. }), "{e}");
    assert!(e.to_string().contains("trap_on \\\"POISON\\\" matched") || e.to_string().contains("POISON"), "{e}");
    assert_eq!(keys(&state), ["m:key"], "the failed call's writes reached the state");
    // The retry without the poison (a fresh instance) still sees `a` as new.
    let (out, writes) = p.process(&json_batch(&[r#"{"id":"a"}"#])).unwrap();
    assert_eq!(output_docs(&out), [r#"{"id":"a"}"#]);
    writes.commit(&state);
    assert_eq!(p.instantiations, 2);
}

#[test]
fn init_sees_the_state_it_is_given() {
    let state = StateMap::default();
    state.lock().unwrap().insert(b"m:key".to_vec(), b"name".to_vec());
    let e = plugin("dedupe.wasm", "d", json!({"key": "id"}), state.clone()).err().expect("init must refuse");
    assert!(matches!(e, PluginError::Init { .. }) && e.to_string().contains("\"name\""), "{e}");

    // The runtime's order: plan (init on empty state), restore, reinit.
    let state = StateMap::default();
    let mut p = plugin("dedupe.wasm", "d", json!({"key": "id"}), state.clone()).unwrap();
    crate::pipeline::stage::restore(&state, Some(&json!([[hex::encode("m:key"), hex::encode("name")]])));
    let e = p.reinit().unwrap_err();
    assert!(matches!(e, PluginError::Init { .. }), "{e}");
    crate::pipeline::stage::restore(&state, Some(&json!([[hex::encode("m:key"), hex::encode("id")], [hex::encode("k:\"a\""), ""]])));
    p.reinit().unwrap();
    let (out, _) = p.process(&json_batch(&[r#"{"id":"a"}"#, r#"{"id":"b"}"#])).unwrap();
    assert_eq!(output_docs(&out), [r#"{"id":"b"}"#]);
}

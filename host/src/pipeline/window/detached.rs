//! An aggregate stage outside a pipeline, driven by direct calls (unit tests,
//! `sluice bench`): its output and DLQ edges end in channels the caller reads.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use super::{spawn_prep, AggregateNode, Prep};
use crate::config::window::Windowing;
use crate::pipeline::edge::{Edge, Envelope, Outputs};
use crate::plugin::host::StateMap;
use crate::plugin::{AggregatePlugin, PluginError};

pub struct Detached {
    pub node: AggregateNode,
    /// Results (the edge to `sinks.out`).
    pub out: mpsc::Receiver<Envelope>,
    pub dlq: mpsc::Receiver<Envelope>,
    /// The runtime the node's blocking sends and timers use.
    pub rt: tokio::runtime::Runtime,
}

/// Stage `name` over `plugin`, restored from `saved` like a pipeline's
/// stage; `capacity` envelopes fit in each channel before the node blocks.
pub fn detached(
    name: &str,
    plugin: AggregatePlugin,
    windowing: Windowing,
    keyed: StateMap,
    saved: Option<&Value>,
    capacity: usize,
) -> Result<Detached, PluginError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let (out_tx, out) = mpsc::channel(capacity);
    let (dlq_tx, dlq) = mpsc::channel(capacity);
    let (_, rx) = mpsc::channel(1);
    let node = {
        let _g = rt.enter();
        spawn_prep(Prep {
            name: name.into(),
            plugin,
            windowing,
            state_memory: u64::MAX,
            keyed,
            saved,
            inputs: 1,
            rx,
            out: Outputs {
                edges: vec![Edge {
                    to: "sinks.out".into(),
                    input: 0,
                    tx: out_tx,
                }],
                dlq: Some(Edge {
                    to: "dlq".into(),
                    input: 0,
                    tx: dlq_tx,
                }),
            },
            acks: mpsc::unbounded_channel().0,
            requests: mpsc::unbounded_channel().0,
            stats: Arc::default(),
        })?
    };
    Ok(Detached {
        node,
        out,
        dlq,
        rt,
    })
}

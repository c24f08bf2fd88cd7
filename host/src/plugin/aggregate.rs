//! Aggregate plugins (the `aggregator` world, contract 0.2.0 or 0.1.0) on
//! the shared instance lifecycle (`managed.rs`): their calls, each returning
//! the `state` writes it made, not yet applied (invariant 5). Both
//! contracts answer in 0.2.0's columns (`columns.rs`); a 0.1.0 plugin's
//! per-record lists are converted here, so the stage has one code path.

use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::bindings::aggregator::{Aggregator as Aggregator01, AggregatorPre as AggregatorPre01};
use super::bindings::aggregator_0_2::{Aggregator as Aggregator02, AggregatorPre as AggregatorPre02};
use super::bindings::columns::{Blobs, Closed, Extracted, Groups};
use super::bindings::types;
use super::error::PluginError;
use super::host::{HostState, StateWrites};
use super::managed::{Managed, World};

/// An aggregator built against either contract version.
pub enum Aggregator {
    V0_2(Aggregator02),
    V0_1(Aggregator01),
}

pub enum AggregatorPre {
    V0_2(AggregatorPre02<HostState>),
    V0_1(AggregatorPre01<HostState>),
}

/// An aggregate stage's plugin.
pub type AggregatePlugin = Managed<Aggregator>;

impl World for Aggregator {
    type Pre = AggregatorPre;
    const EXPORT: &'static str = "sluice:plugin/aggregate";

    /// 0.2.0 first; a component that exports neither gets 0.2.0's error.
    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        match AggregatorPre02::new(pre.clone()) {
            Ok(p) => Ok(AggregatorPre::V0_2(p)),
            Err(e02) => AggregatorPre01::new(pre).map(AggregatorPre::V0_1).map_err(|e01| {
                wasmtime::Error::msg(format!("as 0.2.0: {e02}; as 0.1.0: {e01}"))
            }),
        }
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        match pre {
            AggregatorPre::V0_2(p) => p.instantiate(store).map(Aggregator::V0_2),
            AggregatorPre::V0_1(p) => p.instantiate(store).map(Aggregator::V0_1),
        }
    }
    fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<types::Info> {
        match self {
            Aggregator::V0_2(a) => a.sluice_plugin0_2_0_aggregate().call_describe(store),
            Aggregator::V0_1(a) => a.sluice_plugin_aggregate().call_describe(store),
        }
    }
    fn init(&self, store: &mut Store<HostState>, config: &str) -> wasmtime::Result<Result<(), String>> {
        match self {
            Aggregator::V0_2(a) => a.sluice_plugin0_2_0_aggregate().call_init(store, config),
            Aggregator::V0_1(a) => a.sluice_plugin_aggregate().call_init(store, config),
        }
    }
}

impl Managed<Aggregator> {
    /// Per record of `input` (n records): key, event time and value, in
    /// columns that were checked against the contract.
    pub fn extract(&mut self, input: &types::Batch, n: usize) -> Result<(Extracted, StateWrites), PluginError> {
        let (x, writes) = self.call(|a, s| match a {
            Aggregator::V0_2(a) => a.sluice_plugin0_2_0_aggregate().call_extract(s, input),
            Aggregator::V0_1(a) => {
                Ok(a.sluice_plugin_aggregate().call_extract(s, input)?.map(Extracted::from_0_1))
            }
        })?;
        x.check(n).map_err(|m| self.contract(m))?;
        Ok((x, writes))
    }

    /// One new state per group, in order.
    pub fn accumulate(&mut self, groups: &Groups) -> Result<(Blobs, StateWrites), PluginError> {
        let n = groups.len();
        let (states, writes) = self.call(|a, s| match a {
            Aggregator::V0_2(a) => a.sluice_plugin0_2_0_aggregate().call_accumulate(s, groups),
            Aggregator::V0_1(a) => Ok(a
                .sluice_plugin_aggregate()
                .call_accumulate(s, &groups.to_0_1())?
                .map(|states| states.into_iter().collect::<Blobs>())),
        })?;
        states.check("accumulate's states").map_err(|m| self.contract(m))?;
        if states.len() != n {
            return Err(self.contract(format!("accumulate returned {} states for {n} groups", states.len())));
        }
        Ok((states, writes))
    }

    /// The closed windows' output records: (index in `closed`, document),
    /// origins ascending. A 0.1.0 plugin gets one `finish` per window,
    /// all inside this one call (so their state writes commit or drop
    /// together, as a 0.2.0 plugin's one call's do).
    pub fn finish(&mut self, closed: &Closed) -> Result<(Vec<(usize, Vec<u8>)>, StateWrites), PluginError> {
        let n = closed.keys.len();
        // `Ok`: a 0.2.0 answer, still to check; `Err`: a 0.1.0 plugin's
        // documents, already one per window.
        let (out, writes) = self.call(|a, s| match a {
            Aggregator::V0_2(a) => Ok(a.sluice_plugin0_2_0_aggregate().call_finish(s, closed)?.map(Ok)),
            Aggregator::V0_1(a) => {
                let mut docs = Vec::new();
                for i in 0..n {
                    let w = types::Window { start_ms: closed.window_start_ms[i], end_ms: closed.window_end_ms[i] };
                    let f = a.sluice_plugin_aggregate().call_finish(&mut *s, w, closed.keys.get(i), closed.states.get(i))?;
                    docs.extend(f.map(|d| (i, d)));
                }
                Ok(Ok(Err(docs)))
            }
        })?;
        let docs = match out {
            Err(docs) => docs,
            Ok(f) => {
                f.docs.check("finish's documents").map_err(|m| self.contract(m))?;
                let ascending = f.origin.windows(2).all(|w| w[0] < w[1]);
                if f.origin.len() != f.docs.len() || !ascending || f.origin.last().is_some_and(|&o| o as usize >= n) {
                    return Err(self.contract(format!(
                        "finish returned {} documents for origins {:?}… of {n} windows (one per origin, ascending, each below {n})",
                        f.docs.len(),
                        &f.origin[..f.origin.len().min(8)]
                    )));
                }
                f.origin.iter().zip(f.docs.iter()).map(|(&o, d)| (o as usize, d.to_vec())).collect()
            }
        };
        Ok((docs, writes))
    }

    /// Re-encode states written under `from` (an older state-version), in
    /// order; all or nothing.
    pub fn migrate(&mut self, from: u32, states: &Blobs) -> Result<Blobs, PluginError> {
        // Writes made while migrating are dropped: migration re-encodes what
        // the checkpoint holds and must not change anything else.
        let (out, _) = self.call(|a, s| match a {
            Aggregator::V0_2(a) => a.sluice_plugin0_2_0_aggregate().call_migrate(s, from, states),
            Aggregator::V0_1(a) => {
                let mut out = Blobs::with_capacity(states.len(), states.data.len());
                for st in states.iter() {
                    match a.sluice_plugin_aggregate().call_migrate(&mut *s, from, st)? {
                        Ok(m) => out.push(&m),
                        Err(e) => return Ok(Err(e)),
                    }
                }
                Ok(Ok(out))
            }
        })?;
        out.check("migrate's states").map_err(|m| self.contract(m))?;
        if out.len() != states.len() {
            return Err(self.contract(format!("migrate returned {} states for {}", out.len(), states.len())));
        }
        Ok(out)
    }

    /// The contract version the component was built against.
    pub fn contract_version(&self) -> &'static str {
        match self.pre() {
            AggregatorPre::V0_2(_) => "0.2.0",
            AggregatorPre::V0_1(_) => "0.1.0",
        }
    }
}

//! Shard discovery (ListShards) and lineage: which shards may be read now.
//!
//! The rule that keeps per-partition-key order across resharding: a shard
//! starts only when each of its parents is finished (read to SHARD_END with
//! every record emitted downstream) or gone from the stream (past retention).
//! A SplitShard child has one parent, a MergeShards child two.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_kinesis::Client;

use super::client::{classify, CallError, StreamId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    /// Parent and adjacent parent (merge), when present.
    pub parents: Vec<String>,
    /// ListShards reports an ending sequence number: the shard takes no new
    /// records. (Its value is not trustworthy on emulators; only its presence is used.)
    pub closed: bool,
    /// Inclusive hash-key range (for `kpl_hash_range_filter`); unknown for a
    /// child learnt from ChildShards until a listing shows it.
    pub hash_range: Option<(u128, u128)>,
}

impl ShardInfo {
    pub fn from_sdk(s: &aws_sdk_kinesis::types::Shard) -> Self {
        let parents = s.parent_shard_id().into_iter().chain(s.adjacent_parent_shard_id()).map(str::to_string).collect();
        let closed = s.sequence_number_range().and_then(|r| r.ending_sequence_number()).is_some();
        let hash_range = s.hash_key_range().and_then(|h| Some((h.starting_hash_key().parse().ok()?, h.ending_hash_key().parse().ok()?)));
        ShardInfo { id: s.shard_id().to_string(), parents, closed, hash_range }
    }
}

/// Every shard of the stream (open and closed within retention), paginated.
pub async fn list(client: &Client, stream: &StreamId) -> Result<Vec<ShardInfo>, CallError> {
    Ok(list_sdk(client, stream).await?.iter().map(ShardInfo::from_sdk).collect())
}

/// ListShards, all pages, as the SDK returns them (the producer needs the hash ranges).
pub async fn list_sdk(client: &Client, stream: &StreamId) -> Result<Vec<aws_sdk_kinesis::types::Shard>, CallError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        // With a NextToken the API refuses the stream name.
        let req = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().set_stream_name(stream.name_owned()).set_stream_arn(stream.arn_owned()),
        };
        let resp = req.send().await.map_err(|e| classify(&e))?;
        out.extend(resp.shards().iter().cloned());
        match resp.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(out)
}

/// The known shards of a stream and their parent links.
#[derive(Debug, Default, Clone)]
pub struct Lineage {
    shards: BTreeMap<String, ShardInfo>,
}

impl Lineage {
    /// Replaces what is known with a fresh listing. Shards learnt from
    /// ChildShards (`add_child`) that the listing does not show yet are kept.
    pub fn update(&mut self, listing: Vec<ShardInfo>) {
        let listed: BTreeSet<String> = listing.iter().map(|s| s.id.clone()).collect();
        let learnt: Vec<ShardInfo> =
            self.shards.values().filter(|s| !listed.contains(&s.id) && s.parents.iter().any(|p| listed.contains(p))).cloned().collect();
        self.shards = listing.into_iter().map(|s| (s.id.clone(), s)).collect();
        for s in learnt {
            self.shards.insert(s.id.clone(), s);
        }
    }

    /// A child announced by GetRecords/SubscribeToShard ChildShards.
    pub fn add_child(&mut self, id: &str, parents: &[String]) {
        self.shards.entry(id.to_string()).or_insert_with(|| ShardInfo { id: id.to_string(), parents: parents.to_vec(), closed: false, hash_range: None });
        for p in parents {
            if let Some(s) = self.shards.get_mut(p) {
                s.closed = true;
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&ShardInfo> {
        self.shards.get(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.shards.contains_key(id)
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.shards.keys().map(String::as_str)
    }

    /// Closed per ListShards, or known to have a child.
    pub fn is_closed(&self, id: &str) -> bool {
        self.shards.get(id).is_some_and(|s| s.closed) || self.shards.values().any(|c| c.parents.iter().any(|p| p == id))
    }

    /// Shards that may start now: not finished, not running, and every parent
    /// finished or unknown (expired from the stream).
    pub fn ready(&self, finished: &BTreeSet<String>, running: &BTreeSet<String>) -> Vec<String> {
        self.shards
            .values()
            .filter(|s| !finished.contains(&s.id) && !running.contains(&s.id))
            .filter(|s| s.parents.iter().all(|p| finished.contains(p) || !self.shards.contains_key(p)))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Shards closed in this listing: at a fresh `latest` start, they hold
    /// nothing the source wants (everything in them is older than the start).
    pub fn closed_ids(&self) -> Vec<String> {
        self.shards.keys().filter(|id| self.is_closed(id)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str], closed: bool) -> ShardInfo {
        ShardInfo { id: id.into(), parents: parents.iter().map(|s| s.to_string()).collect(), closed, hash_range: None }
    }
    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    /// 0 split into 4 and 5; 1 and 2 merged into 6; 3 untouched.
    fn resharded() -> Lineage {
        let mut l = Lineage::default();
        l.update(vec![
            shard("0", &[], true),
            shard("1", &[], true),
            shard("2", &[], true),
            shard("3", &[], false),
            shard("4", &["0"], false),
            shard("5", &["0"], false),
            shard("6", &["1", "2"], false),
        ]);
        l
    }

    #[test]
    fn children_wait_for_all_parents() {
        let l = resharded();
        assert_eq!(l.ready(&set(&[]), &set(&[])), vec!["0", "1", "2", "3"]);
        assert_eq!(l.ready(&set(&[]), &set(&["0", "1", "2", "3"])), Vec::<String>::new());
        assert_eq!(l.ready(&set(&["0"]), &set(&["1", "2", "3"])), vec!["4", "5"]);
        // A merge child needs both parents.
        assert_eq!(l.ready(&set(&["0", "1"]), &set(&["2", "3", "4", "5"])), Vec::<String>::new());
        assert_eq!(l.ready(&set(&["0", "1", "2"]), &set(&["3", "4", "5"])), vec!["6"]);
    }

    #[test]
    fn expired_parents_do_not_block() {
        let mut l = Lineage::default();
        l.update(vec![shard("4", &["0"], false), shard("6", &["1", "2"], false)]);
        assert_eq!(l.ready(&set(&[]), &set(&[])), vec!["4", "6"]);
    }

    #[test]
    fn closed_detection_and_learnt_children() {
        let mut l = Lineage::default();
        l.update(vec![shard("0", &[], false), shard("1", &[], false)]);
        assert!(!l.is_closed("0"));
        l.add_child("7", &["0".to_string()]);
        assert!(l.is_closed("0"));
        // A listing that does not show the child yet keeps it.
        l.update(vec![shard("0", &[], false), shard("1", &[], false)]);
        assert!(l.contains("7") && l.is_closed("0"));
        assert_eq!(l.ready(&set(&["0"]), &set(&["1"])), vec!["7"]);
        assert_eq!(resharded().closed_ids(), vec!["0", "1", "2"]);
    }
}

//! Which open shard a partition key hashes to, so `--aggregate` packs
//! together only records that would land on the same shard anyway (as the
//! KPL does): an aggregate goes where its first record's key sends it.

use aws_sdk_kinesis::Client;
use md5::{Digest, Md5};

use crate::source::kinesis::client::{CallError, StreamId};

#[derive(Debug, Clone, Default)]
pub struct ShardMap {
    /// (starting hash key, ending hash key) of the open shards, sorted.
    ranges: Vec<(u128, u128)>,
}

impl ShardMap {
    pub async fn load(client: &Client, stream: &StreamId) -> Result<Self, CallError> {
        let mut ranges = Vec::new();
        for s in crate::source::kinesis::shards::list_sdk(client, stream).await? {
            let open = s.sequence_number_range().is_none_or(|r| r.ending_sequence_number().is_none());
            if let (true, Some(h)) = (open, s.hash_key_range()) {
                if let (Ok(a), Ok(b)) = (h.starting_hash_key().parse::<u128>(), h.ending_hash_key().parse::<u128>()) {
                    ranges.push((a, b));
                }
            }
        }
        Ok(Self::from_ranges(ranges))
    }

    pub fn from_ranges(mut ranges: Vec<(u128, u128)>) -> Self {
        ranges.sort_unstable();
        Self { ranges }
    }

    /// Index of the shard `key` hashes to (0 when the map is empty).
    pub fn shard_of(&self, key: &str) -> usize {
        let h = hash_key(key);
        self.ranges.iter().position(|&(a, b)| a <= h && h <= b).unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.ranges.len().max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// Kinesis' hash of a partition key: MD5 as a 128-bit big-endian integer.
pub fn hash_key(key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(key.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_land_in_their_range() {
        let half = u128::MAX / 2;
        let m = ShardMap::from_ranges(vec![(half + 1, u128::MAX), (0, half)]);
        for k in ["a", "b", "id0000001", "id0000002"] {
            let expected = if hash_key(k) <= half { 0 } else { 1 };
            assert_eq!(m.shard_of(k), expected, "{k}");
        }
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(hash_key(""), 0xd41d8cd98f00b204e9800998ecf8427e);
    }
}

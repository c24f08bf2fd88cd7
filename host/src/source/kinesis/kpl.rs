//! The KPL aggregation format: several user records packed into one Kinesis
//! record as `magic || protobuf(AggregatedRecord) || md5(protobuf)`.
//!
//! Reading (`deaggregate`) is used by the source; writing (`Aggregator`) by
//! `sluice produce --aggregate`. The messages are the KPL's `messages.proto`
//! (proto2), written by hand so no build script or protoc is needed.

use md5::{Digest, Md5};
use prost::Message;

/// First bytes of every aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;
/// Kinesis' limit for one record: data plus partition key.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

#[derive(Clone, PartialEq, Message)]
pub struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<Record>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Record {
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    pub data: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Tag {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KplError {
    #[error("aggregated record of {0} bytes is too short for the KPL format")]
    TooShort(usize),
    #[error("aggregated record checksum mismatch (MD5 of the protobuf payload)")]
    Checksum,
    #[error("aggregated record payload is not a valid AggregatedRecord: {0}")]
    Protobuf(String),
    #[error("sub-record {sub} refers to partition key #{index}, the table has {len}")]
    KeyIndex { sub: usize, index: u64, len: usize },
    #[error("aggregated record holds {0} sub-records (more than a sub-sequence number can address)")]
    TooMany(usize),
}

/// One user record out of a Kinesis record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Index in the aggregate: the sub-sequence number.
    pub sub: u32,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

/// Whether `data` claims to be an aggregate. Kinesis records here are JSON
/// documents, which never start with these bytes, so a record that does and
/// fails to decode is a corrupt aggregate, not a plain record.
pub fn is_aggregated(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// Unpacks an aggregated record (the caller checked `is_aggregated`).
pub fn deaggregate(data: &[u8]) -> Result<Vec<UserRecord>, KplError> {
    if data.len() < MAGIC.len() + DIGEST_LEN || !is_aggregated(data) {
        return Err(KplError::TooShort(data.len()));
    }
    let (payload, digest) = data[MAGIC.len()..].split_at(data.len() - MAGIC.len() - DIGEST_LEN);
    if Md5::digest(payload).as_slice() != digest {
        return Err(KplError::Checksum);
    }
    let agg = AggregatedRecord::decode(payload).map_err(|e| KplError::Protobuf(e.to_string()))?;
    if agg.records.len() > u32::MAX as usize {
        return Err(KplError::TooMany(agg.records.len()));
    }
    let keys = agg.partition_key_table;
    let hashes = agg.explicit_hash_key_table;
    agg.records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let partition_key = keys
                .get(r.partition_key_index as usize)
                .ok_or(KplError::KeyIndex { sub: i, index: r.partition_key_index, len: keys.len() })?
                .clone();
            // An out-of-range hash key index only affected routing, which already happened.
            let explicit_hash_key = r.explicit_hash_key_index.and_then(|j| hashes.get(j as usize).cloned());
            Ok(UserRecord { sub: i as u32, partition_key, explicit_hash_key, data: r.data })
        })
        .collect()
}

/// The 128-bit hash key Kinesis routes a user record by: its explicit hash
/// key (decimal), else the MD5 of its partition key read as a big-endian
/// integer. `None` for an explicit hash key that is not a 128-bit number.
pub fn hash_key(u: &UserRecord) -> Option<u128> {
    match &u.explicit_hash_key {
        Some(h) => h.parse().ok(),
        None => Some(u128::from_be_bytes(Md5::digest(u.partition_key.as_bytes()).into())),
    }
}

/// One Kinesis record ready for PutRecords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
    /// User records inside (1 for a record sent as is).
    pub count: usize,
}

/// Packs user records into aggregates of at most `max_bytes` (data plus
/// partition key, like Kinesis counts). The caller groups records by target
/// shard (as the KPL does) so a user record lands where it would alone.
#[derive(Debug)]
pub struct Aggregator {
    max_bytes: usize,
    agg: AggregatedRecord,
    /// Encoded protobuf length so far.
    payload_len: usize,
    key_index: std::collections::HashMap<String, u64>,
}

/// Bytes of a length-delimited protobuf field with a 1-byte tag.
fn field_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

impl Aggregator {
    /// `max_bytes` is capped at Kinesis' 1 MiB record limit.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes: max_bytes.min(MAX_RECORD_BYTES),
            agg: AggregatedRecord::default(),
            payload_len: 0,
            key_index: Default::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.agg.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agg.records.is_empty()
    }

    /// Size of the outer record (data + outer partition key) if `key`/`data` were added.
    fn size_with(&self, key: &str, data: &[u8]) -> usize {
        let new_key = !self.key_index.contains_key(key);
        let index = if new_key { self.agg.partition_key_table.len() } else { self.key_index[key] as usize };
        let record = Record { partition_key_index: index as u64, explicit_hash_key_index: None, data: Vec::new(), tags: vec![] };
        let record_len = record.encoded_len() + field_len(data.len()) - field_len(0);
        let mut payload = self.payload_len + field_len(record_len);
        if new_key {
            payload += field_len(key.len());
        }
        let outer_key = self.agg.partition_key_table.first().map_or(key.len(), |k| k.len());
        MAGIC.len() + payload + DIGEST_LEN + outer_key
    }

    /// Adds a user record. False (and nothing added) when it would not fit:
    /// `finish` the current aggregate and push it again. A record that does
    /// not fit into an empty aggregator is always accepted; `finish` then
    /// returns it as a plain record, and Kinesis decides.
    pub fn push(&mut self, key: &str, data: &[u8]) -> bool {
        if !self.is_empty() && self.size_with(key, data) > self.max_bytes {
            return false;
        }
        let index = match self.key_index.get(key) {
            Some(&i) => i,
            None => {
                let i = self.agg.partition_key_table.len() as u64;
                self.agg.partition_key_table.push(key.to_string());
                self.key_index.insert(key.to_string(), i);
                self.payload_len += field_len(key.len());
                i
            }
        };
        let record = Record { partition_key_index: index, explicit_hash_key_index: None, data: data.to_vec(), tags: vec![] };
        self.payload_len += field_len(record.encoded_len());
        self.agg.records.push(record);
        true
    }

    /// The aggregate so far (a single record goes out as is, like the KPL
    /// does), leaving the aggregator empty. `None` when empty.
    pub fn finish(&mut self) -> Option<PackedRecord> {
        let mut agg = std::mem::take(&mut self.agg);
        self.key_index.clear();
        self.payload_len = 0;
        match agg.records.len() {
            0 => None,
            1 => {
                let r = agg.records.pop().expect("one record");
                let key = agg.partition_key_table.swap_remove(r.partition_key_index as usize);
                Some(PackedRecord { partition_key: key, explicit_hash_key: None, data: r.data, count: 1 })
            }
            count => {
                let payload = agg.encode_to_vec();
                let mut data = Vec::with_capacity(MAGIC.len() + payload.len() + DIGEST_LEN);
                data.extend_from_slice(&MAGIC);
                data.extend_from_slice(&payload);
                data.extend_from_slice(&Md5::digest(&payload));
                let partition_key = agg.partition_key_table.swap_remove(0);
                Some(PackedRecord { partition_key, explicit_hash_key: None, data, count })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(records: &[(&str, &str)], max: usize) -> Vec<PackedRecord> {
        let mut a = Aggregator::new(max);
        let mut out = Vec::new();
        for (k, d) in records {
            if !a.push(k, d.as_bytes()) {
                out.extend(a.finish());
                assert!(a.push(k, d.as_bytes()));
            }
        }
        out.extend(a.finish());
        out
    }

    #[test]
    fn round_trip() {
        let input: Vec<(String, String)> =
            (0..50).map(|i| (format!("id{}", i % 7), format!("{{\"id\":\"id{i}\",\"n\":{i}}}"))).collect();
        let refs: Vec<(&str, &str)> = input.iter().map(|(k, d)| (k.as_str(), d.as_str())).collect();
        let packed = pack(&refs, 1 << 20);
        assert_eq!(packed.len(), 1);
        assert_eq!(packed[0].count, 50);
        assert_eq!(packed[0].partition_key, "id0");
        assert!(is_aggregated(&packed[0].data));
        let out = deaggregate(&packed[0].data).unwrap();
        assert_eq!(out.len(), 50);
        for (i, (r, (k, d))) in out.iter().zip(&input).enumerate() {
            assert_eq!(r.sub, i as u32);
            assert_eq!(&r.partition_key, k);
            assert_eq!(r.data, d.as_bytes());
        }
    }

    #[test]
    fn respects_the_size_limit_exactly() {
        let data = "x".repeat(1000);
        let input: Vec<(String, String)> = (0..300).map(|i| (format!("key-{i}"), data.clone())).collect();
        let refs: Vec<(&str, &str)> = input.iter().map(|(k, d)| (k.as_str(), d.as_str())).collect();
        for max in [10_000usize, 50 * 1024, 1 << 20, 4 << 20] {
            let packed = pack(&refs, max);
            let mut n = 0;
            for p in &packed {
                let size = p.data.len() + p.partition_key.len();
                assert!(size <= max.min(MAX_RECORD_BYTES), "{size} > {max}");
                let subs = if is_aggregated(&p.data) { deaggregate(&p.data).unwrap() } else { vec![] };
                n += subs.len().max(1);
            }
            assert_eq!(n, 300);
            // Not wastefully small: each aggregate but the last is close to full.
            if packed.len() > 1 {
                let first = packed[0].data.len() + packed[0].partition_key.len();
                assert!(first + 1100 > max.min(MAX_RECORD_BYTES), "{first} for max {max}");
            }
        }
    }

    #[test]
    fn single_record_goes_out_plain() {
        let packed = pack(&[("k", "{\"a\":1}")], 1 << 20);
        assert_eq!(packed, vec![PackedRecord { partition_key: "k".into(), explicit_hash_key: None, data: b"{\"a\":1}".to_vec(), count: 1 }]);
        assert!(!is_aggregated(&packed[0].data));
    }

    #[test]
    fn corrupted_digest_is_detected() {
        let mut p = pack(&[("a", "1"), ("b", "2")], 1 << 20).remove(0);
        let last = p.data.len() - 1;
        p.data[last] ^= 0xFF;
        assert_eq!(deaggregate(&p.data), Err(KplError::Checksum));
    }

    #[test]
    fn corrupted_payload_is_detected() {
        let mut p = pack(&[("a", "1"), ("b", "2")], 1 << 20).remove(0);
        p.data[6] ^= 0x55;
        assert_eq!(deaggregate(&p.data), Err(KplError::Checksum));
        // A consistent digest over garbage: the protobuf decode fails.
        let garbage = vec![0xFFu8; 12];
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&garbage);
        data.extend_from_slice(&Md5::digest(&garbage));
        assert!(matches!(deaggregate(&data), Err(KplError::Protobuf(_))));
        assert_eq!(deaggregate(&MAGIC), Err(KplError::TooShort(4)));
    }

    #[test]
    fn bad_key_index_is_detected() {
        let agg = AggregatedRecord {
            partition_key_table: vec!["a".into()],
            explicit_hash_key_table: vec![],
            records: vec![Record { partition_key_index: 3, explicit_hash_key_index: None, data: b"x".to_vec(), tags: vec![] }],
        };
        let payload = agg.encode_to_vec();
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&payload);
        data.extend_from_slice(&Md5::digest(&payload));
        assert_eq!(deaggregate(&data), Err(KplError::KeyIndex { sub: 0, index: 3, len: 1 }));
    }

    #[test]
    fn hash_keys_as_kinesis_routes_them() {
        let u = |key: &str, ehk: Option<&str>| UserRecord { sub: 0, partition_key: key.into(), explicit_hash_key: ehk.map(Into::into), data: vec![] };
        // md5("") = d41d8cd98f00b204e9800998ecf8427e, read big-endian.
        assert_eq!(hash_key(&u("", None)), Some(0xd41d8cd98f00b204e9800998ecf8427e));
        assert_eq!(hash_key(&u("k", Some("12345"))), Some(12345), "an explicit hash key wins");
        assert_eq!(hash_key(&u("k", Some("not a number"))), None);
    }

    #[test]
    fn reads_explicit_hash_keys_and_tags() {
        let agg = AggregatedRecord {
            partition_key_table: vec!["a".into(), "b".into()],
            explicit_hash_key_table: vec!["12345".into()],
            records: vec![
                Record { partition_key_index: 1, explicit_hash_key_index: Some(0), data: b"one".to_vec(), tags: vec![Tag { key: "t".into(), value: None }] },
                Record { partition_key_index: 0, explicit_hash_key_index: None, data: b"two".to_vec(), tags: vec![] },
            ],
        };
        let payload = agg.encode_to_vec();
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&payload);
        data.extend_from_slice(&Md5::digest(&payload));
        let out = deaggregate(&data).unwrap();
        assert_eq!(out[0].partition_key, "b");
        assert_eq!(out[0].explicit_hash_key.as_deref(), Some("12345"));
        assert_eq!(out[1], UserRecord { sub: 1, partition_key: "a".into(), explicit_hash_key: None, data: b"two".to_vec() });
    }
}

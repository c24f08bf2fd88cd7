//! Human units in pipeline files: durations ("250ms", "30s", "5m") and sizes
//! ("64MiB", "128MB", or a plain number of bytes).

use std::time::Duration;

use serde::{de, Deserialize, Deserializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(Dur)
            .map_err(|e| de::Error::custom(format!("invalid duration {s:?} ({e}); write e.g. \"250ms\", \"30s\", \"5m\"")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse::<bytesize::ByteSize>().map(|b| ByteSize(b.as_u64())).map_err(|e| {
                de::Error::custom(format!("invalid size {s:?} ({e}); write e.g. \"64MiB\", \"128MB\""))
            }),
        }
    }
}

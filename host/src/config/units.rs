//! Human units in pipeline files: durations ("250ms", "30s", "5m"), sizes
//! ("64MiB", "128MB", or a plain number of bytes), loopback addresses and
//! secrets (checked while parsing, so errors carry the key's line).

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

/// A socket address on the loopback interface. Anything else is refused:
/// the admin endpoint is not meant to be reachable from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopbackAddr(pub std::net::SocketAddr);

impl<'de> Deserialize<'de> for LoopbackAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let addr: std::net::SocketAddr = s
            .parse()
            .map_err(|e| de::Error::custom(format!("invalid address {s:?} ({e}); write e.g. \"127.0.0.1:9464\"")))?;
        if !addr.ip().is_loopback() {
            return Err(de::Error::custom(format!(
                "{s:?} is not a loopback address; the admin endpoint binds to 127.0.0.1 or [::1] only \
                 (put a reverse proxy in front to expose it)"
            )));
        }
        Ok(LoopbackAddr(addr))
    }
}

/// A secret from the pipeline file (usually `${SLUICE_ADMIN_TOKEN}`): never
/// printed, at least 16 characters.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub const MIN_LEN: usize = 16;

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.chars().count() < Self::MIN_LEN {
            return Err(de::Error::custom(format!(
                "the token is {} characters long; use at least {} (e.g. `openssl rand -hex 24`)",
                s.chars().count(),
                Self::MIN_LEN
            )));
        }
        Ok(Secret(s))
    }
}

//! Network grants: which socket addresses a stage's plugin may use.
//!
//! `network = true` grants everything; `network = ["PATTERN", ...]` grants
//! outbound TCP connections and UDP datagrams to addresses matching one of
//! the patterns and nothing else (no listening, no binding to a chosen port).
//! A pattern is `HOST:PORT`:
//! - HOST: `*` (any address), an IP address (`127.0.0.1`, `[::1]`), a
//!   network (`10.0.0.0/8`, `[fd00::/8]`), or a host name (`db.internal`),
//!   which matches the addresses it resolves to when the plugin connects;
//! - PORT: a number, a range `8000-8099`, or `*`.
//!
//! The sandbox sees addresses, not names, so a host name is resolved by the
//! host at each check, and wildcard names (`*.example.com`) cannot be
//! honoured: they are refused rather than silently widened. Name lookup from
//! the plugin is enabled only when some pattern names a host (or `*`); it is
//! then not restricted by name.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use wasmtime_wasi::sockets::SocketAddrUse;

/// The `network` key of `[stages.NAME.grants]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkGrant {
    /// No sockets, no name lookup (the default; also `network = false`).
    #[default]
    None,
    /// `network = true`: any address, any use.
    Any,
    /// Outbound use of matching addresses only.
    Allow(Vec<NetPattern>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPattern {
    host: HostPattern,
    ports: (u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Net { addr: IpAddr, prefix: u8 },
    Name(String),
}

impl NetworkGrant {
    /// Whether the plugin may resolve names at all.
    pub fn allows_lookup(&self) -> bool {
        match self {
            NetworkGrant::None => false,
            NetworkGrant::Any => true,
            NetworkGrant::Allow(ps) => ps.iter().any(|p| matches!(p.host, HostPattern::Any | HostPattern::Name(_))),
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, NetworkGrant::None) || matches!(self, NetworkGrant::Allow(p) if p.is_empty())
    }

    /// The check wasmtime-wasi runs for every socket address a plugin uses.
    pub fn checker(
        &self,
    ) -> impl Fn(SocketAddr, SocketAddrUse) -> Pin<Box<dyn std::future::Future<Output = bool> + Send + Sync>> + Send + Sync + 'static {
        let grant = Arc::new(self.clone());
        move |addr, use_| {
            let grant = grant.clone();
            Box::pin(async move { grant.permits(addr, use_).await })
        }
    }

    async fn permits(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        let patterns = match self {
            NetworkGrant::None => return false,
            NetworkGrant::Any => return true,
            NetworkGrant::Allow(p) => p,
        };
        match use_ {
            // The implicit bind before a connect or send is to the wildcard
            // address and an ephemeral port; choosing a port is serving.
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => addr.ip().is_unspecified() && addr.port() == 0,
            SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => false,
            SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
                for p in patterns {
                    if p.matches(addr).await {
                        return true;
                    }
                }
                false
            }
        }
    }
}

impl NetPattern {
    async fn matches(&self, addr: SocketAddr) -> bool {
        if addr.port() < self.ports.0 || addr.port() > self.ports.1 {
            return false;
        }
        let ip = addr.ip().to_canonical();
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Net { addr: net, prefix } => in_net(ip, *net, *prefix),
            HostPattern::Name(name) => match tokio::net::lookup_host((name.as_str(), addr.port())).await {
                Ok(mut addrs) => addrs.any(|a| a.ip().to_canonical() == ip),
                Err(e) => {
                    tracing::debug!(host = %name, error = %e, "granted host name does not resolve");
                    false
                }
            },
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl std::str::FromStr for NetPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let hint = "a pattern is HOST:PORT, e.g. \"127.0.0.1:8080\", \"10.0.0.0/8:*\", \"[::1]:443\", \"db.internal:5432\"";
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest.split_once("]:").ok_or_else(|| format!("{s:?}: an IPv6 host needs brackets and a port; {hint}"))?;
            (h, p)
        } else {
            s.rsplit_once(':').ok_or_else(|| format!("{s:?} has no port; {hint}"))?
        };
        let ports = parse_ports(port).map_err(|e| format!("{s:?}: {e}; {hint}"))?;
        let host = parse_host(host, s.starts_with('[')).map_err(|e| format!("{s:?}: {e}; {hint}"))?;
        Ok(NetPattern { host, ports })
    }
}

fn parse_ports(p: &str) -> Result<(u16, u16), String> {
    let num = |t: &str| t.parse::<u16>().map_err(|_| format!("port {t:?} is not a number from 0 to 65535 or *"));
    if p == "*" {
        return Ok((0, u16::MAX));
    }
    match p.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(format!("port range {p:?} is empty"));
            }
            Ok((a, b))
        }
        None => num(p).map(|n| (n, n)),
    }
}

fn parse_host(h: &str, bracketed: bool) -> Result<HostPattern, String> {
    if h == "*" && !bracketed {
        return Ok(HostPattern::Any);
    }
    let (addr, prefix) = match h.split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| format!("prefix length {p:?} is not a number"))?)),
        None => (h, None),
    };
    if let Ok(ip) = addr.parse::<IpAddr>() {
        if bracketed != ip.is_ipv6() {
            return Err(if bracketed { "only IPv6 addresses go in brackets".into() } else { "an IPv6 address goes in brackets".into() });
        }
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(format!("prefix length /{prefix} is longer than {max}"));
        }
        return Ok(HostPattern::Net { addr: ip, prefix });
    }
    if bracketed || prefix.is_some() {
        return Err(format!("{addr:?} is not an IP address"));
    }
    if h.contains('*') {
        return Err(
            "wildcard host names cannot be checked (the sandbox sees addresses, not names): name each host, or grant a network".into()
        );
    }
    let valid = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid {
        return Err(format!("{h:?} is not an IP address, a network or a host name"));
    }
    Ok(HostPattern::Name(h.to_ascii_lowercase()))
}

impl<'de> Deserialize<'de> for NetPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for NetworkGrant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NetworkGrant;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false, or a list of \"HOST:PORT\" patterns")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<NetworkGrant, E> {
                Ok(if v { NetworkGrant::Any } else { NetworkGrant::None })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NetworkGrant, A::Error> {
                let mut out = Vec::new();
                while let Some(p) = seq.next_element::<NetPattern>()? {
                    out.push(p);
                }
                Ok(NetworkGrant::Allow(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(ps: &[&str]) -> NetworkGrant {
        NetworkGrant::Allow(ps.iter().map(|p| p.parse().unwrap()).collect())
    }

    fn permits(g: &NetworkGrant, addr: &str, use_: SocketAddrUse) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(g.permits(addr.parse().unwrap(), use_))
    }

    #[test]
    fn patterns_match_addresses_and_ports() {
        let g = grant(&["127.0.0.1:8080", "10.0.0.0/8:*", "[::1]:443", "192.168.1.1:9000-9009"]);
        let connect = |a: &str| permits(&g, a, SocketAddrUse::TcpConnect);
        assert!(connect("127.0.0.1:8080"));
        assert!(!connect("127.0.0.1:8081"));
        assert!(!connect("127.0.0.2:8080"));
        assert!(connect("10.200.3.4:1"));
        assert!(!connect("11.0.0.1:1"));
        assert!(connect("[::1]:443"));
        assert!(connect("192.168.1.1:9009"));
        assert!(!connect("192.168.1.1:9010"));
        // An IPv4-mapped IPv6 address is the IPv4 address.
        assert!(connect("[::ffff:127.0.0.1]:8080"));
        assert!(!g.allows_lookup());
    }

    #[test]
    fn allow_lists_never_serve() {
        let g = grant(&["*:*"]);
        assert!(permits(&g, "0.0.0.0:0", SocketAddrUse::TcpBind));
        assert!(!permits(&g, "0.0.0.0:8080", SocketAddrUse::TcpBind));
        assert!(!permits(&g, "127.0.0.1:8080", SocketAddrUse::TcpListen));
        assert!(!permits(&g, "127.0.0.1:8080", SocketAddrUse::TcpAccept));
        assert!(permits(&g, "8.8.8.8:53", SocketAddrUse::UdpSend));
        assert!(g.allows_lookup());
        assert!(permits(&NetworkGrant::Any, "0.0.0.0:8080", SocketAddrUse::TcpListen));
        assert!(!permits(&NetworkGrant::None, "127.0.0.1:8080", SocketAddrUse::TcpConnect));
    }

    #[test]
    fn host_names_match_what_they_resolve_to() {
        let g = grant(&["localhost:8080"]);
        assert!(g.allows_lookup());
        assert!(permits(&g, "127.0.0.1:8080", SocketAddrUse::TcpConnect));
        assert!(!permits(&g, "127.0.0.1:8081", SocketAddrUse::TcpConnect));
        assert!(!permits(&g, "10.1.1.1:8080", SocketAddrUse::TcpConnect));
    }

    #[test]
    fn bad_patterns_say_why() {
        for (p, why) in [
            ("127.0.0.1", "no port"),
            ("127.0.0.1:http", "not a number"),
            ("127.0.0.1:90-80", "empty"),
            ("10.0.0.0/33:*", "longer than 32"),
            ("*.example.com:443", "wildcard host names"),
            ("::1:443", "an IPv6 address goes in brackets"),
            ("exa mple.com:443", "not an IP address, a network or a host name"),
            ("[127.0.0.1]:443", "only IPv6"),
            ("bad_name:1", "not an IP address"),
        ] {
            let e = p.parse::<NetPattern>().unwrap_err();
            assert!(e.contains(why), "{p}: {e}");
        }
    }

    #[test]
    fn network_is_a_bool_or_a_list() {
        #[derive(Deserialize)]
        struct G {
            network: NetworkGrant,
        }
        let g: G = toml::from_str("network = true").unwrap();
        assert_eq!(g.network, NetworkGrant::Any);
        let g: G = toml::from_str("network = false").unwrap();
        assert!(g.network.is_none());
        let g: G = toml::from_str(r#"network = ["127.0.0.1:1", "[::1]:*"]"#).unwrap();
        assert_eq!(g.network, grant(&["127.0.0.1:1", "[::1]:*"]));
        let e = toml::from_str::<G>(r#"network = ["127.0.0.1:1", "nope"]"#).err().unwrap().to_string();
        assert!(e.contains("\"nope\" has no port"), "{e}");
        let e = toml::from_str::<G>(r#"network = "yes""#).err().unwrap().to_string();
        assert!(e.contains("a list of \"HOST:PORT\" patterns"), "{e}");
    }
}

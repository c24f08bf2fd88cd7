//! `sandbox-probe` (JSON in, JSON out): for the host's sandbox tests. Once per
//! batch it tries every attempt its config names, then emits one record per
//! input record: `{"index": i, "read": {"PATH": OUTCOME, ...}, "write": OUTCOME,
//! "env": {"NAME": OUTCOME, ...}, "connect": {"ADDR": OUTCOME, ...}, "lookup": OUTCOME}`
//! where an OUTCOME is
//! `{"ok": true, "value": "..."}` or `{"ok": false, "error": "..."}` (absent
//! when not configured). A denied attempt is an ordinary error inside the
//! plugin; nothing here traps.
//!
//! Config (every key optional):
//! - `read`: paths to read (`/data/secret.txt`);
//! - `write`: a path to create and write (`/data/new.txt`);
//! - `env`: environment variables to read;
//! - `connect`: addresses to open a TCP connection to (`127.0.0.1:8080`, `localhost:8080`);
//! - `lookup`: a host name to resolve.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};

use serde::Deserialize;
use serde_json::{json, Map, Value};
use sluice_plugin_sdk::{export_transform, Batch, Config, Format, JsonOutput, Transform, Transformed};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ProbeConfig {
    read: Vec<String>,
    write: Option<String>,
    env: Vec<String>,
    connect: Vec<String>,
    lookup: Option<String>,
}

fn outcome<E: std::fmt::Display>(r: Result<String, E>) -> Value {
    match r {
        Ok(v) => json!({"ok": true, "value": v}),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    }
}

struct Probe {
    cfg: ProbeConfig,
}

impl Probe {
    fn attempts(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if !self.cfg.read.is_empty() {
            let r = self.cfg.read.iter().map(|p| (p.clone(), outcome(std::fs::read_to_string(p)))).collect();
            m.insert("read".into(), Value::Object(r));
        }
        if let Some(p) = &self.cfg.write {
            let r = std::fs::File::create(p).and_then(|mut f| f.write_all(b"written by sandbox-probe\n")).map(|()| p.clone());
            m.insert("write".into(), outcome(r));
        }
        if !self.cfg.env.is_empty() {
            let r = self.cfg.env.iter().map(|n| (n.clone(), outcome(std::env::var(n)))).collect();
            m.insert("env".into(), Value::Object(r));
        }
        if !self.cfg.connect.is_empty() {
            let mut c = Map::new();
            for addr in &self.cfg.connect {
                let r = TcpStream::connect(addr.as_str()).and_then(|s| s.peer_addr()).map(|a| a.to_string());
                c.insert(addr.clone(), outcome(r));
            }
            m.insert("connect".into(), Value::Object(c));
        }
        if let Some(name) = &self.cfg.lookup {
            let r = (name.as_str(), 0u16).to_socket_addrs().map(|addrs| {
                let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                ips.sort();
                ips.dedup();
                ips.join(",")
            });
            m.insert("lookup".into(), outcome(r));
        }
        m
    }
}

impl Transform for Probe {
    const TAKES: Format = Format::Json;
    const EMITS: Format = Format::Json;

    fn init(config: Config) -> Result<Self, String> {
        Ok(Self { cfg: config.parse()? })
    }

    fn process(&mut self, input: Batch) -> Result<Transformed, String> {
        let attempts = self.attempts();
        let mut out = JsonOutput::for_input(&input);
        for (i, _) in input.json_records()? {
            let mut rec = attempts.clone();
            rec.insert("index".into(), json!(i));
            out.push(i, &Value::Object(rec))?;
        }
        Ok(out.finish())
    }
}

export_transform!(Probe);

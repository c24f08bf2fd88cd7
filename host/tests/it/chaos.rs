//! A fault-injecting HTTP proxy in front of kinesis-local (which never
//! throttles): per operation and call number it forwards, answers
//! ProvisionedThroughputExceeded, or (PutRecords) forwards only every other
//! entry and reports the rest as throttled — a real partial failure, with
//! nothing written twice. Request/response bodies are awsJson 1.1.
//! It also answers any error the API reference lists (`Fail`), hides a shard
//! from ListShards answers (`HideShard`, a shard past retention), and passes
//! SubscribeToShard's event stream through as raw bytes, or stops passing it
//! after a moment while keeping the connection open (`Stall`, a half-open
//! connection).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Forward,
    Throttle,
    RejectHalf,
    /// An error answer: HTTP status, `__type` and message.
    Fail(u16, &'static str, &'static str),
    /// ListShards: forwards and removes this shard from the answer.
    HideShard(&'static str),
    /// SubscribeToShard: passes the stream for a moment, then nothing more
    /// (the connection stays open).
    Stall,
}

pub type Decide = Arc<dyn Fn(&str, u64) -> Action + Send + Sync>;

/// One call as the proxy sees it: operation, its number (per operation, from
/// 0) and the JSON request body.
pub struct Call<'a> {
    pub op: &'a str,
    pub n: u64,
    pub body: &'a Value,
}

pub type DecideCall = Arc<dyn Fn(&Call) -> Action + Send + Sync>;

pub struct Chaos {
    pub endpoint: String,
    /// Injected faults per operation.
    pub faults: Arc<Mutex<BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Chaos {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Chaos {
    pub fn faults(&self, op: &str) -> u64 {
        self.faults.lock().unwrap().get(op).copied().unwrap_or(0)
    }
}

/// Starts the proxy for `upstream` (`http://127.0.0.1:PORT`).
pub async fn start(upstream: &str, decide: Decide) -> Chaos {
    start_with(upstream, Arc::new(move |c: &Call| decide(c.op, c.n))).await
}

/// Like `start`, deciding on the whole call (e.g. the iterator type asked for).
pub async fn start_with(upstream: &str, decide: DecideCall) -> Chaos {
    let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let faults: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let calls: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let f = faults.clone();
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (up, decide, calls, faults) = (upstream.clone(), decide.clone(), calls.clone(), f.clone());
            tokio::spawn(async move {
                let _ = serve(sock, &up, decide, calls, faults).await;
            });
        }
    });
    Chaos { endpoint, faults, task }
}

struct Request {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP/1.1 message (head + Content-Length body); `None` at EOF.
async fn read_message(sock: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Request>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let line = lines.next().unwrap_or_default().to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
                .collect();
            let len: usize = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).map_or(0, |(_, v)| v.parse().unwrap_or(0));
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 65536];
                let n = sock.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Ok(Some(Request { line, headers, body }));
        }
        let mut chunk = [0u8; 65536];
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(
    mut sock: TcpStream,
    upstream: &str,
    decide: DecideCall,
    calls: Arc<Mutex<BTreeMap<String, u64>>>,
    faults: Arc<Mutex<BTreeMap<String, u64>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(req) = read_message(&mut sock, &mut buf).await? {
        let op = req.header("x-amz-target").and_then(|t| t.rsplit('.').next()).unwrap_or("").to_string();
        let n = {
            let mut c = calls.lock().unwrap();
            let e = c.entry(op.clone()).or_default();
            *e += 1;
            *e - 1
        };
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let action = decide(&Call { op: &op, n, body: &body });
        if action != Action::Forward {
            *faults.lock().unwrap().entry(op.clone()).or_default() += 1;
        }
        if op == "SubscribeToShard" && matches!(action, Action::Forward | Action::Stall) {
            // An event stream: raw bytes until either side closes; this
            // connection is done after it (the client opens a new one).
            return pipe(sock, upstream, &req, action == Action::Stall).await;
        }
        let (status, headers, body) = match action {
            Action::Fail(status, kind, message) => (
                format!("HTTP/1.1 {status} Error"),
                vec![("Content-Type".to_string(), "application/x-amz-json-1.1".to_string())],
                serde_json::to_vec(&json!({"__type": kind, "message": message})).unwrap(),
            ),
            Action::HideShard(shard) => {
                let (line, headers, body) = forward(upstream, &req, &req.body).await?;
                let mut doc: Value = serde_json::from_slice(&body).map_err(std::io::Error::other)?;
                if let Some(list) = doc["Shards"].as_array_mut() {
                    list.retain(|s| s["ShardId"] != shard);
                }
                (line, headers, serde_json::to_vec(&doc).unwrap())
            }
            Action::Stall => panic!("Stall is for SubscribeToShard"),
            Action::Throttle => (
                "HTTP/1.1 400 Bad Request".to_string(),
                vec![("Content-Type".to_string(), "application/x-amz-json-1.1".to_string())],
                serde_json::to_vec(&json!({"__type": "ProvisionedThroughputExceededException", "message": "Rate exceeded (injected)"}))
                    .unwrap(),
            ),
            Action::Forward => forward(upstream, &req, &req.body).await?,
            Action::RejectHalf => reject_half(upstream, &req).await?,
        };
        let mut out = format!("{status}\r\n");
        for (k, v) in headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("connection")) {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        sock.write_all(out.as_bytes()).await?;
        sock.write_all(&body).await?;
    }
    Ok(())
}

type Response = (String, Vec<(String, String)>, Vec<u8>);

/// Sends the request upstream and copies the answer back as raw bytes. With
/// `stall`, copying stops after a moment and both connections stay open until
/// the client gives up on its side.
async fn pipe(mut sock: TcpStream, upstream: &str, req: &Request, stall: bool) -> std::io::Result<()> {
    let mut up = TcpStream::connect(upstream).await?;
    let mut head = format!("{}\r\n", req.line);
    for (k, v) in req.headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("content-length")) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", req.body.len()));
    up.write_all(head.as_bytes()).await?;
    up.write_all(&req.body).await?;
    // Close after the answer: an error answer (ResourceInUse while the last
    // subscription is released) is not a stream, and the client must not
    // send its next request on this connection, which only pipes.
    let mut first = [0u8; 16];
    let n = up.peek(&mut first).await?;
    if !first[..n].starts_with(b"HTTP/1.1 200") {
        let mut buf = Vec::new();
        let resp = read_message(&mut up, &mut buf).await?.ok_or_else(|| std::io::Error::other("upstream closed"))?;
        let mut out = format!("{}\r\n", resp.line);
        for (k, v) in resp.headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("connection")) {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", resp.body.len()));
        sock.write_all(out.as_bytes()).await?;
        sock.write_all(&resp.body).await?;
        return Ok(());
    }
    let (mut up_r, _up_w) = up.into_split();
    let (mut client_r, mut client_w) = sock.split();
    let copy = tokio::io::copy(&mut up_r, &mut client_w);
    if stall {
        let _ = tokio::time::timeout(std::time::Duration::from_millis(1500), copy).await;
        // Silent from now on: wait for the client to hang up.
        let mut sink = [0u8; 1024];
        while client_r.read(&mut sink).await.unwrap_or(0) > 0 {}
        return Ok(());
    }
    tokio::select! {
        r = copy => { r?; }
        // The client hung up (a renewal or a stop).
        _ = async { let mut b = [0u8; 1024]; while client_r.read(&mut b).await.unwrap_or(0) > 0 {} } => {}
    }
    Ok(())
}

async fn forward(upstream: &str, req: &Request, body: &[u8]) -> std::io::Result<Response> {
    let mut up = TcpStream::connect(upstream).await?;
    let mut head = format!("{}\r\n", req.line);
    for (k, v) in req.headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("connection")) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    up.write_all(head.as_bytes()).await?;
    up.write_all(body).await?;
    let mut buf = Vec::new();
    let resp = read_message(&mut up, &mut buf).await?.ok_or_else(|| std::io::Error::other("upstream closed"))?;
    Ok((resp.line, resp.headers, resp.body))
}

/// Forwards the even entries of a PutRecords call; the odd ones come back throttled.
async fn reject_half(upstream: &str, req: &Request) -> std::io::Result<Response> {
    let mut doc: Value = serde_json::from_slice(&req.body).map_err(std::io::Error::other)?;
    let records = doc["Records"].as_array().cloned().unwrap_or_default();
    let kept: Vec<Value> = records.iter().step_by(2).cloned().collect();
    doc["Records"] = Value::Array(kept);
    let (line, headers, body) = forward(upstream, req, &serde_json::to_vec(&doc).unwrap()).await?;
    let up: Value = serde_json::from_slice(&body).map_err(std::io::Error::other)?;
    let mut results = up["Records"].as_array().cloned().unwrap_or_default().into_iter();
    let mut merged = Vec::new();
    let mut failed = up["FailedRecordCount"].as_u64().unwrap_or(0);
    for i in 0..records.len() {
        if i % 2 == 0 {
            merged.push(results.next().unwrap_or(Value::Null));
        } else {
            failed += 1;
            merged.push(json!({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded (injected)"}));
        }
    }
    let out = json!({"FailedRecordCount": failed, "Records": merged});
    Ok((line, headers, serde_json::to_vec(&out).unwrap()))
}

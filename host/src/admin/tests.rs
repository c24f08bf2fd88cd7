use std::sync::atomic::Ordering::Relaxed;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const TOKEN: &str = "test-token-0123456789";

fn spec() -> AdminSpec {
    toml::from_str(&format!("listen = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"")).unwrap()
}

/// One HTTP/1.1 GET over a raw socket: (status code, body).
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn every_route_needs_the_token_and_metrics_carry_the_counters() {
    let stats = Registry::default();
    let n = stats.node("stages.validate");
    n.add_in(10);
    n.add_out(7);
    n.add_rejected(3);
    stats.progress.checkpointed(4, std::time::Duration::from_millis(20));
    let server = start(&spec(), "taxi", stats.clone()).await.unwrap();
    // After start: the recorder is installed by the first admin endpoint.
    metrics::kinesis_lag("trips", "shardId-000000000001", 1500);
    assert!(server.addr.ip().is_loopback() && server.addr.port() != 0);

    for path in ["/metrics", "/status", "/nothing"] {
        assert_eq!(get(server.addr, path, None).await.0, 401, "{path} without a token");
        assert_eq!(get(server.addr, path, Some("test-token-012345678X")).await.0, 401, "{path} with a wrong token");
    }
    assert_eq!(get(server.addr, "/nothing", Some(TOKEN)).await.0, 404);

    let (code, text) = get(server.addr, "/metrics", Some(TOKEN)).await;
    assert_eq!(code, 200, "{text}");
    for line in [
        "sluice_records_in_total{node=\"stages.validate\"} 10",
        "sluice_records_out_total{node=\"stages.validate\"} 7",
        "sluice_records_rejected_total{node=\"stages.validate\"} 3",
        "sluice_checkpoint_epoch 4",
        "sluice_kinesis_millis_behind_latest{source=\"trips\",shard=\"shardId-000000000001\"} 1500",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
    }
    // Counters are read at scrape time, not copied once.
    n.add_in(5);
    let (_, text) = get(server.addr, "/metrics", Some(TOKEN)).await;
    assert!(text.lines().any(|l| l == "sluice_records_in_total{node=\"stages.validate\"} 15"), "{text}");

    let (code, body) = get(server.addr, "/status", Some(TOKEN)).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["pipeline"], "taxi");
    assert_eq!(v["checkpoint"]["epoch"], 4);
    assert_eq!(v["nodes"]["stages.validate"]["rejected"], 3);
    assert_eq!(stats.progress.checkpoints.load(Relaxed), 1);
}

#[tokio::test]
async fn a_taken_port_is_a_start_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let s: AdminSpec = toml::from_str(&format!("listen = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"")).unwrap();
    let e = start(&s, "taxi", Registry::default()).await.err().expect("port in use");
    assert!(e.to_string().contains(&format!("cannot listen on 127.0.0.1:{port}")), "{e}");
}

#[test]
fn the_token_is_never_printed() {
    assert!(!format!("{:?}", spec()).contains(TOKEN));
}

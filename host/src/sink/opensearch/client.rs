//! The HTTP side: the `opensearch` crate's transport built from the sink's
//! keys (endpoints in turn, basic auth or SigV4, TLS options, gzip), and the
//! start-up probe that turns an unreachable cluster or refused credentials
//! into one clear error naming the endpoint. Credentials never appear in a
//! message: only endpoints do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opensearch::auth::Credentials;
use opensearch::cert::{Certificate, CertificateValidation};
use opensearch::http::headers::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use opensearch::http::transport::{Connection, ConnectionPool, Transport, TransportBuilder};
use opensearch::http::{Method, StatusCode, Url};

use super::config::OpenSearchSinkSpec;

/// A request that got no HTTP answer (connection refused, reset, timeout):
/// the cluster is unavailable, which is worth waiting for.
#[derive(Debug)]
pub struct RequestError(pub String);

/// Requests go to the endpoints in turn.
#[derive(Debug, Clone)]
struct RoundRobin {
    nodes: Arc<Vec<Connection>>,
    next: Arc<AtomicUsize>,
}

impl ConnectionPool for RoundRobin {
    fn next(&self) -> Connection {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
        self.nodes[i].clone()
    }
}

#[derive(Clone)]
pub struct Client {
    transport: Transport,
    endpoints: String,
    gzip: bool,
}

impl Client {
    pub async fn new(spec: &OpenSearchSinkSpec) -> Result<Self, String> {
        let urls: Vec<Url> = spec
            .endpoints
            .iter()
            .map(|e| Url::parse(e).map_err(|err| format!("{e:?} is not a URL: {err}")))
            .collect::<Result<_, _>>()?;
        let pool = RoundRobin {
            nodes: Arc::new(urls.into_iter().map(Connection::new).collect()),
            next: Arc::default(),
        };
        let mut b = TransportBuilder::new(pool).timeout(spec.timeout.0);
        if all_loopback(&spec.endpoints) {
            // A system proxy must not capture a local cluster.
            b = b.disable_proxy();
        }
        if let (Some(u), Some(p)) = (&spec.username, &spec.password) {
            b = b.auth(Credentials::Basic(u.clone(), p.expose().to_string()));
        }
        if let Some(aws) = &spec.aws {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
            if let Some(r) = &aws.region {
                loader = loader.region(aws_config::Region::new(r.clone()));
            }
            let sdk = loader.load().await;
            let creds = Credentials::try_from(&sdk).map_err(|e| format!("AWS SigV4: {e} (set AWS_REGION or aws.region, and credentials in the default chain)"))?;
            b = b.auth(creds).service_name(&aws.service);
        }
        if spec.tls.insecure {
            b = b.cert_validation(CertificateValidation::None);
        } else if let Some(ca) = &spec.tls.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| format!("cannot read tls.ca_file {ca}: {e}"))?;
            let cert = Certificate::from_pem(&pem).map_err(|e| format!("tls.ca_file {ca}: {e}"))?;
            b = b.cert_validation(CertificateValidation::Full(cert));
        }
        let transport = b
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            transport,
            endpoints: spec.endpoints.join(", "),
            gzip: spec.gzip,
        })
    }

    /// The endpoints, for messages.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// One request; `ndjson` bodies (bulk) are gzip-compressed when asked.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        ndjson: bool,
    ) -> Result<(StatusCode, Bytes), RequestError> {
        let mut headers = HeaderMap::new();
        let body = match body {
            Some(b) if ndjson => {
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-ndjson"),
                );
                if self.gzip {
                    headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                    Some(Bytes::from(gzip(&b)))
                } else {
                    Some(b)
                }
            }
            other => other,
        };
        let resp = self
            .transport
            .send(method, path, headers, None::<&()>, body, None)
            .await
            .map_err(|e| {
                RequestError(format!(
                    "no answer from OpenSearch at {}: {}",
                    self.endpoints,
                    chain(&e)
                ))
            })?;
        let status = resp.status_code();
        let bytes = resp.bytes().await.map_err(|e| {
            RequestError(format!(
                "OpenSearch at {} broke off its answer: {}",
                self.endpoints,
                chain(&e)
            ))
        })?;
        Ok((status, bytes))
    }

    /// At start: the cluster answers and accepts the credentials. Anything
    /// else is a start-up error naming the endpoint and what to check.
    pub async fn probe(&self) -> Result<(), String> {
        let probe = tokio::time::timeout(
            Duration::from_secs(30),
            self.send(Method::Get, "/", None, false),
        );
        match probe.await {
            Err(_) => Err(format!("OpenSearch at {} did not answer within 30 s; check endpoints and that the cluster is running", self.endpoints)),
            Ok(Err(RequestError(m))) => Err(format!("{m}; check endpoints and that the cluster is running")),
            Ok(Ok((s, _))) if s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN => Err(format!(
                "OpenSearch at {} refused the credentials (HTTP {s}); check username/password (or the AWS identity and the domain's access policy)",
                self.endpoints
            )),
            Ok(Ok((s, body))) if !s.is_success() => Err(format!("OpenSearch at {} answered HTTP {s} to GET /: {}", self.endpoints, super::bulk::reason_of_body(&body))),
            Ok(Ok(_)) => Ok(()),
        }
    }
}

fn all_loopback(endpoints: &[String]) -> bool {
    endpoints.iter().all(|e| {
        Url::parse(e)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .is_some_and(|h| {
                h == "localhost"
                    || h.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            })
    })
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc =
        flate2::write::GzEncoder::new(Vec::with_capacity(b.len() / 4), flate2::Compression::fast());
    enc.write_all(b).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// An error and its causes on one line ("connection refused" is a cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

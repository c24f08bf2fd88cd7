//! What a fired window becomes: the plugin's `finish` document with
//! `window_start`, `window_end` (RFC 3339 UTC, milliseconds) and a
//! deterministic `id` added by the host (host values win over the plugin's
//! keys), so upserting sinks replace early results and deduplicate replays.

use sha2::{Digest, Sha256};

use super::assign::Span;
use crate::convert::NotJson;

/// Event time (ms since the epoch) as `2016-01-01T00:01:00.000Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

/// `STAGE/START/KEY`: the stage name, the window start (ms), and the key as
/// text when it is short UTF-8 without `/`-ambiguity concerns for readers,
/// else its SHA-256. The same (stage, window, key) always gets the same id,
/// so early and final results, and replays after a restart, share it.
pub fn id(stage: &str, span: Span, key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(k) if k.len() <= 200 && !k.chars().any(char::is_control) => {
            format!("{stage}/{}/{k}", span.start)
        }
        _ => format!(
            "{stage}/{}/sha256:{}",
            span.start,
            hex::encode(Sha256::digest(key))
        ),
    }
}

/// The output record, or why it is not one (the plugin broke the contract).
/// The host's keys are appended to the plugin's object as it is (checked,
/// not rebuilt); a document that has one of them already is rebuilt with
/// the host's values instead.
pub fn decorate(doc: &[u8], id: &str, span: Span) -> Result<Vec<u8>, String> {
    crate::convert::check_json(doc).map_err(|e| match e {
        NotJson::Utf8(e) => format!("finish returned JSON that is not UTF-8: {e}"),
        NotJson::Syntax(e) => format!("finish returned invalid JSON: {e}"),
    })?;
    let body = doc.trim_ascii();
    if body.first() != Some(&b'{') {
        return Err("finish returned JSON that is not an object".into());
    }
    // Built once, not per call and key (building one showed in profiles).
    static HOST_KEYS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 3]> = std::sync::LazyLock::new(|| {
        [b"\"window_start\"".as_slice(), b"\"window_end\"", b"\"id\""].map(memchr::memmem::Finder::new)
    });
    if HOST_KEYS.iter().any(|k| k.find(body).is_some()) {
        return rebuilt(doc, id, span);
    }
    // A valid object: `{`, its members, `}`.
    let members = body[1..body.len() - 1].trim_ascii();
    let mut out = Vec::with_capacity(body.len() + 128);
    out.push(b'{');
    if !members.is_empty() {
        out.extend_from_slice(members);
        out.push(b',');
    }
    let mut field = |name: &str, value: &str, last: bool| {
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        serde_json::to_writer(&mut out, value).expect("a string serializes");
        if !last {
            out.push(b',');
        }
    };
    field("window_start", &rfc3339_ms(span.start), false);
    field("window_end", &rfc3339_ms(span.end), false);
    field("id", id, true);
    out.push(b'}');
    Ok(out)
}

/// `decorate` for a document that has host keys: parsed, overwritten, written.
fn rebuilt(doc: &[u8], id: &str, span: Span) -> Result<Vec<u8>, String> {
    let mut obj = match serde_json::from_slice::<serde_json::Value>(doc) {
        Ok(serde_json::Value::Object(m)) => m,
        Ok(_) => return Err("finish returned JSON that is not an object".into()),
        Err(e) => return Err(format!("finish returned invalid JSON: {e}")),
    };
    obj.insert("window_start".into(), rfc3339_ms(span.start).into());
    obj.insert("window_end".into(), rfc3339_ms(span.end).into());
    obj.insert("id".into(), id.into());
    Ok(serde_json::to_vec(&obj).expect("a JSON map serializes"))
}

/// What the DLQ shows for a window whose result could not be produced.
pub fn describe(stage: &str, span: Span, key: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "window_start": rfc3339_ms(span.start),
        "window_end": rfc3339_ms(span.end),
        "key": String::from_utf8_lossy(key),
        "id": id(stage, span, key),
    }))
    .expect("JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_win_and_times_are_rfc3339_with_milliseconds() {
        let span = Span {
            start: 1_451_606_460_000,
            end: 1_451_606_520_000,
        };
        let out = decorate(
            br#"{"count":3,"id":"mine","window_start":1}"#,
            &id("stats", span, br#""2""#),
            span,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["window_start"], "2016-01-01T00:01:00.000Z");
        assert_eq!(v["window_end"], "2016-01-01T00:02:00.000Z");
        assert_eq!(v["id"], r#"stats/1451606460000/"2""#);
        assert_eq!(v["count"], 3);
        assert!(decorate(b"[1]", &id("s", span, b"k"), span).is_err());
        assert!(decorate(b"{", &id("s", span, b"k"), span).is_err());
        assert!(decorate(br#"{"a":1} x"#, &id("s", span, b"k"), span).is_err());
        let not_utf8 = decorate(b"{\"a\":\"\xff\"}", &id("s", span, b"k"), span).unwrap_err();
        assert!(not_utf8.contains("not UTF-8"), "{not_utf8}");
        // Appended to the plugin's object as it is, empty or not.
        for doc in [&br#" {"n": 1, "s": "x\"y"} "#[..], b"{}", b"{ }"] {
            let out = decorate(doc, &id("st", span, b"a\"b"), span).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["id"], r#"st/1451606460000/a"b"#);
            assert_eq!(v["window_end"], "2016-01-01T00:02:00.000Z");
            assert_eq!(v.as_object().unwrap().len(), 3 + usize::from(doc.len() > 4) * 2);
        }
    }

    #[test]
    fn ids_are_deterministic_and_binary_keys_are_hashed() {
        let span = Span { start: 0, end: 10 };
        assert_eq!(id("s", span, b"k"), id("s", span, b"k"));
        assert_ne!(
            id("s", span, b"k"),
            id("s", Span { start: 10, end: 20 }, b"k")
        );
        assert!(id("s", span, &[0xff, 0]).starts_with("s/0/sha256:"));
    }
}

//! `[stages.NAME.window]`: the window of an aggregate stage, as serde sees it
//! and as the runtime uses it (`WindowSpec::resolve` checks it and returns
//! the key the error is about, so it lands as `file:line: key.path: message`).

use std::time::Duration;

use serde::Deserialize;

use crate::config::units::Dur;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    pub tumbling: Option<Dur>,
    pub sliding: Option<SlidingSpec>,
    pub session: Option<SessionSpec>,
    /// How far behind the watermark a record may be and still count; the
    /// window fires only once the watermark passed its end by this much.
    #[serde(default)]
    pub allowed_lateness: Option<Dur>,
    /// A partition that delivered nothing for this long (processing time)
    /// stops holding the stage's watermark back.
    #[serde(default)]
    pub idle_timeout: Option<Dur>,
    /// Early firing: every this often (processing time) each open window's
    /// current result is emitted, with the id its final result will have.
    #[serde(default)]
    pub emit_every: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlidingSpec {
    pub size: Dur,
    pub slide: Dur,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    pub gap: Dur,
}

/// Window shape, in milliseconds of event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling { size: i64 },
    Sliding { size: i64, slide: i64 },
    Session { gap: i64 },
}

/// A checked window table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windowing {
    pub kind: WindowKind,
    pub allowed_lateness: i64,
    pub idle_timeout: Duration,
    pub emit_every: Option<Duration>,
}

pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `[stages.NAME] state_memory` of an aggregate stage.
pub const DEFAULT_STATE_MEMORY: u64 = 256 << 20;

fn ms(key: &'static str, d: &Dur) -> Result<i64, (&'static str, String)> {
    let ms = d.0.as_millis();
    if ms == 0 {
        return Err((key, "must be at least 1ms".into()));
    }
    i64::try_from(ms).map_err(|_| (key, "is too long".into()))
}

impl WindowSpec {
    /// The window, or the key (relative to the window table) that is wrong and why.
    pub fn resolve(&self) -> Result<Windowing, (&'static str, String)> {
        let kind = match (&self.tumbling, &self.sliding, &self.session) {
            (Some(t), None, None) => WindowKind::Tumbling { size: ms("tumbling", t)? },
            (None, Some(s), None) => {
                let (size, slide) = (ms("sliding", &s.size)?, ms("sliding", &s.slide)?);
                if slide > size {
                    return Err(("sliding", format!("slide ({slide}ms) must not exceed size ({size}ms)")));
                }
                WindowKind::Sliding { size, slide }
            }
            (None, None, Some(s)) => WindowKind::Session { gap: ms("session", &s.gap)? },
            _ => {
                return Err((
                    "tumbling",
                    "a window needs exactly one of `tumbling = \"1m\"`, `sliding = { size = \"5m\", slide = \"1m\" }`, `session = { gap = \"30s\" }`".into(),
                ))
            }
        };
        let emit_every = self.emit_every.map(|d| d.0);
        if emit_every.is_some_and(|d| d.is_zero()) {
            return Err(("emit_every", "must be more than 0s".into()));
        }
        let idle_timeout = self.idle_timeout.map_or(DEFAULT_IDLE_TIMEOUT, |d| d.0);
        if idle_timeout.is_zero() {
            return Err(("idle_timeout", "must be more than 0s".into()));
        }
        let allowed_lateness = match &self.allowed_lateness {
            Some(d) => i64::try_from(d.0.as_millis())
                .map_err(|_| ("allowed_lateness", "is too long".to_string()))?,
            None => 0,
        };
        Ok(Windowing {
            kind,
            allowed_lateness,
            idle_timeout,
            emit_every,
        })
    }
}

//! Progress of `sluice produce`: a bar with rate and ETA on a terminal,
//! a plain line every few seconds otherwise (CI logs, pipes).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Counters shared by the reader, the senders and the display.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes_read: Arc<AtomicU64>,
    pub read: AtomicU64,
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
}

pub enum Progress {
    Bar(ProgressBar),
    Plain { every: Duration, last: Instant },
    Off,
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise; nothing when `quiet`.
    pub fn new(total_bytes: u64, quiet: bool) -> Self {
        if quiet {
            return Progress::Off;
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr_with_hz(4));
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} [{wide_bar}] {percent:>3}% ETA {eta} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            Progress::Bar(bar)
        } else {
            Progress::Plain { every: Duration::from_secs(5), last: Instant::now() }
        }
    }

    pub fn update(&mut self, c: &Counters, started: Instant) {
        let sent = c.sent.load(Relaxed);
        let rate = sent as f64 / started.elapsed().as_secs_f64().max(0.001);
        let line = format!(
            "sent {sent} ({rate:.0} rec/s), retried {}, failed {}",
            c.retried.load(Relaxed),
            c.failed.load(Relaxed)
        );
        match self {
            Progress::Bar(bar) => {
                bar.set_position(c.bytes_read.load(Relaxed));
                bar.set_message(line);
            }
            Progress::Plain { every, last } => {
                if last.elapsed() >= *every {
                    *last = Instant::now();
                    eprintln!("produce: {line}, read {}", c.read.load(Relaxed));
                }
            }
            Progress::Off => {}
        }
    }

    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

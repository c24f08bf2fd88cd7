//! Window arithmetic, in event-time milliseconds. Pure functions: which
//! windows a record belongs to, and how session windows merge.
//!
//! Windows are half-open `[start, end)`. Tumbling windows are aligned to the
//! epoch (`start = t - t mod size`); sliding windows start at every multiple
//! of `slide` and a record belongs to every window that contains it (at most
//! `ceil(size / slide)`); a session of one key is `[first, last + gap)` and a
//! record at `t` joins every session of its key that overlaps `[t, t + gap)`
//! (so two records join when they are less than `gap` apart).

use crate::config::window::WindowKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

impl Span {
    pub fn overlaps(&self, o: &Span) -> bool {
        self.start < o.end && o.start < self.end
    }
}

/// `t` rounded down to a multiple of `step` (also for negative times).
fn floor_to(t: i64, step: i64) -> i64 {
    t - t.rem_euclid(step)
}

/// The fixed windows (tumbling, sliding) containing `t`, latest first.
/// Session windows are not fixed: see [`merge_session`].
pub fn fixed_windows(kind: WindowKind, t: i64, out: &mut Vec<Span>) {
    out.clear();
    match kind {
        WindowKind::Tumbling { size } => {
            let start = floor_to(t, size);
            out.push(Span {
                start,
                end: start.saturating_add(size),
            });
        }
        WindowKind::Sliding { size, slide } => {
            let mut start = floor_to(t, slide);
            while start > t.saturating_sub(size) {
                out.push(Span {
                    start,
                    end: start.saturating_add(size),
                });
                start -= slide;
            }
        }
        WindowKind::Session { gap } => out.push(Span {
            start: t,
            end: t.saturating_add(gap),
        }),
    }
}

/// A record at `t` arrives for a key whose open sessions are `sessions`
/// (disjoint). Returns the session it ends up in and the indexes of the
/// sessions that merge into it (the caller moves their contents over).
pub fn merge_session(sessions: &[Span], t: i64, gap: i64) -> (Span, Vec<usize>) {
    let mut merged = Span {
        start: t,
        end: t.saturating_add(gap),
    };
    let mut absorbed = Vec::new();
    // Sessions are disjoint but merging can grow `merged` so it reaches one
    // more: repeat until nothing changes (few sessions per key).
    loop {
        let before = absorbed.len();
        for (i, s) in sessions.iter().enumerate() {
            if !absorbed.contains(&i) && s.overlaps(&merged) {
                merged = Span {
                    start: merged.start.min(s.start),
                    end: merged.end.max(s.end),
                };
                absorbed.push(i);
            }
        }
        if absorbed.len() == before {
            break;
        }
    }
    absorbed.sort_unstable();
    (merged, absorbed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(kind: WindowKind, t: i64) -> Vec<(i64, i64)> {
        let mut v = Vec::new();
        fixed_windows(kind, t, &mut v);
        v.iter().map(|s| (s.start, s.end)).collect()
    }

    #[test]
    fn tumbling_windows_are_epoch_aligned_and_half_open() {
        let k = WindowKind::Tumbling { size: 60_000 };
        assert_eq!(spans(k, 0), [(0, 60_000)]);
        assert_eq!(spans(k, 59_999), [(0, 60_000)]);
        assert_eq!(spans(k, 60_000), [(60_000, 120_000)]);
        assert_eq!(
            spans(k, -1),
            [(-60_000, 0)],
            "before the epoch rounds down, not toward zero"
        );
    }

    #[test]
    fn sliding_windows_cover_every_window_containing_the_record() {
        let k = WindowKind::Sliding {
            size: 300,
            slide: 100,
        };
        assert_eq!(spans(k, 250), [(200, 500), (100, 400), (0, 300)]);
        assert_eq!(
            spans(k, 300),
            [(300, 600), (200, 500), (100, 400)],
            "the end is exclusive"
        );
        // size not a multiple of slide: ceil(250/100) = 3 windows at most.
        let k = WindowKind::Sliding {
            size: 250,
            slide: 100,
        };
        assert_eq!(spans(k, 260), [(200, 450), (100, 350)]);
        assert_eq!(spans(k, 240), [(200, 450), (100, 350), (0, 250)]);
        // slide == size is tumbling.
        assert_eq!(
            spans(
                WindowKind::Sliding {
                    size: 100,
                    slide: 100
                },
                150
            ),
            [(100, 200)]
        );
    }

    #[test]
    fn sessions_merge_when_records_are_closer_than_the_gap() {
        let gap = 30;
        // A new session.
        assert_eq!(
            merge_session(&[], 100, gap),
            (
                Span {
                    start: 100,
                    end: 130
                },
                vec![]
            )
        );
        let open = [
            Span { start: 0, end: 40 },
            Span {
                start: 100,
                end: 130,
            },
        ];
        // Exactly `gap` after the last record (10 + 30 = 40): a new session.
        assert_eq!(
            merge_session(&open, 40, gap),
            (Span { start: 40, end: 70 }, vec![])
        );
        // One ms closer: joins the first.
        assert_eq!(
            merge_session(&open, 39, gap),
            (Span { start: 0, end: 69 }, vec![0])
        );
        // Bridges two sessions: one session from 0 to 90.
        let near = [Span { start: 0, end: 40 }, Span { start: 60, end: 90 }];
        assert_eq!(
            merge_session(&near, 35, gap),
            (Span { start: 0, end: 90 }, vec![0, 1])
        );
        // Too far from both to bridge them.
        assert_eq!(
            merge_session(&open, 75, gap),
            (
                Span {
                    start: 75,
                    end: 130
                },
                vec![1]
            )
        );
        // Out of order, inside a session: the session is unchanged.
        assert_eq!(
            merge_session(&open, 105, gap),
            (
                Span {
                    start: 100,
                    end: 135
                },
                vec![1]
            )
        );
        assert_eq!(
            merge_session(&open, 5, gap),
            (Span { start: 0, end: 40 }, vec![0])
        );
    }
}

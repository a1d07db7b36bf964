//! The kernel's loss counters as `loss` events: what grew since the last
//! announcement, per reason and kind.

use bpfcap_common::kind;

use crate::event::Event;

/// How often `Capture::drain` reads the kernel's loss counters for loss events.
pub const CHECK_NS: u64 = 250_000_000;

/// The reasons, in the order `Announced::announce` takes their totals.
pub const REASONS: [&str; 3] = ["kernel_ring_full", "sampled", "rate_limited"];

/// What the loss events so far announced: per reason and kind, and when to
/// look again.
#[derive(Debug, Default)]
pub struct Announced {
    counts: [[u64; kind::COUNT as usize]; 3],
    pub next_check_ns: u64,
}

impl Announced {
    /// Appends a loss event to `out` for each (reason, kind) whose total (per
    /// reason in [`REASONS`] order, per kind) grew since it was last
    /// announced; returns how many. The next check is due [`CHECK_NS`] on.
    pub fn announce(&mut self, now: u64, totals: [&[u64]; 3], out: &mut Vec<Event>) -> usize {
        self.next_check_ns = now + CHECK_NS;
        let before = out.len();
        for ((reason, totals), seen) in REASONS.into_iter().zip(totals).zip(&mut self.counts) {
            for (k, (&total, seen)) in totals.iter().zip(seen.iter_mut()).enumerate() {
                if total > *seen {
                    out.push(Event::loss(now, total - *seen, reason, Some(k as u16)));
                    *seen = total;
                }
            }
        }
        out.len() - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Loss, Payload};

    fn losses(out: &[Event]) -> Vec<(u64, &'static str, Option<u16>)> {
        out.iter()
            .map(|e| match &e.payload {
                Payload::Loss(Loss { count, reason, lost_kind }) => (*count, *reason, *lost_kind),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn only_what_grew_since_the_last_announcement_is_announced() {
        let mut a = Announced::default();
        let mut out = Vec::new();
        let mut ring = [0u64; kind::COUNT as usize];
        let mut sampled = ring;
        ring[kind::FILE_READ as usize] = 5;
        sampled[kind::FILE_WRITE as usize] = 2;
        assert_eq!(a.announce(10, [&ring, &sampled, &[]], &mut out), 2);
        assert_eq!(
            losses(&out),
            [(5, "kernel_ring_full", Some(kind::FILE_READ)), (2, "sampled", Some(kind::FILE_WRITE))]
        );
        assert_eq!(a.next_check_ns, 10 + CHECK_NS);
        out.clear();
        assert_eq!(a.announce(20, [&ring, &sampled, &[]], &mut out), 0, "nothing new");
        ring[kind::FILE_READ as usize] = 12;
        assert_eq!(a.announce(30, [&ring, &sampled, &[]], &mut out), 1);
        assert_eq!(losses(&out), [(7, "kernel_ring_full", Some(kind::FILE_READ))]);
        assert!(out.iter().all(|e| e.hdr.ts_ns == 30));
    }
}

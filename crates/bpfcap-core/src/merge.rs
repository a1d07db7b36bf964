//! Several rings read as one stream in time order.
//!
//! Each ring holds its CPUs' records in the order they were written. Sorting
//! each batch is not enough: a batch cut at its size limit can leave older
//! records in a ring it did not reach, and they would come out in the next
//! batch, after newer ones. So records are read into one queue per ring and
//! handed out smallest timestamp first, and a batch ends early when a queue
//! runs dry while its ring still had records: what that ring holds next may
//! be older than anything left in the other queues.

use std::collections::VecDeque;

pub struct Merge<T> {
    queues: Vec<VecDeque<T>>,
    /// The ring still had records when its queue was last filled.
    more: Vec<bool>,
}

impl<T> Merge<T> {
    pub fn new(rings: usize) -> Self {
        Self { queues: (0..rings).map(|_| VecDeque::new()).collect(), more: vec![false; rings] }
    }

    /// Tops queue `i` up to `max` entries from `next`, which yields `None` when
    /// the ring is empty and `Some(None)` for a record that did not decode.
    /// Returns how many records were read.
    pub fn fill(&mut self, i: usize, max: usize, mut next: impl FnMut() -> Option<Option<T>>) -> usize {
        let queue = &mut self.queues[i];
        let mut read = 0;
        self.more[i] = true;
        while queue.len() < max {
            match next() {
                None => {
                    self.more[i] = false;
                    break;
                }
                Some(item) => {
                    read += 1;
                    queue.extend(item);
                }
            }
        }
        read
    }

    /// Hands up to `max` entries, smallest `key` first, to `out`; returns how many.
    pub fn emit(&mut self, max: usize, key: impl Fn(&T) -> u64, mut out: impl FnMut(T)) -> usize {
        let mut moved = 0;
        while moved < max {
            let Some(i) = (0..self.queues.len())
                .filter(|&i| !self.queues[i].is_empty())
                .min_by_key(|&i| self.queues[i].front().map(&key))
            else {
                break;
            };
            if let Some(item) = self.queues[i].pop_front() {
                out(item);
            }
            moved += 1;
            if self.queues[i].is_empty() && self.more[i] {
                break;
            }
        }
        moved
    }

    /// Entries read from the rings and not handed out yet.
    pub fn queued(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rings as lists of timestamps; `None` stands for an undecodable record.
    fn source(items: &[Option<u64>]) -> impl FnMut() -> Option<Option<u64>> + '_ {
        let mut it = items.iter();
        move || it.next().copied()
    }

    fn drain_all(rings: &[Vec<Option<u64>>], batch: usize) -> Vec<Vec<u64>> {
        let mut merge = Merge::new(rings.len());
        let mut pos = vec![0; rings.len()];
        let mut batches = Vec::new();
        loop {
            for (i, ring) in rings.iter().enumerate() {
                pos[i] += merge.fill(i, batch, source(&ring[pos[i]..]));
            }
            let mut out = Vec::new();
            merge.emit(batch, |t| *t, |t| out.push(t));
            if out.is_empty() {
                return batches;
            }
            batches.push(out);
        }
    }

    #[test]
    fn a_batch_limit_never_puts_newer_records_before_older_ones() {
        // One writer moved from CPU 1 to CPU 0 and back: ring 0 holds 10..20
        // and 40..50, ring 1 holds 0..10 and 20..40.
        let r0: Vec<_> = (10..20).chain(40..50).map(Some).collect();
        let r1: Vec<_> = (0..10).chain(20..40).map(Some).collect();
        for batch in [1, 3, 7, 10, 64] {
            let got: Vec<u64> = drain_all(&[r0.clone(), r1.clone()], batch).concat();
            assert_eq!(got, (0..50).collect::<Vec<_>>(), "batch {batch}");
        }
    }

    #[test]
    fn batches_are_full_while_records_remain_and_bad_records_are_skipped() {
        let r0 = vec![Some(1), None, Some(3), Some(5)];
        let r1 = vec![Some(2), Some(4), None];
        let batches = drain_all(&[r0, r1], 2);
        assert_eq!(batches.concat(), vec![1, 2, 3, 4, 5]);
        assert!(batches.iter().all(|b| b.len() <= 2));
    }

    #[test]
    fn a_dry_queue_whose_ring_had_more_ends_the_batch() {
        let mut merge = Merge::new(2);
        merge.fill(0, 2, source(&[Some(5), Some(6), Some(7)])); // ring 0 had more
        merge.fill(1, 2, source(&[Some(1)]));
        let mut out = Vec::new();
        assert_eq!(merge.emit(10, |t| *t, |t| out.push(t)), 3);
        assert_eq!(out, vec![1, 5, 6]); // 7 (or older) is still in ring 0
        assert_eq!(merge.queued(), 0);
    }
}

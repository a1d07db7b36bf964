//! The built-in probes' ring buffers, read as one stream of records.
//!
//! One ring is read in place: each record is handed out where the kernel
//! wrote it. Several rings (CPU c writes to ring c % rings) are merged in time
//! order: records are copied into one queue per ring (buffers reused) and
//! handed out smallest timestamp first (see [`Merge`]).

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
};

use aya::maps::{MapData, RingBuf};
use bpfcap_common::Header;

use crate::{
    capture::page_size,
    error::{Error, Result},
    merge::Merge,
};

pub struct Rings {
    rings: Vec<(RingBuf<MapData>, RingPositions)>,
    /// With several rings: records read and not handed out yet, by ring.
    merge: Merge<Vec<u8>>,
    /// Buffers of records handed out, for the next ones.
    spare: Vec<Vec<u8>>,
}

impl Rings {
    pub fn new(rings: Vec<RingBuf<MapData>>, size: u32) -> Result<Self> {
        let n = rings.len();
        let rings = rings
            .into_iter()
            .map(|ring| {
                let positions = RingPositions::map(ring.as_raw_fd(), size)?;
                Ok((ring, positions))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { rings, merge: Merge::new(n), spare: Vec::new() })
    }

    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.rings.iter().map(|(ring, _)| ring.as_raw_fd())
    }

    /// Hands up to `max` pending records to `f`, in time order; returns how
    /// many. Fewer than `max` means nothing that was pending is left.
    pub fn read(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        if let [(ring, _)] = &mut self.rings[..] {
            let mut n = 0;
            while n < max {
                let Some(item) = ring.next() else { break };
                n += 1;
                f(&item);
            }
            return n;
        }
        let spare = &mut self.spare;
        for (i, (ring, _)) in self.rings.iter_mut().enumerate() {
            self.merge.fill(i, max, || {
                let item = ring.next()?;
                let mut buf = spare.pop().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(&item);
                Some(Some(buf))
            });
        }
        self.merge.emit(
            max,
            |rec| timestamp(rec),
            |rec| {
                f(&rec);
                spare.push(rec);
            },
        )
    }

    /// Bytes written to the rings and not read yet, and the rings' total size.
    pub fn fill(&self) -> (u64, u64) {
        self.rings.iter().fold((0, 0), |(pending, size), (_, p)| (pending + p.pending(), size + p.size))
    }
}

/// A record's timestamp (0 when it is too short to hold one: the decoder rejects it).
fn timestamp(rec: &[u8]) -> u64 {
    const AT: usize = std::mem::offset_of!(Header, ts_ns);
    rec.get(AT..AT + 8).map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
}

/// A read-only mapping of a ring's consumer and producer positions (the
/// first page of each area the kernel lets userspace map), to tell how much
/// is pending. aya keeps its own mappings private.
pub struct RingPositions {
    consumer: *mut libc::c_void,
    producer: *mut libc::c_void,
    size: u64,
}

// SAFETY: the pages are only read, with volatile loads of u64 counters.
unsafe impl Send for RingPositions {}

impl RingPositions {
    fn map(fd: RawFd, size: u32) -> Result<Self> {
        let page = page_size() as usize;
        let map = |offset: usize| {
            let p =
                unsafe { libc::mmap(std::ptr::null_mut(), page, libc::PROT_READ, libc::MAP_SHARED, fd, offset as i64) };
            if p == libc::MAP_FAILED {
                Err(Error::io("mapping a ring buffer's positions", io::Error::last_os_error()))
            } else {
                Ok(p)
            }
        };
        let consumer = map(0)?;
        let producer = map(page).inspect_err(|_| unsafe {
            libc::munmap(consumer, page);
        })?;
        Ok(Self { consumer, producer, size: size as u64 })
    }

    fn pending(&self) -> u64 {
        let read = |p: *mut libc::c_void| unsafe { std::ptr::read_volatile(p as *const u64) };
        read(self.producer).saturating_sub(read(self.consumer))
    }
}

impl Drop for RingPositions {
    fn drop(&mut self) {
        let page = page_size() as usize;
        unsafe {
            libc::munmap(self.consumer, page);
            libc::munmap(self.producer, page);
        }
    }
}

//! The benchmarks' Rust-only consumer: bpfcap's ring and decoder with no
//! Python, the native ceiling the Python API is measured against.
//!
//!   native_consumer PID CALLS [RING_BYTES BATCH POLL_MS [prefill]]
//!
//! Captures file_write events of PID, prints `ready` once attached, and when
//! its stdin closes prints one JSON line: delivered, lost, cpu_s, seconds.
//! With `prefill` it reads nothing until a line on stdin, then times draining
//! what the ring holds. With `prefill owned` it decodes owned events
//! (`Capture::drain`) instead of reading borrowed views (`drain_views`).

use std::{
    io::Read,
    sync::atomic::{AtomicBool, Ordering},
    sync::Arc,
    time::{Duration, Instant},
};

use bpfcap_common::kind;
use bpfcap_core::{
    filter::FilterSpec,
    types::{FileRead, FileWrite},
    Capture, CaptureConfig, Payload,
};

fn cpu_seconds() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One batch from the ring, touching pid, tid and one payload field of each
/// event as the Python consumers do; returns how many records it held.
fn drain_batch(
    cap: &mut Capture,
    batch: usize,
    buf: &mut Vec<bpfcap_core::Event>,
    delivered: &mut u64,
    sum: &mut u64,
) -> usize {
    buf.clear();
    let n = cap.drain(batch, buf);
    for e in buf.iter() {
        if let Payload::FileRead(FileRead { bytes: Some(b), .. })
        | Payload::FileWrite(FileWrite { bytes: Some(b), .. }) = &e.payload
        {
            *sum = sum.wrapping_add(u64::from(e.hdr.pid) + u64::from(e.hdr.tid) + *b as u64);
            *delivered += 1;
        }
    }
    n
}

/// The same with borrowed views: nothing is allocated per record.
fn drain_views(
    cap: &mut Capture,
    batch: usize,
    user: &mut Vec<bpfcap_core::Event>,
    delivered: &mut u64,
    sum: &mut u64,
) -> usize {
    user.clear();
    cap.drain_views(
        batch,
        |v| {
            if let Some(b) = v.file().and_then(|f| f.bytes) {
                *sum = sum.wrapping_add(u64::from(v.hdr.pid) + u64::from(v.hdr.tid) + b as u64);
                *delivered += 1;
            }
        },
        user,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: native_consumer PID CALLS [RING BATCH POLL_MS]";
    let pid: u32 = args.get(1).and_then(|a| a.parse().ok()).expect(usage);
    let calls: u64 = args.get(2).and_then(|a| a.parse().ok()).expect(usage);
    let ring: u32 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(16 << 20);
    let batch: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(4096);
    let poll_ms: u64 = args.get(5).and_then(|a| a.parse().ok()).unwrap_or(20);
    let mut cap = Capture::open(
        CaptureConfig { ring_size: ring, wakeup_bytes: (batch as u64 * 96).min(ring as u64 / 4), rings: 1 },
        Vec::new(),
    )
    .expect("open capture");
    cap.enable_kind(kind::FILE_WRITE).expect("attach");
    cap.set_filter(FilterSpec { pids: vec![pid], ..FilterSpec::default() }).expect("filter");
    println!("ready");
    if args.get(6).map(String::as_str) == Some("prefill") {
        let _ = std::io::stdin().read_line(&mut String::new());
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let (mut delivered, mut sum, mut buf) = (0u64, 0u64, Vec::with_capacity(batch));
        if args.get(7).map(String::as_str) == Some("owned") {
            while drain_batch(&mut cap, batch, &mut buf, &mut delivered, &mut sum) > 0 {}
        } else {
            while drain_views(&mut cap, batch, &mut buf, &mut delivered, &mut sum) > 0 {}
        }
        let (cpu, secs) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
        let lost: u64 = cap.lost_in_kernel().expect("lost").iter().sum();
        println!("{{\"delivered\": {delivered}, \"lost\": {lost}, \"cpu_s\": {cpu:.4}, \"seconds\": {secs:.4}, \"checksum\": {sum}}}");
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        s.store(true, Ordering::Relaxed);
    });
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let (mut delivered, mut sum) = (0u64, 0u64);
    let mut done_at = None;
    let mut buf = Vec::with_capacity(batch);
    loop {
        let done = stop.load(Ordering::Relaxed);
        cap.poll(Duration::from_millis(poll_ms)).expect("poll");
        cap.take_wakeups().expect("wakeups");
        loop {
            let n = drain_batch(&mut cap, batch, &mut buf, &mut delivered, &mut sum);
            if done_at.is_none() && delivered >= calls {
                done_at = Some(t0.elapsed());
            }
            if n < batch {
                break;
            }
        }
        if done {
            break;
        }
    }
    let lost: u64 = cap.lost_in_kernel().expect("lost").iter().sum();
    println!(
        "{{\"delivered\": {delivered}, \"lost\": {lost}, \"cpu_s\": {:.3}, \"seconds\": {:.3}, \"checksum\": {sum}}}",
        cpu_seconds() - cpu0,
        done_at.unwrap_or_else(|| t0.elapsed()).as_secs_f64()
    );
}

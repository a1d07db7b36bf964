//! How much work each built-in program is for the kernel's verifier: attaches
//! every supported probe, then prints each loaded program with the
//! instructions the verifier processed and the time its probe took to attach.
//!
//!   verifier_cost [PROBE...]   (default: every supported probe)

use std::time::Instant;

use bpfcap_core::{Capture, CaptureConfig, PROBES};

fn main() {
    let t = Instant::now();
    let _ = aya::Btf::from_sys_fs();
    println!("aya btf parse: {:.3} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let _ = bpfcap_core::btf::Btf::from_sys_fs();
    println!("own btf parse: {:.3} s", t.elapsed().as_secs_f64());
    let start = Instant::now();
    let mut cap = Capture::open(CaptureConfig { ring_size: 1 << 16, wakeup_bytes: 1 << 14, rings: 1 }, Vec::new())
        .expect("open capture");
    println!("open: {:.3} s", start.elapsed().as_secs_f64());
    let only: Vec<String> = std::env::args().skip(1).collect();
    if only.is_empty() {
        let t = Instant::now();
        let kinds: Vec<u16> = PROBES.iter().map(|p| p.kind).collect();
        cap.enable_kinds(&kinds).expect("enable every probe");
        println!("every probe, loaded in parallel: {:.3} s", t.elapsed().as_secs_f64());
    }
    for probe in PROBES.iter().filter(|p| only.is_empty() || only.iter().any(|o| o == p.name)) {
        let t = Instant::now();
        let r = cap.enable(probe);
        println!(
            "{:<22} {:.3} s {}",
            probe.name,
            t.elapsed().as_secs_f64(),
            r.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }
    for (name, insns) in cap.verifier_costs() {
        println!("{name:<20} {:>8}", insns.map_or("?".into(), |n| n.to_string()));
    }
    let t = Instant::now();
    drop(cap);
    println!("close: {:.3} s", t.elapsed().as_secs_f64());
    println!("total: {:.3} s", start.elapsed().as_secs_f64());
}

//! Real BPF programs in the running kernel (root only; skipped with a reason otherwise).

use std::{process::Command, time::Duration};

use bpfcap_common::kind;
use bpfcap_core::{
    sys,
    types::{Exec, Exit},
    Capture, CaptureConfig, Event, Payload,
};

fn open() -> Option<Capture> {
    if let Some(missing) = sys::missing_tracing_caps(sys::effective_caps()) {
        eprintln!("skipped: needs {missing}");
        return None;
    }
    let mut cap = Capture::open(CaptureConfig { ring_size: 1 << 22, wakeup_bytes: 0, rings: 1 }, Vec::new())
        .expect("open capture");
    for k in [kind::PROCESS_EXEC, kind::PROCESS_EXIT, kind::PROCESS_FORK] {
        cap.enable_kind(k).expect("attach");
    }
    Some(cap)
}

/// Everything captured so far, drained until `pred` matches or a few seconds pass.
fn find(cap: &mut Capture, seen: &mut Vec<Event>, pred: impl Fn(&Event) -> bool) -> Option<Event> {
    for _ in 0..50 {
        if let Some(e) = seen.iter().find(|e| pred(e)) {
            return Some(e.clone());
        }
        cap.poll(Duration::from_millis(100)).unwrap();
        cap.drain(usize::MAX, seen);
    }
    None
}

#[test]
fn exec_exit_and_fork_of_a_child() {
    let Some(mut cap) = open() else { return };
    let token = format!("tok{}", std::process::id());
    let child = Command::new("/bin/sh").args(["-c", &format!("/bin/echo {token} >/dev/null; exit 7")]).spawn().unwrap();
    let sh_pid = child.id();
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(7));

    let mut seen = Vec::new();
    let exec = find(
        &mut cap,
        &mut seen,
        |e| matches!(&e.payload, Payload::Exec(x) if x.argv.len() == 2 && x.argv[1] == token),
    )
    .expect("exec of /bin/echo with the token");
    let Payload::Exec(Exec { filename, argv, argv_truncated, .. }) = &exec.payload else { unreachable!() };
    assert_eq!(filename, "/bin/echo");
    assert_eq!(argv[0], "/bin/echo");
    assert!(!argv_truncated);
    assert_eq!(exec.hdr.ppid, sh_pid, "echo's parent is the shell");
    assert_eq!(exec.comm_str(), "echo");
    assert_ne!(exec.hdr.mnt_ns, 0);
    assert_ne!(exec.hdr.pid_ns, 0);
    assert_ne!(exec.hdr.cgroup_id, 0);

    let exit = find(&mut cap, &mut seen, |e| e.hdr.kind == kind::PROCESS_EXIT && e.hdr.pid == sh_pid)
        .expect("exit of the shell");
    assert_eq!(exit.payload, Exit { exit_code: Some(7), signal: None, core_dumped: false }.into());
    let fork = find(&mut cap, &mut seen, |e| {
        e.hdr.kind == kind::PROCESS_FORK
            && e.hdr.pid == sh_pid
            && matches!(&e.payload, Payload::Fork(f) if f.child_pid == exec.hdr.pid)
    });
    assert!(fork.is_some(), "the shell's fork of echo");
    assert_eq!(cap.stats().decode.errors(), 0);
}

//! Letting go of tracepoint attachments without waiting for the kernel.
//!
//! The kernel detaches a program from a classic tracepoint only after RCU
//! grace periods, one tracepoint at a time (under `event_mutex`): about 37 ms
//! each on this project's machine, 1.5 s for the 40 that every event type
//! needs. A process that stops capturing need not wait for that. Before it
//! closes its links, a grandchild takes a reference to each BPF link (its own
//! copy of the fd table) and nothing else; it exits once the capture has let
//! go of its own references, so the last reference, and the wait, are the
//! grandchild's. Until then the programs still run, and find every kind
//! disabled (the capture clears `BPFCAP_ENABLED` first): they return at once.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Holds the grandchild until dropped (after the links are closed).
pub struct Handover {
    _wake: OwnedFd,
}

/// The fds of this process that are BPF links, and the largest fd open.
fn link_fds() -> Option<(Vec<RawFd>, RawFd)> {
    let mut perf = Vec::new();
    let mut max = 0;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else { continue };
        max = max.max(fd);
        if std::fs::read_link(entry.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf_link") {
            perf.push(fd);
        }
    }
    (!perf.is_empty()).then_some((perf, max))
}

/// Starts the grandchild that keeps this process's BPF links until the
/// returned handover is dropped; None (the caller then waits as before) when
/// there are none, or a process cannot be made.
pub fn hand_over_links() -> Option<Handover> {
    let (keep, max) = link_fds()?;
    let mut p = [0; 2];
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return None;
    }
    let (read, wake) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    match unsafe { libc::fork() } {
        -1 => None,
        0 => {
            // The child of a process that may have other threads: only
            // async-signal-safe calls from here on (no allocation, no locks).
            unsafe {
                if libc::fork() != 0 {
                    libc::_exit(0); // (so that init reaps the grandchild)
                }
                let r = read.as_raw_fd();
                for fd in 0..=max.max(r).max(wake.as_raw_fd()) {
                    if fd != r && !keep.contains(&fd) {
                        libc::close(fd);
                    }
                }
                let mut b = 0u8;
                while libc::read(r, (&mut b as *mut u8).cast(), 1) < 0 && *libc::__errno_location() == libc::EINTR {}
                libc::_exit(0)
            }
        }
        child => {
            drop(read);
            unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
            Some(Handover { _wake: wake })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_links_nothing_is_started() {
        // (a unit test process has no BPF links open)
        assert!(link_fds().is_none());
        assert!(hand_over_links().is_none());
    }
}

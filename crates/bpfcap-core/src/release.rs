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

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::Mutex,
};

/// Holds the grandchildren until dropped (after the links are closed).
pub struct Handover {
    wake: Option<OwnedFd>,
    /// The grandchildren, as pidfds: readable once they have exited.
    grandchildren: Vec<OwnedFd>,
}

impl Drop for Handover {
    fn drop(&mut self) {
        drop(self.wake.take()); // (EOF: the grandchildren exit)
        PENDING.lock().unwrap_or_else(|e| e.into_inner()).append(&mut self.grandchildren);
    }
}

/// The grandchildren's name (`comm`).
pub const RELEASER: &std::ffi::CStr = c"bpfcap-release";

/// Grandchildren the links are shared among: their exits, and so the
/// kernel's waits, overlap (one process alone releases them one by one).
const GRANDCHILDREN: usize = 8;

/// Grandchildren still releasing the links of captures this process closed.
static PENDING: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

/// Waits (10 s at most each) until the links of the captures this process
/// closed are released. A new capture calls it first: its tracepoints would
/// wait for the same kernel lock anyway, and the old programs would still
/// run beside its own (costing every event they see, and skewing
/// measurements of the new ones).
pub fn wait_for_released() {
    let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner()));
    for pidfd in pending {
        let mut p = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        while unsafe { libc::poll(&mut p, 1, 10_000) } < 0
            && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {}
    }
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
    let (links, max) = link_fds()?;
    let shares: Vec<&[RawFd]> = links.chunks(links.len().div_ceil(GRANDCHILDREN)).collect();
    let (read, wake) = pipe()?;
    let (pid_read, pid_write) = pipe()?;
    match unsafe { libc::fork() } {
        -1 => None,
        0 => {
            // The child of a process that may have other threads: only
            // async-signal-safe calls from here on (no allocation, no locks).
            unsafe {
                for keep in &shares {
                    let grandchild = libc::fork();
                    if grandchild == 0 {
                        hold_until_woken(keep, read.as_raw_fd(), max.max(wake.as_raw_fd()).max(pid_write.as_raw_fd()));
                    }
                    // (its pid for the parent; init reaps the grandchildren)
                    libc::write(pid_write.as_raw_fd(), (&grandchild as *const i32).cast(), 4);
                }
                libc::_exit(0)
            }
        }
        child => {
            drop((read, pid_write));
            unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
            let mut grandchildren = Vec::new();
            let mut pid: i32 = 0;
            // (they wait for `wake`: their pids are not reused before the pidfds are made)
            while unsafe { libc::read(pid_read.as_raw_fd(), (&mut pid as *mut i32).cast(), 4) } == 4 {
                let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
                if pid > 0 && pidfd >= 0 {
                    grandchildren.push(unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) });
                }
            }
            Some(Handover { wake: Some(wake), grandchildren })
        }
    }
}

/// In a grandchild: closes every fd up to `max` but `keep` and `wake`, waits
/// for `wake`'s EOF, and exits (the exit releases what it kept).
unsafe fn hold_until_woken(keep: &[RawFd], wake: RawFd, max: RawFd) -> ! {
    // (a name to be told by, also while it exits: `ps`, benchmarks)
    libc::prctl(libc::PR_SET_NAME, RELEASER.as_ptr());
    for fd in 0..=max {
        if fd != wake && !keep.contains(&fd) {
            libc::close(fd);
        }
    }
    let mut b = 0u8;
    while libc::read(wake, (&mut b as *mut u8).cast(), 1) < 0 && *libc::__errno_location() == libc::EINTR {}
    libc::_exit(0)
}

fn pipe() -> Option<(OwnedFd, OwnedFd)> {
    let mut p = [0; 2];
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return None;
    }
    Some(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
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

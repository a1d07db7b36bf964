//! Maps, load-time globals and helpers every program uses.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated as h,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use bpfcap_common::{kind, Header, Offsets, Settings, COMM_LEN, NO_OFFSET};

/// The one ring every program writes to. Userspace sets its size before load.
#[map(name = "BPFCAP_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Records that did not fit into the ring, per CPU and per kind.
#[map(name = "BPFCAP_LOST")]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

/// Which event kinds userspace wants (1) or not (0). Programs shared by
/// several kinds (a syscall tracepoint serving reads and permission checks)
/// look here before building a record.
#[map(name = "BPFCAP_ENABLED")]
pub static ENABLED: Array<u32> = Array::with_max_entries(kind::COUNT, 0);

/// Struct field offsets of the running kernel, from its BTF (set before load).
#[no_mangle]
pub static OFFSETS: Offsets = Offsets::UNKNOWN;

/// Wake-up watermark and other load-time settings.
#[no_mangle]
pub static SETTINGS: Settings = Settings::DEFAULT;

/// Reads one offset from the read-only global; volatile so LLVM cannot fold
/// the placeholder value in (the verifier sees the real, constant one).
macro_rules! off {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&$crate::common::OFFSETS.$field) }
    };
}
pub(crate) use off;

/// Reads a `T` at `base + off` in kernel memory; `None` when the kernel lacks
/// the field or the read fails.
#[inline(always)]
pub fn read_kernel<T: Copy>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == NO_OFFSET {
        return None;
    }
    let mut out = core::mem::MaybeUninit::<T>::uninit();
    let ret = unsafe {
        h::bpf_probe_read_kernel(
            out.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            (base + off as u64) as *const core::ffi::c_void,
        )
    };
    if ret == 0 {
        Some(unsafe { out.assume_init() })
    } else {
        None
    }
}

/// The inode number of a namespace reached through `task->nsproxy->{ns_off}`.
#[inline(always)]
fn ns_inum(nsproxy: u64, ns_off: u32, inum_off: u32) -> u32 {
    read_kernel::<u64>(nsproxy, ns_off)
        .and_then(|ns| read_kernel::<u32>(ns, inum_off))
        .unwrap_or(0)
}

/// Fills the common header for the current task. `size` is set by the caller.
#[inline(always)]
pub fn fill_header(hdr: &mut Header, kind: u16) {
    let pid_tgid = unsafe { h::bpf_get_current_pid_tgid() };
    let uid_gid = unsafe { h::bpf_get_current_uid_gid() };
    let task = unsafe { h::bpf_get_current_task() };
    hdr.kind = kind;
    hdr.flags = 0;
    hdr.ts_ns = unsafe { h::bpf_ktime_get_ns() };
    hdr.cgroup_id = unsafe { h::bpf_get_current_cgroup_id() };
    hdr.pid = (pid_tgid >> 32) as u32;
    hdr.tid = pid_tgid as u32;
    hdr.uid = uid_gid as u32;
    hdr.gid = (uid_gid >> 32) as u32;
    hdr._pad = 0;
    unsafe { h::bpf_get_current_comm(hdr.comm.as_mut_ptr().cast(), COMM_LEN as u32) };
    hdr.ppid = read_kernel::<u64>(task, off!(task_real_parent))
        .and_then(|parent| read_kernel::<u32>(parent, off!(task_tgid)))
        .unwrap_or(0);
    let nsproxy = read_kernel::<u64>(task, off!(task_nsproxy)).unwrap_or(0);
    hdr.mnt_ns = ns_inum(nsproxy, off!(nsproxy_mnt_ns), off!(mnt_ns_inum));
    hdr.pid_ns = ns_inum(nsproxy, off!(nsproxy_pid_ns), off!(pid_ns_inum));
}

/// Submit flags implementing the wake-up policy: wake the reader only when
/// enough data is pending, otherwise let its poll interval pick the data up.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let watermark = unsafe { core::ptr::read_volatile(&SETTINGS.wakeup_bytes) };
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= watermark {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Counts a record the ring had no room for.
#[inline(always)]
pub fn count_lost(kind: u16) {
    if let Some(slot) = LOST.get_ptr_mut(kind as u32) {
        unsafe { *slot += 1 };
    }
}

/// Sends a fixed-size record: reserve, fill, submit (no copy through the stack).
#[inline(always)]
pub fn emit<T: 'static>(kind: u16, fill: impl FnOnce(&mut T)) {
    let size = core::mem::size_of::<T>();
    let flags = wakeup_flags();
    let ptr = unsafe { h::bpf_ringbuf_reserve(EVENTS_ptr(), size as u64, 0) } as *mut T;
    if ptr.is_null() {
        count_lost(kind);
        return;
    }
    let rec = unsafe { &mut *ptr };
    // SAFETY: every record type starts with a Header (repr(C)).
    let hdr = unsafe { &mut *(ptr as *mut Header) };
    fill_header(hdr, kind);
    hdr.size = size as u32;
    fill(rec);
    unsafe { h::bpf_ringbuf_submit(ptr.cast(), flags) };
}

/// The ring map as the helpers want it.
#[allow(non_snake_case)]
#[inline(always)]
pub fn EVENTS_ptr() -> *mut core::ffi::c_void {
    &EVENTS as *const RingBuf as *mut core::ffi::c_void
}

/// Whether userspace asked for events of `kind`.
#[inline(always)]
pub fn enabled(kind: u16) -> bool {
    ENABLED.get(kind as u32).is_some_and(|v| *v != 0)
}

/// Sends the first `size` bytes of a record built in scratch memory, with the
/// wake-up policy; `size` must be bounded (masked) by the caller for the verifier.
#[inline(always)]
pub fn output(kind: u16, rec: *mut core::ffi::c_void, size: usize) {
    let ret = unsafe { h::bpf_ringbuf_output(EVENTS_ptr(), rec, size as u64, wakeup_flags()) };
    if ret != 0 {
        count_lost(kind);
    }
}

/// The `struct file *` behind descriptor `fd` of the current task, or 0.
#[inline(always)]
pub fn file_of_fd(fd: i64) -> u64 {
    if fd < 0 {
        return 0;
    }
    let task = unsafe { h::bpf_get_current_task() };
    let files = read_kernel::<u64>(task, off!(task_files)).unwrap_or(0);
    let fdt = read_kernel::<u64>(files, off!(files_fdt)).unwrap_or(0);
    let max = read_kernel::<u32>(fdt, off!(fdt_max_fds)).unwrap_or(0);
    if fd as u64 >= max as u64 {
        return 0;
    }
    let fds = read_kernel::<u64>(fdt, off!(fdt_fd)).unwrap_or(0);
    if fds == 0 {
        return 0;
    }
    read_kernel::<u64>(fds + fd as u64 * 8, 0).unwrap_or(0)
}

//! File events (open, read, write) and the two LSM hooks (exec check, file
//! permission). Each has a preferred program (kprobe or LSM), an fentry/fexit
//! program, and a fallback on the nearest tracepoints; all send a FileRecord.

use aya_ebpf::{
    helpers::generated as h,
    macros::{fentry, fexit, kprobe, kretprobe, lsm, map, raw_tracepoint, tracepoint},
    maps::Array,
    programs::{
        FEntryContext, FExitContext, LsmContext, ProbeContext, RawTracePointContext, RetProbeContext, TracePointContext,
    },
};
use bpfcap_common::{flag, kind};

use crate::{
    common::{admit, count_lost, file_of_fd, off, peek, read_kernel, syscall_arg},
    net::{udp_write, UdpWrite},
    path::{file_record, fill_file_path, fill_path, fill_path_string, send_file},
};

const MAY_WRITE: u32 = 2;
const MAY_READ: u32 = 4;

/// What a syscall's entry saw, for its exit: the fd (tracepoints), the
/// `struct file *` when the entry looked it up (kprobes; tracepoints that
/// checked permission), so the exit need not look it up again, and a
/// permission check whose event goes out with the exit's record. One slot per
/// thread id modulo the table size: an array, so both sides cost a few
/// instructions instead of hash-map updates. Two threads in flight in the
/// same slot at once (ids equal modulo 65536) lose the older one's events,
/// counted as lost.
#[map(name = "BPFCAP_INFLIGHT")]
static INFLIGHT: Array<InFlight> = Array::with_max_entries(INFLIGHT_SLOTS, 0);

const INFLIGHT_SLOTS: u32 = 1 << 16;

#[repr(C)]
#[derive(Clone, Copy)]
struct InFlight {
    /// Thread id + 1 (0: empty).
    tid: u32,
    kind: u32,
    /// -1: not known.
    fd: i64,
    /// 0: not looked up.
    file: u64,
    /// When the entry checked permission for the exit to report (0: it did not).
    checked_at: u64,
    /// That check's mask (`MAY_*`).
    mask: u32,
    _pad: u32,
}

#[inline(always)]
fn tid() -> u32 {
    unsafe { h::bpf_get_current_pid_tgid() as u32 }
}

/// An event about an open `struct file *`; `fd` < 0 when not known.
#[inline(always)]
fn emit_file(kind: u16, file: u64, fd: i64, flags: Option<u32>, bytes: Option<i64>) {
    let Some(rec) = file_record(kind) else { return };
    if fd >= 0 {
        rec.fd = fd as i32;
    } else {
        rec.hdr.flags |= flag::NO_FD;
    }
    match flags {
        Some(f) => rec.flags = f,
        None => rec.hdr.flags |= flag::NO_FLAGS,
    }
    match bytes {
        Some(b) => rec.bytes = b,
        None => rec.hdr.flags |= flag::NO_BYTES,
    }
    fill_file_path(rec, file);
    send_file(rec);
}

#[inline(always)]
fn file_flags(file: u64) -> Option<u32> {
    read_kernel::<u32>(file, off!(file_flags))
}

// -- file_open: vfs_open(const struct path *path, struct file *file) ------------------

#[inline(always)]
fn vfs_open(path: u64, file: u64) {
    if !admit(kind::FILE_OPEN) {
        return;
    }
    let Some(rec) = file_record(kind::FILE_OPEN) else { return };
    rec.hdr.flags |= flag::NO_FD | flag::NO_BYTES;
    // alloc_empty_file() set f_flags before vfs_open is called.
    match file_flags(file) {
        Some(f) => rec.flags = f,
        None => rec.hdr.flags |= flag::NO_FLAGS,
    }
    let mnt = peek::<u64>(path, off!(path_mnt));
    let dentry = peek::<u64>(path, off!(path_dentry));
    fill_path(rec, dentry, mnt);
    send_file(rec);
}

#[kprobe]
pub fn bpfcap_open_kp(ctx: ProbeContext) -> u32 {
    vfs_open(ctx.arg(0).unwrap_or(0), ctx.arg(1).unwrap_or(0));
    0
}

#[fentry(function = "vfs_open")]
pub fn bpfcap_open_fe(ctx: FEntryContext) -> u32 {
    vfs_open(ctx.arg(0), ctx.arg(1));
    0
}

/// `syscalls:sys_exit_open{,at,at2}`, `sys_exit_creat`: the new fd's file gives path and flags.
#[tracepoint]
pub fn bpfcap_open_tp(ctx: TracePointContext) -> u32 {
    if !admit(kind::FILE_OPEN) {
        return 0;
    }
    let ret = syscall_arg(&ctx, 0) as i64;
    let file = file_of_fd(ret);
    if file != 0 {
        emit_file(kind::FILE_OPEN, file, ret, file_flags(file), None);
    }
    0
}

// -- file_read / file_write: vfs_{read,write}(struct file *, buf, count, loff_t *) ----

/// Remembers the fd, file and deferred check for the current thread's syscall exit.
#[inline(always)]
fn remember(k: u16, fd: i64, file: u64, checked_at: u64, mask: u32) {
    let t = tid();
    if let Some(slot) = INFLIGHT.get_ptr_mut(t & (INFLIGHT_SLOTS - 1)) {
        let slot = unsafe { &mut *slot };
        if slot.tid != 0 && slot.tid != t + 1 {
            // another thread's syscall still in flight here
            count_lost(slot.kind as u16);
            if slot.checked_at != 0 {
                count_lost(kind::FILE_PERMISSION);
            }
        }
        *slot = InFlight { tid: t + 1, kind: k as u32, fd, file, checked_at, mask, _pad: 0 };
    }
}

/// What the current thread's syscall entry remembered, if anything.
#[inline(always)]
fn recall() -> Option<InFlight> {
    let t = tid();
    let slot = unsafe { &mut *INFLIGHT.get_ptr_mut(t & (INFLIGHT_SLOTS - 1))? };
    if slot.tid != t + 1 {
        return None;
    }
    slot.tid = 0;
    Some(*slot)
}

#[kprobe]
pub fn bpfcap_rd_kp(ctx: ProbeContext) -> u32 {
    if admit(kind::FILE_READ) {
        remember(kind::FILE_READ, -1, ctx.arg(0).unwrap_or(0), 0, 0);
    }
    0
}

#[kretprobe]
pub fn bpfcap_rd_krp(ctx: RetProbeContext) -> u32 {
    let ret: i64 = ctx.ret();
    if let Some(f) = recall() {
        if ret >= 0 {
            emit_file(kind::FILE_READ, f.file, -1, None, Some(ret));
        }
    }
    0
}

#[kprobe]
pub fn bpfcap_wr_kp(ctx: ProbeContext) -> u32 {
    if admit(kind::FILE_WRITE) {
        remember(kind::FILE_WRITE, -1, ctx.arg(0).unwrap_or(0), 0, 0);
    }
    0
}

#[kretprobe]
pub fn bpfcap_wr_krp(ctx: RetProbeContext) -> u32 {
    let ret: i64 = ctx.ret();
    if let Some(f) = recall() {
        if ret >= 0 {
            emit_file(kind::FILE_WRITE, f.file, -1, None, Some(ret));
        }
    }
    0
}

/// fexit sees the arguments and the return value (after the 4 arguments).
#[fexit(function = "vfs_read")]
pub fn bpfcap_rd_fx(ctx: FExitContext) -> u32 {
    let ret: i64 = ctx.arg(4);
    if ret >= 0 && admit(kind::FILE_READ) {
        emit_file(kind::FILE_READ, ctx.arg(0), -1, None, Some(ret));
    }
    0
}

#[fexit(function = "vfs_write")]
pub fn bpfcap_wr_fx(ctx: FExitContext) -> u32 {
    let ret: i64 = ctx.arg(4);
    if ret >= 0 && admit(kind::FILE_WRITE) {
        emit_file(kind::FILE_WRITE, ctx.arg(0), -1, None, Some(ret));
    }
    0
}

/// `syscalls:sys_enter_{read,write}(fd, buf, count)`: remembers the fd for
/// the exit; also serves `file_permission` observed through these syscalls.
/// On a file that never waits the check is reported with the syscall's own
/// record at its exit (one record instead of two; the decoder gives both
/// events, the check at its own time); elsewhere (a pipe, a socket, a
/// terminal: the read may wait for long) it is sent now.
#[inline(always)]
fn rw_enter(ctx: &TracePointContext, k: u16, mask: u32) -> u64 {
    let fd = syscall_arg(ctx, 0) as i64;
    let check = admit(kind::FILE_PERMISSION);
    let wanted = admit(k);
    let mut file = 0;
    let mut checked_at = 0;
    if check {
        file = file_of_fd(fd);
        if file != 0 {
            if wanted && never_waits(file) {
                checked_at = unsafe { h::bpf_ktime_get_ns() };
            } else if let Some(rec) = file_record(kind::FILE_PERMISSION) {
                rec.fd = fd as i32;
                rec.flags = mask;
                rec.hdr.flags |= flag::NO_BYTES;
                fill_file_path(rec, file);
                send_file(rec);
            }
        }
    }
    if wanted {
        remember(k, fd, file, checked_at, mask);
    }
    file
}

/// Whether reading or writing `file` never waits for another party: its file
/// operations have no `poll` (regular files, /dev/zero, /dev/null), unlike
/// pipes, sockets, terminals and event fds.
#[inline(always)]
fn never_waits(file: u64) -> bool {
    let Some(fops) = read_kernel::<u64>(file, off!(file_f_op)) else { return false };
    matches!(read_kernel::<u64>(fops, off!(fops_poll)), Some(0))
}

/// A file found at the entry is the one the syscall used; looking it up again
/// here would cost four kernel reads. (Either way, another thread closing the
/// fd while the syscall runs can make the path another file's.)
#[inline(always)]
fn rw_exit(ctx: &TracePointContext, k: u16) {
    let Some(f) = recall() else { return };
    let ret = syscall_arg(ctx, 0) as i64;
    let checked = f.checked_at != 0;
    if ret < 0 && !checked {
        return;
    }
    let file = if f.file != 0 { f.file } else { file_of_fd(f.fd) };
    if file == 0 {
        return;
    }
    let first = if ret < 0 { kind::FILE_PERMISSION } else { k };
    let Some(rec) = file_record(first) else {
        if checked && ret >= 0 {
            count_lost(kind::FILE_PERMISSION);
        }
        return;
    };
    rec.fd = f.fd as i32;
    rec.hdr.flags |= flag::NO_FLAGS;
    fill_file_path(rec, file);
    if checked {
        let since = rec.hdr.ts_ns.saturating_sub(f.checked_at);
        if ret >= 0 && since <= u32::MAX as u64 {
            rec.hdr.flags = (rec.hdr.flags & !flag::NO_FLAGS) | flag::CHECKED;
            rec.flags = f.mask;
            rec.checked_ns = since as u32;
        } else {
            // The check on its own, at its own time: the syscall failed, or
            // took longer than `checked_ns` can say. (The path is reused.)
            let (ts, flags) = (rec.hdr.ts_ns, rec.hdr.flags);
            rec.hdr.kind = kind::FILE_PERMISSION;
            rec.hdr.ts_ns = f.checked_at;
            rec.hdr.flags = (flags & !flag::NO_FLAGS) | flag::NO_BYTES;
            rec.flags = f.mask;
            send_file(rec);
            if ret < 0 {
                return;
            }
            (rec.hdr.kind, rec.hdr.ts_ns, rec.hdr.flags) = (k, ts, flags);
            rec.flags = 0;
        }
    }
    rec.bytes = ret;
    if !send_file(rec) && rec.hdr.flags & flag::CHECKED != 0 {
        count_lost(kind::FILE_PERMISSION);
    }
}

#[tracepoint]
pub fn bpfcap_rd_etp(ctx: TracePointContext) -> u32 {
    rw_enter(&ctx, kind::FILE_READ, MAY_READ);
    0
}

#[tracepoint]
pub fn bpfcap_rd_xtp(ctx: TracePointContext) -> u32 {
    rw_exit(&ctx, kind::FILE_READ);
    0
}

/// write(2); on a connected UDP socket also a `udp_send` (the udp_send
/// tracepoint plan shares this program).
#[tracepoint]
pub fn bpfcap_wr_etp(ctx: TracePointContext) -> u32 {
    let file = rw_enter(&ctx, kind::FILE_WRITE, MAY_WRITE);
    udp_write(&ctx, file, UdpWrite::Count);
    0
}

/// writev(2), as write(2).
#[tracepoint]
pub fn bpfcap_wrv_etp(ctx: TracePointContext) -> u32 {
    let file = rw_enter(&ctx, kind::FILE_WRITE, MAY_WRITE);
    udp_write(&ctx, file, UdpWrite::Iovecs);
    0
}

/// readv(2), preadv(2), preadv2(2) where vfs_read is probed (kprobe, fentry):
/// these syscalls do not pass through it. The fd only, for the exit
/// (`bpfcap_rd_xtp`); the plan's own programs see the permission checks.
#[tracepoint]
pub fn bpfcap_rdvec_etp(ctx: TracePointContext) -> u32 {
    if admit(kind::FILE_READ) {
        remember(kind::FILE_READ, syscall_arg(&ctx, 0) as i64, 0, 0, 0);
    }
    0
}

/// writev(2), pwritev(2), pwritev2(2), as `bpfcap_rdvec_etp`.
#[tracepoint]
pub fn bpfcap_wrvec_etp(ctx: TracePointContext) -> u32 {
    if admit(kind::FILE_WRITE) {
        remember(kind::FILE_WRITE, syscall_arg(&ctx, 0) as i64, 0, 0, 0);
    }
    0
}

/// pwrite64(2), pwritev(2), pwritev2(2) (a socket refuses them).
#[tracepoint]
pub fn bpfcap_pwr_etp(ctx: TracePointContext) -> u32 {
    rw_enter(&ctx, kind::FILE_WRITE, MAY_WRITE);
    0
}

#[tracepoint]
pub fn bpfcap_wr_xtp(ctx: TracePointContext) -> u32 {
    rw_exit(&ctx, kind::FILE_WRITE);
    0
}

// -- copies: copy_file_range, splice, sendfile (a read of one fd, a write of another) ---

/// A copy's two fds, from its syscall's entry to its exit, per thread slot
/// (as `INFLIGHT`, in a table of their own so a read inside never takes it).
#[map(name = "BPFCAP_COPYING")]
static COPYING: Array<Copying> = Array::with_max_entries(COPY_SLOTS, 0);

const COPY_SLOTS: u32 = 1 << 14;

#[repr(C)]
#[derive(Clone, Copy)]
struct Copying {
    /// Thread id + 1 (0: empty).
    tid: u32,
    /// Whether the read (bit 0) and the write (bit 1) are wanted.
    wants: u32,
    fd_in: i64,
    fd_out: i64,
}

#[inline(always)]
fn copy_enter(fd_in: u64, fd_out: u64) {
    let wants = admit(kind::FILE_READ) as u32 | (admit(kind::FILE_WRITE) as u32) << 1;
    if wants == 0 {
        return;
    }
    let t = tid();
    if let Some(slot) = COPYING.get_ptr_mut(t & (COPY_SLOTS - 1)) {
        unsafe { *slot = Copying { tid: t + 1, wants, fd_in: fd_in as i64, fd_out: fd_out as i64 } };
    }
}

/// `syscalls:sys_enter_copy_file_range(fd_in, off_in, fd_out, ...)`, `sys_enter_splice` (the same order).
#[tracepoint]
pub fn bpfcap_copy_etp(ctx: TracePointContext) -> u32 {
    copy_enter(syscall_arg(&ctx, 0), syscall_arg(&ctx, 2));
    0
}

/// `syscalls:sys_enter_sendfile64(out_fd, in_fd, offset, count)`.
#[tracepoint]
pub fn bpfcap_sendfile_etp(ctx: TracePointContext) -> u32 {
    copy_enter(syscall_arg(&ctx, 1), syscall_arg(&ctx, 0));
    0
}

/// The exit of any of the copies: the bytes copied were read from one file
/// and written to the other (two events, the read first).
#[tracepoint]
pub fn bpfcap_copy_xtp(ctx: TracePointContext) -> u32 {
    let t = tid();
    let Some(slot) = COPYING.get_ptr_mut(t & (COPY_SLOTS - 1)) else { return 0 };
    let slot = unsafe { &mut *slot };
    if slot.tid != t + 1 {
        return 0;
    }
    slot.tid = 0;
    let c = *slot;
    let ret = syscall_arg(&ctx, 0) as i64;
    if ret < 0 {
        return 0;
    }
    if c.wants & 1 != 0 {
        let file = file_of_fd(c.fd_in);
        if file != 0 {
            emit_file(kind::FILE_READ, file, c.fd_in, None, Some(ret));
        }
    }
    if c.wants & 2 != 0 {
        let file = file_of_fd(c.fd_out);
        if file != 0 {
            emit_file(kind::FILE_WRITE, file, c.fd_out, None, Some(ret));
        }
    }
    0
}

// -- exec_check: LSM bprm_check_security(struct linux_binprm *bprm) ---------------------

#[inline(always)]
fn exec_check(bprm: u64) {
    if !admit(kind::EXEC_CHECK) {
        return;
    }
    let Some(rec) = file_record(kind::EXEC_CHECK) else { return };
    rec.hdr.flags |= flag::NO_FD | flag::NO_BYTES | flag::NO_FLAGS;
    let filename = peek::<u64>(bprm, off!(bprm_filename));
    fill_path_string(rec, filename, false);
    send_file(rec);
}

#[lsm(hook = "bprm_check_security")]
pub fn bpfcap_xchk_lsm(ctx: LsmContext) -> i32 {
    exec_check(ctx.arg(0));
    0 // observe only: never deny
}

#[fentry(function = "security_bprm_check")]
pub fn bpfcap_xchk_fe(ctx: FEntryContext) -> u32 {
    exec_check(ctx.arg(0));
    0
}

#[kprobe]
pub fn bpfcap_xchk_kp(ctx: ProbeContext) -> u32 {
    exec_check(ctx.arg(0).unwrap_or(0));
    0
}

/// Fallback: `sched_process_exec` fires after the check passed (observe only).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn bpfcap_xchk_tp(ctx: RawTracePointContext) -> i32 {
    exec_check(ctx.arg(2));
    0
}

// -- file_permission: LSM file_permission(struct file *file, int mask) ------------------

#[inline(always)]
fn file_permission(file: u64, mask: u32) {
    if !admit(kind::FILE_PERMISSION) {
        return;
    }
    let Some(rec) = file_record(kind::FILE_PERMISSION) else { return };
    rec.hdr.flags |= flag::NO_FD | flag::NO_BYTES;
    rec.flags = mask;
    fill_file_path(rec, file);
    send_file(rec);
}

#[lsm(hook = "file_permission")]
pub fn bpfcap_perm_lsm(ctx: LsmContext) -> i32 {
    file_permission(ctx.arg(0), ctx.arg(1));
    0
}

#[fentry(function = "security_file_permission")]
pub fn bpfcap_perm_fe(ctx: FEntryContext) -> u32 {
    file_permission(ctx.arg(0), ctx.arg(1));
    0
}

#[kprobe]
pub fn bpfcap_perm_kp(ctx: ProbeContext) -> u32 {
    file_permission(ctx.arg(0).unwrap_or(0), ctx.arg(1).unwrap_or(0));
    0
}

//! Process lifecycle: exec, exit, fork, from the scheduler's raw tracepoints
//! (cheaper than classic tracepoints, no tracefs needed, and they hand us the
//! task pointers).

use aya_ebpf::{
    helpers::generated as h,
    macros::{map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use bpfcap_common::{flag, kind, ExecRecord, ExitRecord, ForkRecord, ARGV_MAX, FILENAME_MAX, MAX_TRACKED, NAME_CAP};

use crate::common::{admit, emit, fill_header, off, output, peek, read_kernel, track_exit, track_fork, track_free};

/// Exec records are built here (too big for the 512-byte stack) and sent with
/// `bpf_ringbuf_output` trimmed to what they hold.
#[map(name = "BPFCAP_EXEC_TMP")]
static EXEC_SCRATCH: PerCpuArray<ExecRecord> = PerCpuArray::with_max_entries(1, 0);

const DATA_OFFSET: usize = core::mem::size_of::<ExecRecord>() - FILENAME_MAX - ARGV_MAX - NAME_CAP;

/// The argv[0] each execve was given, by thread, until its exec: a script's
/// is replaced by its interpreter's argv (binfmt_script) before the exec
/// event can read it. (`NAME_CAP` bytes, NUL-terminated.)
#[map(name = "BPFCAP_ARG0")]
static ARG0: LruHashMap<u32, [u8; NAME_CAP]> = LruHashMap::with_max_entries(4096, 0);

#[map(name = "BPFCAP_ARG0_TMP")]
static ARG0_SCRATCH: PerCpuArray<[u8; NAME_CAP]> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn remember_arg0(argv: u64) {
    if argv == 0 || !crate::common::enabled(kind::PROCESS_EXEC) {
        return;
    }
    let Some(buf) = ARG0_SCRATCH.get_ptr_mut(0) else { return };
    let buf = unsafe { &mut *buf };
    let Ok(arg0) = (unsafe { aya_ebpf::helpers::bpf_probe_read_user(argv as *const u64) }) else { return };
    let n = unsafe { h::bpf_probe_read_user_str(buf.as_mut_ptr().cast(), NAME_CAP as u32, arg0 as *const _) };
    if n > 0 {
        let tid = unsafe { h::bpf_get_current_pid_tgid() } as u32;
        let _ = ARG0.insert(&tid, buf, 0);
    }
}

/// `syscalls:sys_enter_execve(filename, argv, envp)`.
#[tracepoint]
pub fn bpfcap_execve_etp(ctx: TracePointContext) -> u32 {
    remember_arg0(crate::common::syscall_arg(&ctx, 1));
    0
}

/// `syscalls:sys_enter_execveat(fd, filename, argv, envp, flags)`.
#[tracepoint]
pub fn bpfcap_execveat_etp(ctx: TracePointContext) -> u32 {
    remember_arg0(crate::common::syscall_arg(&ctx, 2));
    0
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn bpfcap_exec(ctx: RawTracePointContext) -> i32 {
    let _ = try_exec(&ctx);
    0
}

fn try_exec(ctx: &RawTracePointContext) -> Option<()> {
    if !admit(kind::PROCESS_EXEC) {
        return None;
    }
    let rec = unsafe { &mut *EXEC_SCRATCH.get_ptr_mut(0)? };
    fill_header(&mut rec.hdr, kind::PROCESS_EXEC);
    let task: u64 = ctx.arg(0);
    let bprm: u64 = ctx.arg(2);
    let data = rec.data.as_mut_ptr();

    // Filename: the path as given to execve (bprm->filename).
    let mut fname_len: usize = 0;
    if let Some(fname) = read_kernel::<u64>(bprm, off!(bprm_filename)) {
        let n = unsafe { h::bpf_probe_read_kernel_str(data.cast(), FILENAME_MAX as u32, fname as *const _) };
        if n > 0 {
            fname_len = n as usize;
            if fname_len == FILENAME_MAX {
                rec.hdr.flags |= flag::FILENAME_TRUNCATED;
            }
        }
    }
    // Keep the verifier's view of the offset bounded: 0 <= fname_len < FILENAME_MAX.
    fname_len &= FILENAME_MAX - 1;

    // argv: the new image's argument strings, mm->arg_start..arg_end.
    let mut argv_len: usize = 0;
    let mm = peek::<u64>(task, off!(task_mm));
    let start = peek::<u64>(mm, off!(mm_arg_start));
    let end = peek::<u64>(mm, off!(mm_arg_end));
    if end > start {
        let mut len = (end - start) as usize;
        if len >= ARGV_MAX {
            len = ARGV_MAX - 1;
            rec.hdr.flags |= flag::ARGV_TRUNCATED;
        }
        len &= ARGV_MAX - 1;
        let ret = unsafe { h::bpf_probe_read_user(data.add(fname_len).cast(), len as u32, start as *const _) };
        if ret == 0 {
            argv_len = len;
        } else {
            rec.hdr.flags |= flag::ARGV_UNREADABLE;
        }
    }

    // A script: its argv[0] as given (the one argv holds is its interpreter's).
    let old_tid = ctx.arg::<u32>(1);
    let mut arg0_len: usize = 0;
    let script =
        read_kernel::<u64>(bprm, off!(bprm_interp)).is_some_and(|i| Some(i) != read_kernel(bprm, off!(bprm_filename)));
    if let Some(arg0) = unsafe { ARG0.get(&old_tid) } {
        if script {
            let dst = unsafe { data.add(fname_len + argv_len) };
            let n = unsafe { h::bpf_probe_read_kernel_str(dst.cast(), NAME_CAP as u32, arg0.as_ptr().cast()) };
            if n > 0 {
                arg0_len = (n as usize).min(NAME_CAP - 1) & (NAME_CAP - 1);
                rec.hdr.flags |= flag::SCRIPT;
            }
        }
        let _ = ARG0.remove(&old_tid);
    }

    rec.filename_len = fname_len as u16;
    rec.argv_len = argv_len as u16;
    rec.arg0_len = arg0_len as u16;
    rec._pad = 0;
    // Every part is masked above, so the verifier can bound the size.
    let size = DATA_OFFSET + fname_len + argv_len + arg0_len;
    rec.hdr.size = size as u32;
    output(kind::PROCESS_EXEC, (rec as *mut ExecRecord).cast(), size);
    Some(())
}

/// Processes whose exit was reported, by tgid: the `signal_struct` it was
/// for (a reused tgid has another). Threads that exit at once can all find
/// `signal->live` at 0 here (each decremented it before any got this far):
/// the first to mark the process reports it. The leader's free unmarks it.
#[map(name = "BPFCAP_EXITED")]
static EXITED: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_TRACKED, 0);

const BPF_NOEXIST: u64 = 1;

/// `sched_process_exit(struct task_struct *p[, bool group_dead])`: reported
/// once per process, when its last thread exits (signal->live reached 0).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn bpfcap_exit(ctx: RawTracePointContext) -> i32 {
    let task: u64 = ctx.arg(0);
    let signal = peek::<u64>(task, off!(task_signal));
    let pid_tgid = unsafe { h::bpf_get_current_pid_tgid() };
    let tgid = (pid_tgid >> 32) as u32;
    if let Some(live) = read_kernel::<i32>(signal, off!(signal_live)) {
        if live != 0 {
            return 0; // another thread of this process is still running
        }
        if EXITED.insert(&tgid, &signal, BPF_NOEXIST).is_err() {
            if unsafe { EXITED.get(&tgid) }.is_some_and(|s| *s == signal) {
                return 0; // another of its last threads reported it
            }
            let _ = EXITED.insert(&tgid, &signal, 0);
        }
    } else if tgid != pid_tgid as u32 {
        // Without the offsets, fall back to "the thread-group leader exited".
        return 0;
    }
    if admit(kind::PROCESS_EXIT) {
        let exit_code = peek::<u32>(task, off!(task_exit_code));
        emit::<ExitRecord>(kind::PROCESS_EXIT, |rec| {
            rec.exit_code = exit_code;
            rec._pad = 0;
        });
    }
    track_exit(tgid);
    0
}

/// `sched_process_free(struct task_struct *p)`: the last reference to a task
/// is gone; for a process (its leader), it leaves its tracked tree.
#[raw_tracepoint(tracepoint = "sched_process_free")]
pub fn bpfcap_free(ctx: RawTracePointContext) -> i32 {
    let task: u64 = ctx.arg(0);
    let pid = peek::<u32>(task, off!(task_pid));
    let tgid = peek::<u32>(task, off!(task_tgid));
    if pid == tgid && tgid != 0 {
        track_free(tgid);
        let _ = EXITED.remove(&tgid);
    }
    0
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`:
/// only new processes; new threads (child->pid != child->tgid) are skipped.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn bpfcap_fork(ctx: RawTracePointContext) -> i32 {
    let child: u64 = ctx.arg(1);
    let child_pid = peek::<u32>(child, off!(task_pid));
    let child_tgid = peek::<u32>(child, off!(task_tgid));
    if child_pid != child_tgid {
        return 0;
    }
    // The parent is the current task (a new process's first thread is forked by it).
    track_fork((unsafe { h::bpf_get_current_pid_tgid() } >> 32) as u32, child_tgid);
    if admit(kind::PROCESS_FORK) {
        emit::<ForkRecord>(kind::PROCESS_FORK, |rec| {
            rec.child_pid = child_tgid;
            rec._pad = 0;
        });
    }
    0
}

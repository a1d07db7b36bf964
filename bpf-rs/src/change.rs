//! Changes to the file system (delete, rename, mkdir), seen at the exits
//! of their syscalls, with their outcome. One program serves every exit: it
//! reads the syscall's arguments from the user registers the kernel saved
//! at entry (x86_64), so no entry programs are needed, and each syscall
//! costs one tracepoint (each attachment costs its release an RCU wait).

use aya_ebpf::{
    helpers::generated as h,
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
    EbpfContext,
};
use bpfcap_common::{flag, kind, ChangeRecord, PATH_MAX_BYTES};

use crate::{
    common::{admit, count_lost, off, output, peek, syscall_arg},
    path::{file_record, fill_given_path, paths_changed, AT_FDCWD},
};

#[map(name = "BPFCAP_CHANGE_TMP")]
static SCRATCH: PerCpuArray<ChangeRecord> = PerCpuArray::with_max_entries(1, 0);

const DATA_OFFSET: usize = core::mem::offset_of!(ChangeRecord, data);

// x86_64 syscall numbers.
const NR_RENAME: u32 = 82;
const NR_MKDIR: u32 = 83;
const NR_RMDIR: u32 = 84;
const NR_UNLINK: u32 = 87;
const NR_MKDIRAT: u32 = 258;
const NR_UNLINKAT: u32 = 263;
const NR_RENAMEAT: u32 = 264;
const NR_RENAMEAT2: u32 = 316;

const AT_REMOVEDIR: u32 = 0x200;

/// The arguments of the current syscall, at its exit: from the `struct
/// pt_regs` at the top of the task's kernel stack. Where that is depends on
/// the stack's size (16 KiB, 32 KiB with KASAN) and on padding above it (16
/// bytes with FRED), so each place is tried, and taken only where the saved
/// syscall number, return value and user code segment are this syscall's.
#[inline(always)]
fn exit_args(nr: u32, ret: i64) -> Option<[u64; 6]> {
    // pt_regs: r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs ...
    const PT_REGS: u64 = 21 * 8;
    const FROM_R10: u32 = 7 * 8;
    const USER_CS: u64 = 0x33;
    let stack = peek::<u64>(unsafe { h::bpf_get_current_task() }, off!(task_stack));
    if stack == 0 {
        return None;
    }
    for top in [16384u64, 16384 - 16, 32768, 32768 - 16] {
        // r10 r9 r8 ax cx dx si di orig_ax ip cs
        let r = peek::<[u64; 11]>(stack + top - PT_REGS, FROM_R10);
        if r[8] == nr as u64 && r[3] == ret as u64 && r[10] == USER_CS {
            return Some([r[7], r[6], r[5], r[0], r[2], r[1]]);
        }
    }
    None
}

/// An `int` argument (a dirfd, flags) as the syscall saw it.
#[inline(always)]
fn int(arg: u64) -> i64 {
    arg as i32 as i64
}

/// `syscalls:sys_exit_{unlink,unlinkat,rmdir,rename,renameat,renameat2,mkdir,mkdirat}`.
/// Also the file probes' rename watch: a rename or unlink that succeeded
/// makes the cached paths stale, whether or not its event is wanted.
#[tracepoint]
pub fn bpfcap_change_xtp(ctx: TracePointContext) -> u32 {
    // (sys_exit record: __syscall_nr at 8, ret at 16)
    let nr = unsafe { *(ctx.as_ptr() as *const u8).add(8).cast::<i32>() } as u32;
    let ret = syscall_arg(&ctx, 0) as i64;
    let k = match nr {
        NR_UNLINK | NR_UNLINKAT | NR_RMDIR => kind::FILE_DELETE,
        NR_RENAME | NR_RENAMEAT | NR_RENAMEAT2 => kind::FILE_RENAME,
        NR_MKDIR | NR_MKDIRAT => kind::FILE_MKDIR,
        _ => return 0,
    };
    if ret == 0 && k != kind::FILE_MKDIR {
        paths_changed();
    }
    if !admit(k) {
        return 0;
    }
    let Some(a) = exit_args(nr, ret) else {
        count_lost(k);
        return 0;
    };
    // (first path's dirfd and name, second path's, mode)
    let (first, second, mode) = match nr {
        NR_UNLINK => ((AT_FDCWD, a[0]), None, 0),
        NR_RMDIR => ((AT_FDCWD, a[0]), None, AT_REMOVEDIR),
        NR_UNLINKAT => ((int(a[0]), a[1]), None, a[2] as u32 & AT_REMOVEDIR),
        NR_RENAME => ((AT_FDCWD, a[0]), Some((AT_FDCWD, a[1])), 0),
        NR_RENAMEAT => ((int(a[0]), a[1]), Some((int(a[2]), a[3])), 0),
        NR_RENAMEAT2 => ((int(a[0]), a[1]), Some((int(a[2]), a[3])), a[4] as u32),
        NR_MKDIR => ((AT_FDCWD, a[0]), None, a[1] as u32),
        _ => ((int(a[0]), a[1]), None, a[2] as u32), // mkdirat
    };
    let Some(rec) = SCRATCH.get_ptr_mut(0) else { return 0 };
    let rec = unsafe { &mut *rec };
    // The file record's scratch builds each path, then it is copied here.
    let Some(tmp) = file_record(k) else { return 0 };
    fill_given_path(tmp, first.0, first.1);
    rec.hdr = tmp.hdr;
    rec.result = ret as i32;
    rec.mode = mode;
    rec.path_len = copy_path(rec, 0, tmp.data.as_ptr(), tmp.path_len);
    rec.path2_len = 0;
    if let Some((dirfd, name)) = second {
        tmp.hdr.flags = 0;
        tmp.path_len = 0;
        fill_given_path(tmp, dirfd, name);
        if tmp.hdr.flags & flag::PATH_TRUNCATED != 0 {
            rec.hdr.flags |= flag::PATH2_TRUNCATED;
        }
        rec.path2_len = copy_path(rec, rec.path_len as usize, tmp.data.as_ptr(), tmp.path_len);
    }
    let size =
        DATA_OFFSET + (rec.path_len as usize & (PATH_MAX_BYTES - 1)) + (rec.path2_len as usize & (PATH_MAX_BYTES - 1));
    rec.hdr.size = size as u32;
    output(k, (rec as *mut ChangeRecord).cast(), size);
    0
}

/// Copies a path built in scratch memory into `rec.data` at `at`; its length.
#[inline(always)]
fn copy_path(rec: &mut ChangeRecord, at: usize, src: *const u8, len: u16) -> u16 {
    let len = len as usize & (PATH_MAX_BYTES - 1);
    let dst = unsafe { rec.data.as_mut_ptr().add(at & (PATH_MAX_BYTES - 1)) };
    if unsafe { h::bpf_probe_read_kernel(dst.cast(), len as u32, src.cast()) } != 0 {
        return 0;
    }
    len as u16
}

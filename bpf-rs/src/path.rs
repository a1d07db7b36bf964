//! File records: building the path of a dentry by walking up to the root,
//! across mount points. Userspace reverses the components.

use aya_ebpf::{
    helpers::generated as h,
    macros::map,
    maps::{Array, PerCpuArray},
};
use bpfcap_common::{flag, FileRecord, GIVEN_PATH_MAX, NAME_CAP, PATH_MAX_BYTES, PATH_MAX_DEPTH, PSEUDO_HEAD};

use crate::common::{bump, count_lost, file_of_fd, fill_header, off, output, peek, ring_has_room, CACHE_TTL_NS};

#[map(name = "BPFCAP_FILE_TMP")]
static FILE_SCRATCH: PerCpuArray<FileRecord> = PerCpuArray::with_max_entries(1, 0);

const DATA_OFFSET: usize = core::mem::offset_of!(FileRecord, data);

/// A file record in scratch memory with its header filled and no path yet.
#[inline(always)]
pub fn file_record(kind: u16) -> Option<&'static mut FileRecord> {
    // (8 bytes: the ring's own header of each record)
    if !ring_has_room((DATA_OFFSET + PATH_MAX_BYTES + 8) as u64) {
        count_lost(kind);
        return None;
    }
    let rec = unsafe { &mut *FILE_SCRATCH.get_ptr_mut(0)? };
    fill_header(&mut rec.hdr, kind);
    rec.fd = -1;
    rec.flags = 0;
    rec.bytes = 0;
    rec.path_len = 0;
    rec.path_depth = 0;
    rec.checked_ns = 0;
    Some(rec)
}

/// Writes the components of `dentry` (on mount `vfsmnt`) into `rec.data`
/// after the `path_len` bytes already there, leaf first. Stops at the root
/// of the mount tree, or sets PATH_TRUNCATED.
///
/// Written for the verifier, which walks every loop step by step and can
/// merge two paths only where their precisely known values agree (it took
/// 0.9 s per program when one loop did everything). So: the first pass walks
/// the dentries (and mounts) and notes each step's name pointer in a slot of
/// its own; the second copies the names. Kernel reads go through `peek`,
/// whose failure is a zero, not a branch; the copy offset and the step count
/// live in map memory between steps, where the verifier does not track them.
#[inline(never)]
pub fn fill_path(rec: &mut FileRecord, mut dentry: u64, vfsmnt: u64) {
    let Some(walk) = WALK.get_ptr_mut(0) else { return };
    let walk = unsafe { &mut *walk };
    let mnt_off = off!(mount_mnt) as u64;
    // struct mount embeds struct vfsmount: container_of.
    let mut mount = vfsmnt.wrapping_sub(mnt_off);
    let mut complete = false;
    let mut steps = 0;
    for step in 0..PATH_MAX_DEPTH as usize {
        walk.names[step] = 0;
        steps = step + 1;
        let parent = peek(dentry, off!(dentry_parent));
        let mnt_root = peek(mount + mnt_off, off!(vfsmount_root));
        if dentry == mnt_root || dentry == parent {
            // At the root of this mount: continue from where it is mounted.
            let mparent = peek(mount, off!(mount_parent));
            if mparent == 0 || mparent == mount {
                complete = true; // the root of everything: the path is complete
                break;
            }
            dentry = peek(mount, off!(mount_mountpoint));
            mount = mparent;
            continue;
        }
        let name = peek(dentry + off!(dentry_name) as u64, off!(qstr_name));
        if name == 0 {
            break;
        }
        walk.names[step] = name;
        dentry = parent;
    }
    if !complete {
        rec.hdr.flags |= flag::PATH_TRUNCATED;
    }
    unsafe { core::ptr::write_volatile(&mut walk.steps, steps as u64) };
    let data = rec.data.as_mut_ptr();
    for step in 0..PATH_MAX_DEPTH as usize {
        if step as u64 >= unsafe { core::ptr::read_volatile(&walk.steps) } {
            return;
        }
        let name = walk.names[step];
        if name == 0 {
            continue;
        }
        let len = unsafe { core::ptr::read_volatile(&rec.path_len) } as usize;
        let n = if len < PATH_MAX_BYTES - NAME_CAP {
            unsafe {
                h::bpf_probe_read_kernel_str(
                    data.add(len & (PATH_MAX_BYTES - 1)).cast(),
                    NAME_CAP as u32,
                    name as *const _,
                )
            }
        } else {
            0
        };
        if n <= 0 {
            // A name that does not fit, or cannot be read: the path ends here.
            rec.hdr.flags |= flag::PATH_TRUNCATED;
            return;
        }
        unsafe { core::ptr::write_volatile(&mut rec.path_len, (len + (n as usize & (NAME_CAP * 2 - 1))) as u16) };
        rec.path_depth += 1;
    }
}

/// The name pointers of one path walk (see `fill_path`).
#[repr(C)]
struct Walk {
    steps: u64,
    names: [u64; PATH_MAX_DEPTH as usize],
}

#[map(name = "BPFCAP_WALK_TMP")]
static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// The path of a `struct file *`.
#[inline(always)]
pub fn fill_file_path(rec: &mut FileRecord, file: u64) {
    let path = file + off!(file_path) as u64;
    // struct path is { mnt, dentry }: one read for both.
    let (mnt, dentry) = if off!(path_dentry) == off!(path_mnt) + 8 {
        let pair = peek::<[u64; 2]>(path, off!(path_mnt));
        (pair[0], pair[1])
    } else {
        (peek::<u64>(path, off!(path_mnt)), peek::<u64>(path, off!(path_dentry)))
    };
    if file == 0 || mnt == 0 || dentry == 0 {
        rec.hdr.flags |= flag::PATH_TRUNCATED;
        return;
    }
    cached_path(rec, dentry, mnt);
    if rec.path_depth == 0 && rec.hdr.flags & flag::PATH_TRUNCATED == 0 {
        describe_pseudo(rec, file, dentry);
    }
}

/// The path of (dentry, mount) from this CPU's cache, else walked (and cached).
#[inline(always)]
fn cached_path(rec: &mut FileRecord, dentry: u64, mnt: u64) {
    // (a one-entry per-CPU array is always there; one call site of fill_path
    // keeps the verifier from walking it twice)
    let Some(cache) = PATH_CACHE.get_ptr_mut(0) else { return };
    let cache = unsafe { &mut *cache };
    let now = rec.hdr.ts_ns;
    let renames = RENAMES.get(0).map_or(0, |r| *r);
    let mut hit = CACHE_WAYS;
    for i in 0..CACHE_WAYS {
        let way = &cache.ways[i];
        if way.dentry == dentry && way.mnt == mnt && now < way.expires && way.renames == renames {
            hit = i;
            break;
        }
    }
    if hit < CACHE_WAYS {
        // A file one of the last events on this CPU was about: copy its path.
        let way = &cache.ways[hit & (CACHE_WAYS - 1)];
        let len = way.len as usize & (PATH_MAX_BYTES - 1);
        unsafe {
            h::bpf_probe_read_kernel(rec.data.as_mut_ptr().cast(), len as u32, way.data.as_ptr().cast());
        }
        rec.path_len = len as u16;
        rec.path_depth = way.depth;
        rec.hdr.flags |= way.flags;
        return;
    }
    fill_path(rec, dentry, mnt);
    let way = &mut cache.ways[cache.next as usize & (CACHE_WAYS - 1)];
    cache.next = cache.next.wrapping_add(1);
    let len = rec.path_len as usize & (PATH_MAX_BYTES - 1);
    unsafe { h::bpf_probe_read_kernel(way.data.as_mut_ptr().cast(), len as u32, rec.data.as_ptr().cast()) };
    way.dentry = dentry;
    way.mnt = mnt;
    way.expires = now + CACHE_TTL_NS;
    way.renames = renames;
    way.len = len as u16;
    way.depth = rec.path_depth;
    way.flags = rec.hdr.flags & flag::PATH_TRUNCATED;
}

/// A file whose walk ends at once at its own root: the root directory, or
/// a file with no place in the mount tree (a pipe, a socket, an anonymous
/// inode). Userspace tells them apart by what this adds (`PSEUDO`): the
/// inode number, its file system's magic, and the dentry's name.
#[inline(always)]
fn describe_pseudo(rec: &mut FileRecord, file: u64, dentry: u64) {
    let inode = peek::<u64>(file, off!(file_inode));
    let sb = peek::<u64>(inode, off!(inode_sb));
    let head = [peek::<u64>(inode, off!(inode_ino)), peek::<u64>(sb, off!(sb_magic))];
    unsafe { core::ptr::write_unaligned(rec.data.as_mut_ptr().cast::<[u64; 2]>(), head) };
    let name = peek::<u64>(dentry + off!(dentry_name) as u64, off!(qstr_name));
    let n = unsafe {
        h::bpf_probe_read_kernel_str(rec.data.as_mut_ptr().add(PSEUDO_HEAD).cast(), NAME_CAP as u32, name as *const _)
    };
    rec.path_len = (PSEUDO_HEAD + if n > 0 { n as usize & (NAME_CAP * 2 - 1) } else { 0 }) as u16;
    rec.hdr.flags |= flag::PSEUDO;
}

/// Renames and unlinks so far, by any process: a cached path is valid only
/// while none happened since it was built, so a file is never reported
/// under the name it had before it (or a directory above it) was renamed,
/// nor under a deleted file's name whose dentry memory it reuses.
#[map(name = "BPFCAP_RENAMES")]
static RENAMES: Array<u64> = Array::with_max_entries(1, 0);

/// A rename or unlink is done (any process's): what is cached is stale.
#[inline(always)]
pub fn paths_changed() {
    bump(&RENAMES);
}

/// Paths built last on this CPU, by (dentry, mount), replaced in turn: a file
/// used over and over, or two files in alternation (a copy reads one and
/// writes the other), is walked once per `CACHE_TTL_NS`, which bounds how
/// long a rename above it can go unnoticed.
#[repr(C)]
struct PathCache {
    /// The way to replace next.
    next: u64,
    ways: [CachedPath; CACHE_WAYS],
}

const CACHE_WAYS: usize = 4;

#[repr(C)]
struct CachedPath {
    dentry: u64,
    mnt: u64,
    expires: u64,
    /// `RENAMES` when the path was built.
    renames: u64,
    len: u16,
    depth: u16,
    flags: u16,
    _pad: u16,
    data: [u8; PATH_MAX_BYTES],
}

#[map(name = "BPFCAP_PATH_TMP")]
static PATH_CACHE: PerCpuArray<PathCache> = PerCpuArray::with_max_entries(1, 0);

/// A path as a syscall was given it (`name`, in user memory), relative to
/// `dirfd` (`AT_FDCWD`: the cwd): the string, then, when it is relative,
/// the directory's components (see `ChangeRecord`). Not cached: these
/// syscalls are rare, and the directory need not be what an event named last.
#[inline(always)]
pub fn fill_given_path(rec: &mut FileRecord, dirfd: i64, name: u64) {
    let n =
        unsafe { h::bpf_probe_read_user_str(rec.data.as_mut_ptr().cast(), GIVEN_PATH_MAX as u32, name as *const _) };
    if n <= 0 {
        rec.data[0] = 0;
        rec.path_len = 1;
    } else {
        rec.path_len = n as u16;
        if n as usize == GIVEN_PATH_MAX {
            rec.hdr.flags |= flag::PATH_TRUNCATED;
        }
    }
    rec.path_depth = 1;
    if rec.data[0] == b'/' {
        return;
    }
    let (mnt, dentry) = if dirfd == AT_FDCWD {
        let fs = peek::<u64>(unsafe { h::bpf_get_current_task() }, off!(task_fs));
        let pwd = fs.wrapping_add(off!(fs_pwd) as u64);
        (peek::<u64>(pwd, off!(path_mnt)), peek::<u64>(pwd, off!(path_dentry)))
    } else {
        let path = file_of_fd(dirfd).wrapping_add(off!(file_path) as u64);
        (peek::<u64>(path, off!(path_mnt)), peek::<u64>(path, off!(path_dentry)))
    };
    if mnt == 0 || dentry == 0 {
        rec.hdr.flags |= flag::PATH_TRUNCATED;
        return;
    }
    fill_path(rec, dentry, mnt);
}

/// `AT_FDCWD`: a path relative to the current directory.
pub const AT_FDCWD: i64 = -100;

/// A plain string (a filename as passed to execve) as the record's path.
#[inline(always)]
pub fn fill_path_string(rec: &mut FileRecord, s: u64, user: bool) {
    rec.hdr.flags |= flag::PATH_IS_STRING;
    let dst = rec.data.as_mut_ptr().cast();
    let n = unsafe {
        if user {
            h::bpf_probe_read_user_str(dst, PATH_MAX_BYTES as u32, s as *const _)
        } else {
            h::bpf_probe_read_kernel_str(dst, PATH_MAX_BYTES as u32, s as *const _)
        }
    };
    if n > 0 {
        rec.path_len = n as u16;
        if n as usize == PATH_MAX_BYTES {
            rec.hdr.flags |= flag::PATH_TRUNCATED;
        }
    }
}

/// Sends a file record, trimmed to its path; false if the ring had no room
/// (counted as a loss of its kind).
#[inline(always)]
pub fn send_file(rec: &mut FileRecord) -> bool {
    let size = DATA_OFFSET + (rec.path_len as usize & (PATH_MAX_BYTES - 1));
    rec.hdr.size = size as u32;
    output(rec.hdr.kind, (rec as *mut FileRecord).cast(), size)
}

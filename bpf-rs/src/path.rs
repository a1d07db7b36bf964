//! File records: building the path of a dentry by walking up to the root,
//! across mount points. Userspace reverses the components.

use aya_ebpf::{helpers::generated as h, macros::map, maps::PerCpuArray};
use bpfcap_common::{flag, FileRecord, NAME_CAP, PATH_MAX_BYTES, PATH_MAX_DEPTH};

use crate::common::{fill_header, off, output, read_kernel, CACHE_TTL_NS};

#[map(name = "BPFCAP_FILE_TMP")]
static FILE_SCRATCH: PerCpuArray<FileRecord> = PerCpuArray::with_max_entries(1, 0);

const DATA_OFFSET: usize = core::mem::offset_of!(FileRecord, data);

/// A file record in scratch memory with its header filled and no path yet.
#[inline(always)]
pub fn file_record(kind: u16) -> Option<&'static mut FileRecord> {
    let rec = unsafe { &mut *FILE_SCRATCH.get_ptr_mut(0)? };
    fill_header(&mut rec.hdr, kind);
    rec.fd = -1;
    rec.flags = 0;
    rec.bytes = 0;
    rec.path_len = 0;
    rec.path_depth = 0;
    rec._pad = 0;
    Some(rec)
}

/// Writes the components of `dentry` (on mount `vfsmnt`) into `rec.data`,
/// leaf first. Stops at the root of the mount tree, or sets PATH_TRUNCATED.
#[inline(never)]
pub fn fill_path(rec: &mut FileRecord, mut dentry: u64, vfsmnt: u64) {
    let mnt_off = off!(mount_mnt) as u64;
    // struct mount embeds struct vfsmount: container_of.
    let mut mount = vfsmnt.wrapping_sub(mnt_off);
    let mut len: usize = 0;
    let mut depth: u16 = 0;
    let data = rec.data.as_mut_ptr();
    for _ in 0..PATH_MAX_DEPTH {
        let parent = read_kernel::<u64>(dentry, off!(dentry_parent)).unwrap_or(0);
        let mnt_root = read_kernel::<u64>(mount + mnt_off, off!(vfsmount_root)).unwrap_or(0);
        if dentry == mnt_root || dentry == parent {
            // At the root of this mount: continue from where it is mounted.
            let mparent = read_kernel::<u64>(mount, off!(mount_parent)).unwrap_or(0);
            if mparent == 0 || mparent == mount {
                rec.path_len = len as u16;
                rec.path_depth = depth;
                return; // the root of everything: the path is complete
            }
            dentry = read_kernel::<u64>(mount, off!(mount_mountpoint)).unwrap_or(0);
            mount = mparent;
            continue;
        }
        let name = read_kernel::<u64>(dentry + off!(dentry_name) as u64, off!(qstr_name)).unwrap_or(0);
        if len >= PATH_MAX_BYTES - NAME_CAP || name == 0 {
            break;
        }
        let n = unsafe {
            h::bpf_probe_read_kernel_str(
                data.add(len & (PATH_MAX_BYTES - 1)).cast(),
                NAME_CAP as u32,
                name as *const _,
            )
        };
        if n <= 0 {
            break;
        }
        len += n as usize & (NAME_CAP * 2 - 1);
        depth += 1;
        dentry = parent;
    }
    rec.hdr.flags |= flag::PATH_TRUNCATED;
    rec.path_len = len as u16;
    rec.path_depth = depth;
}

/// The path of a `struct file *`.
#[inline(always)]
pub fn fill_file_path(rec: &mut FileRecord, file: u64) {
    let path = file + off!(file_path) as u64;
    let mnt = read_kernel::<u64>(path, off!(path_mnt)).unwrap_or(0);
    let dentry = read_kernel::<u64>(path, off!(path_dentry)).unwrap_or(0);
    if file == 0 || mnt == 0 || dentry == 0 {
        rec.hdr.flags |= flag::PATH_TRUNCATED;
        return;
    }
    let Some(cache) = PATH_CACHE.get_ptr_mut(0) else { return fill_path(rec, dentry, mnt) };
    let cache = unsafe { &mut *cache };
    let now = rec.hdr.ts_ns;
    let len = cache.len as usize & (PATH_MAX_BYTES - 1);
    if cache.dentry == dentry && cache.mnt == mnt && now < cache.expires {
        // The same file as the last event on this CPU: copy its path.
        unsafe {
            h::bpf_probe_read_kernel(rec.data.as_mut_ptr().cast(), len as u32, cache.data.as_ptr().cast());
        }
        rec.path_len = len as u16;
        rec.path_depth = cache.depth;
        rec.hdr.flags |= cache.flags;
        return;
    }
    fill_path(rec, dentry, mnt);
    let len = rec.path_len as usize & (PATH_MAX_BYTES - 1);
    unsafe { h::bpf_probe_read_kernel(cache.data.as_mut_ptr().cast(), len as u32, rec.data.as_ptr().cast()) };
    cache.dentry = dentry;
    cache.mnt = mnt;
    cache.expires = now + CACHE_TTL_NS;
    cache.len = len as u16;
    cache.depth = rec.path_depth;
    cache.flags = rec.hdr.flags & flag::PATH_TRUNCATED;
}

/// The last path built on this CPU, by (dentry, mount): a file written over
/// and over is walked once per `CACHE_TTL_NS`, which bounds how long a
/// rename above it can go unnoticed.
#[repr(C)]
struct PathCache {
    dentry: u64,
    mnt: u64,
    expires: u64,
    len: u16,
    depth: u16,
    flags: u16,
    _pad: u16,
    data: [u8; PATH_MAX_BYTES],
}

#[map(name = "BPFCAP_PATH_TMP")]
static PATH_CACHE: PerCpuArray<PathCache> = PerCpuArray::with_max_entries(1, 0);

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

/// Sends a file record, trimmed to its path.
#[inline(always)]
pub fn send_file(rec: &mut FileRecord) {
    let size = DATA_OFFSET + (rec.path_len as usize & (PATH_MAX_BYTES - 1));
    rec.hdr.size = size as u32;
    output(rec.hdr.kind, (rec as *mut FileRecord).cast(), size);
}

//! Record and map types shared by the BPF programs (`bpf-rs/`) and userspace.
//!
//! Everything here is `#[repr(C)]`, `Copy`, explicitly padded, and uses integers
//! instead of `bool`, so both sides agree on the layout byte for byte.
//! `tests/layout.rs` in `bpfcap-core` checks the layout against the BPF object's BTF.
#![no_std]

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;
/// Bytes reserved for an exec's filename (including its NUL).
pub const FILENAME_MAX: usize = 512;
/// Bytes of argv (NUL-separated) an exec record carries at most.
pub const ARGV_MAX: usize = 2048;
/// Bytes of path components a file record carries at most.
pub const PATH_MAX_BYTES: usize = 2048;
/// Bytes one path component may take (NAME_MAX + NUL).
pub const NAME_CAP: usize = 256;
/// Entries per filter field and generation (pids, uids, comms, cgroups).
pub const MAX_FILTER_IDS: u32 = 4096;
/// Processes of followed trees and sessions tracked at once.
pub const MAX_TRACKED: u32 = 32768;
/// Directory levels a path walk climbs at most.
pub const PATH_MAX_DEPTH: u32 = 32;

mod event_types;
pub use event_types::kind;

/// `Header::flags` bits.
pub mod flag {
    /// argv did not fit into `ARGV_MAX` bytes.
    pub const ARGV_TRUNCATED: u16 = 1 << 0;
    /// The filename did not fit into `FILENAME_MAX` bytes.
    pub const FILENAME_TRUNCATED: u16 = 1 << 1;
    /// Reading argv from the new process failed: the argv list is empty.
    pub const ARGV_UNREADABLE: u16 = 1 << 2;
    /// The path walk stopped before the root (too deep or too long).
    pub const PATH_TRUNCATED: u16 = 1 << 3;
    /// The mechanism does not know the file descriptor.
    pub const NO_FD: u16 = 1 << 4;
    /// The mechanism does not know the byte count.
    pub const NO_BYTES: u16 = 1 << 5;
    /// The mechanism does not know the open flags.
    pub const NO_FLAGS: u16 = 1 << 6;
    /// The source address and port are unknown (unbound or not visible here).
    pub const NO_SOURCE: u16 = 1 << 7;
    /// `FileRecord::data` is one plain string, not path components.
    pub const PATH_IS_STRING: u16 = 1 << 8;
    /// A `file_read`/`file_write` record that also carries the
    /// `file_permission` check its syscall's entry made (mask in `flags`,
    /// made `checked_ns` before this record): one record instead of two.
    pub const CHECKED: u16 = 1 << 9;
    /// The file's walk ended at once at a root: `FileRecord::data` holds
    /// [`PSEUDO_HEAD`] bytes (inode number, file system magic, both u64)
    /// and the dentry's name, for a pipe, socket or anonymous inode to be
    /// told from the root directory.
    pub const PSEUDO: u16 = 1 << 10;
    /// A `tcp_close` of a socket that never was connected: its connect was
    /// refused, timed out, or the socket was closed before it completed.
    pub const NOT_CONNECTED: u16 = 1 << 11;
    /// The exec ran a script through its `#!` interpreter.
    pub const SCRIPT: u16 = 1 << 12;
    /// A [`ChangeRecord`]'s second path stopped before the root.
    pub const PATH2_TRUNCATED: u16 = 1 << 13;
}

/// Bytes before the name in the data of a `flag::PSEUDO` file record.
pub const PSEUDO_HEAD: usize = 16;

/// Common start of every record: the decoder checks `size` and dispatches on
/// `kind` before it reads anything else.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub kind: u16,
    pub flags: u16,
    /// Size of the whole record in bytes, header included.
    pub size: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
    /// cgroup v2 id (inode of the cgroup directory).
    pub cgroup_id: u64,
    /// Thread-group id (what userspace calls pid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub mnt_ns: u32,
    pub pid_ns: u32,
    pub net_ns: u32,
    /// Session label id of the process tree (0: none), see [`Track`].
    pub session: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

/// `process_exec`: `data` holds the filename (NUL-terminated, `filename_len`
/// bytes with the NUL) followed by `argv_len` bytes of NUL-separated argv,
/// then, for a script (`flag::SCRIPT`), `arg0_len` bytes of the argv[0] the
/// execve was given (the kernel replaced it with the interpreter's argv).
/// Only `size` bytes are sent, so the unused tail of `data` never crosses the ring.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    pub hdr: Header,
    pub filename_len: u16,
    pub argv_len: u16,
    pub arg0_len: u16,
    pub _pad: u16,
    pub data: [u8; FILENAME_MAX + ARGV_MAX + NAME_CAP],
}

/// `process_exit`: sent when the last thread of a process exits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitRecord {
    pub hdr: Header,
    /// `task_struct.exit_code`: `(status << 8) | signal` (bit 7: core dumped).
    pub exit_code: u32,
    pub _pad: u32,
}

/// `process_fork`: a new process (not a thread); `hdr` describes the parent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkRecord {
    pub hdr: Header,
    pub child_pid: u32,
    pub _pad: u32,
}

/// `tcp_connect`, `tcp_close`, `udp_send`. Ports in host order; IPv4
/// addresses in the first 4 bytes of `saddr`/`daddr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NetRecord {
    pub hdr: Header,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Bytes the send asked for (`udp_send`).
    pub bytes: i64,
}

/// `file_open`, `file_read`, `file_write`, `exec_check`, `file_permission`.
/// `data` holds `path_depth` NUL-terminated path components, the file's own
/// name first, up to the root (or the plain string of `PATH_IS_STRING`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileRecord {
    pub hdr: Header,
    pub fd: i32,
    /// Open flags (`O_*`) for `file_open`; the permission mask (`MAY_*`) for
    /// `file_permission` and for a read or write that is `CHECKED`.
    pub flags: u32,
    pub bytes: i64,
    pub path_len: u16,
    pub path_depth: u16,
    /// With `CHECKED`: nanoseconds from the permission check to this record.
    pub checked_ns: u32,
    pub data: [u8; PATH_MAX_BYTES + NAME_CAP],
}

/// Bytes of a path string a [`ChangeRecord`] takes as given (with its NUL).
pub const GIVEN_PATH_MAX: usize = 1024;

/// `file_delete`, `file_rename`, `file_mkdir`: what a syscall changed in the
/// file system, sent at its exit. `data` holds the first path's `path_len`
/// bytes, then the second's `path2_len` (a rename's new name). Each path is
/// the string the syscall was given (NUL-terminated, [`GIVEN_PATH_MAX`] bytes
/// at most), then, when that string is relative, the NUL-terminated
/// components of the directory it is relative to (the cwd or the dirfd's),
/// leaf first up to the root: userspace joins and normalizes them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ChangeRecord {
    pub hdr: Header,
    /// The syscall's return value: 0, or -errno when it failed.
    pub result: i32,
    /// The mode asked for (`file_mkdir`); `AT_REMOVEDIR` (`file_delete` of a
    /// directory); renameat2's flags (`file_rename`).
    pub mode: u32,
    pub path_len: u16,
    pub path2_len: u16,
    pub _pad: u32,
    pub data: [u8; 2 * PATH_MAX_BYTES],
}

/// Raw tracepoint-record bytes a `probe` record carries at most.
pub const PROBE_DATA_MAX: usize = 1024;
/// Bytes per string argument a `probe` record carries (`const char *` fields).
pub const PROBE_STR_MAX: usize = 256;
/// String arguments a `probe` record carries at most.
pub const PROBE_STRS: usize = 3;
/// Integer arguments a `probe` record carries at most.
pub const PROBE_ARGS: usize = 6;
/// Size of `ProbeRecord::data` (a power of two, for masking in the programs).
pub const PROBE_DATA_AREA: usize = 2048;

/// `probe`: an event of a user-defined kprobe, uprobe, tracepoint, raw
/// tracepoint or LSM hook. `data` holds `nstr` string slots of
/// `PROBE_STR_MAX` bytes, then `data_len` bytes copied from a tracepoint record.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProbeRecord {
    pub hdr: Header,
    pub probe_id: u32,
    pub nargs: u16,
    /// 1 when `ret` holds a return value (kretprobe, uretprobe).
    pub has_ret: u16,
    pub args: [u64; PROBE_ARGS],
    pub ret: i64,
    pub data_len: u16,
    pub nstr: u16,
    pub _pad: u32,
    pub data: [u8; PROBE_DATA_AREA],
}

/// Load-time settings of a user-defined probe's programs (one object instance per probe).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSettings {
    pub probe_id: u32,
    /// Arguments to read (raw tracepoints must not read past theirs).
    pub nargs: u32,
    /// Bytes of the tracepoint record to copy.
    pub data_size: u32,
    /// String pointer fields to read: how many, and their offsets in the record.
    pub nstr: u32,
    pub str_off: [u32; PROBE_STRS],
    /// 1: the string pointers point to user memory (syscall arguments).
    pub str_user: u32,
}

impl ProbeSettings {
    pub const NONE: Self = Self { probe_id: 0, nargs: 0, data_size: 0, nstr: 0, str_off: [0; PROBE_STRS], str_user: 0 };
}

/// Marker for "this kernel does not have that field" in [`Offsets`].
pub const NO_OFFSET: u32 = u32::MAX;

/// Byte offsets of the kernel struct fields the programs read, computed in
/// userspace from the running kernel's BTF (aya's Rust programs have no CO-RE).
/// A field the kernel lacks is `NO_OFFSET`; the programs then leave the value 0.
/// One table: each field, the kernel struct and the member (`a|b`: renamed
/// between kernels, the first found wins).
macro_rules! kernel_offsets {
    ($($field:ident => $s:literal, $path:literal;)*) => {
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct Offsets {
            $(pub $field: u32,)*
        }

        impl Offsets {
            pub const UNKNOWN: Self = Self { $($field: NO_OFFSET,)* };
            /// Each field's `(struct, member)`, in field order.
            pub const FIELDS: &'static [(&'static str, &'static str)] = &[$(($s, $path),)*];

            /// The offsets `f(struct, member)` gives, field by field.
            pub fn from_fn(mut f: impl FnMut(&'static str, &'static str) -> u32) -> Self {
                Self { $($field: f($s, $path),)* }
            }

            /// Each field's offset, in field order.
            pub fn values(&self) -> impl Iterator<Item = u32> {
                [$(self.$field,)*].into_iter()
            }
        }
    };
}

kernel_offsets! {
    task_pid => "task_struct", "pid";
    task_tgid => "task_struct", "tgid";
    task_real_parent => "task_struct", "real_parent";
    task_mm => "task_struct", "mm";
    task_nsproxy => "task_struct", "nsproxy";
    task_exit_code => "task_struct", "exit_code";
    task_signal => "task_struct", "signal";
    signal_live => "signal_struct", "live";
    mm_arg_start => "mm_struct", "arg_start";
    mm_arg_end => "mm_struct", "arg_end";
    nsproxy_mnt_ns => "nsproxy", "mnt_ns";
    nsproxy_pid_ns => "nsproxy", "pid_ns_for_children";
    mnt_ns_inum => "mnt_namespace", "ns.inum";
    pid_ns_inum => "pid_namespace", "ns.inum";
    bprm_filename => "linux_binprm", "filename";
    bprm_file => "linux_binprm", "file";
    bprm_interp => "linux_binprm", "interp";
    task_files => "task_struct", "files";
    task_fs => "task_struct", "fs";
    fs_pwd => "fs_struct", "pwd";
    task_stack => "task_struct", "stack";
    files_fdt => "files_struct", "fdt";
    fdt_fd => "fdtable", "fd";
    fdt_max_fds => "fdtable", "max_fds";
    file_path => "file", "f_path";
    file_flags => "file", "f_flags";
    file_f_op => "file", "f_op";
    fops_poll => "file_operations", "poll";
    file_private => "file", "private_data";
    file_inode => "file", "f_inode";
    inode_sb => "inode", "i_sb";
    inode_ino => "inode", "i_ino";
    sb_magic => "super_block", "s_magic";
    path_mnt => "path", "mnt";
    path_dentry => "path", "dentry";
    dentry_parent => "dentry", "d_parent";
    dentry_name => "dentry", "d_name";
    qstr_len => "qstr", "len";
    qstr_name => "qstr", "name";
    mount_mnt => "mount", "mnt";
    mount_parent => "mount", "mnt_parent";
    mount_mountpoint => "mount", "mnt_mountpoint";
    vfsmount_root => "vfsmount", "mnt_root";
    socket_sk => "socket", "sk";
    sk_family => "sock", "__sk_common.skc_family";
    sk_daddr => "sock", "__sk_common.skc_daddr";
    sk_rcv_saddr => "sock", "__sk_common.skc_rcv_saddr";
    sk_dport => "sock", "__sk_common.skc_dport";
    sk_num => "sock", "__sk_common.skc_num";
    sk_v6_daddr => "sock", "__sk_common.skc_v6_daddr";
    sk_v6_rcv_saddr => "sock", "__sk_common.skc_v6_rcv_saddr";
    sk_protocol => "sock", "sk_protocol";
    sk_state => "sock", "__sk_common.skc_state";
    tcp_bytes_acked => "tcp_sock", "bytes_acked";
    sk_type => "sock", "sk_type";
    sk_socket => "sock", "sk_socket";
    msghdr_name => "msghdr", "msg_name";
    nsproxy_net_ns => "nsproxy", "net_ns";
    net_ns_inum => "net", "ns.inum";
    task_cgroups => "task_struct", "cgroups";
    css_set_dfl_cgrp => "css_set", "dfl_cgrp";
    cgroup_kn => "cgroup", "kn";
    kn_parent => "kernfs_node", "parent|__parent";
    kn_id => "kernfs_node", "id";
}

/// Settings fixed at load time (a read-only global in the BPF object).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Wake the reader only once this many bytes are pending in the ring
    /// (derived from `batchSize`); below it records are submitted with
    /// `BPF_RB_NO_WAKEUP` and the reader's poll interval bounds latency.
    pub wakeup_bytes: u64,
    /// Field offsets of `sock:inet_sock_set_state`, from its format file.
    pub tp_sock: SockStateLayout,
    /// Rings in use (1, 2 or 4): CPU c writes to ring c % rings.
    pub rings: u32,
    pub _pad: u32,
    /// Bytes of each ring in use (a load-time constant: no helper call to ask).
    pub ring_bytes: u64,
}

/// Rings the programs can write to at most.
pub const MAX_RINGS: u32 = 4;

/// Where the fields of the `sock:inet_sock_set_state` record are.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockStateLayout {
    pub oldstate: u16,
    pub newstate: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    /// 0 when the layout could not be read (the program then does nothing).
    pub valid: u16,
    pub _pad: u16,
}

impl SockStateLayout {
    pub const UNKNOWN: Self = Self {
        oldstate: 0,
        newstate: 0,
        sport: 0,
        dport: 0,
        family: 0,
        protocol: 0,
        saddr: 0,
        daddr: 0,
        saddr_v6: 0,
        daddr_v6: 0,
        valid: 0,
        _pad: 0,
    };
}

impl Settings {
    pub const DEFAULT: Self =
        Self { wakeup_bytes: 0, tp_sock: SockStateLayout::UNKNOWN, rings: 1, _pad: 0, ring_bytes: 1 << 20 };
}

/// `FilterConfig::fields` bits: which `EventFilter` fields constrain.
pub mod filter_field {
    pub const PIDS: u32 = 1 << 0;
    pub const UIDS: u32 = 1 << 1;
    pub const COMM: u32 = 1 << 2;
    pub const EXCLUDE_COMM: u32 = 1 << 3;
    pub const CGROUPS: u32 = 1 << 4;
}

/// `FILTER_COMMS` values.
pub mod comm_match {
    pub const INCLUDE: u8 = 1;
    pub const EXCLUDE: u8 = 2;
}

/// Why the programs dropped an event before the ring, for the per-kind
/// counters in `BPFCAP_DROPS` (index `reason * kind::COUNT + kind`).
pub mod drop_reason {
    pub const FILTERED: u32 = 0;
    pub const SAMPLED: u32 = 1;
    pub const RATE_LIMITED: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// One generation of the filter. Userspace fills the inactive generation,
/// then flips `BPFCAP_FILTER_GEN`: a program sees one whole filter or the other.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterConfig {
    /// `filter_field` bits of the non-empty fields.
    pub fields: u32,
    /// 1: processes forked by a matched pid match too (tracked in `BPFCAP_TRACKED`).
    pub follow_children: u32,
    /// Bit `k` set: events of kind `k` pass (`eventTypes`).
    pub types: u64,
    /// Global token bucket: events per second (0: no limit) and bucket size.
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    /// Per kind: keep an event when a random u32 is below this (u32::MAX: keep all).
    pub sample: [u32; kind::COUNT as usize],
    /// 1 when session labels or pid trees are tracked: programs then look the
    /// current process up in `BPFCAP_TRACKED`.
    pub tracking: u32,
}

impl FilterConfig {
    /// Everything passes.
    pub const OPEN: Self = Self {
        fields: 0,
        follow_children: 1,
        types: u64::MAX,
        rate_per_sec: 0,
        rate_burst: 0,
        sample: [u32::MAX; kind::COUNT as usize],
        tracking: 0,
    };
}

/// Key of the filter's id sets (`BPFCAP_FILTER_PIDS`, `_UIDS`): generation and id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GenId {
    pub gen: u32,
    pub id: u32,
}

/// Key of `BPFCAP_FILTER_CGROUPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GenCgroup {
    pub gen: u64,
    pub id: u64,
}

/// Key of `BPFCAP_FILTER_COMMS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GenComm {
    pub gen: u32,
    pub comm: [u8; COMM_LEN],
}

/// A tracked process (`BPFCAP_TRACKED`, by tgid): the filter pid or labelled
/// process its tree descends from, and its session label id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Track {
    pub root: u32,
    pub session: u32,
    /// Set when the process has exited; it still closes its files after
    /// that, in its tree. The entry goes when the task is freed.
    pub exiting: u32,
}

/// The global token bucket's state (`BPFCAP_RATE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RateState {
    /// Tokens available, in thousandths of an event.
    pub milli_tokens: i64,
    pub last_ns: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data: repr(C), integer fields only, explicit padding.
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::ProbeSettings {}
    unsafe impl aya::Pod for super::FilterConfig {}
    unsafe impl aya::Pod for super::GenId {}
    unsafe impl aya::Pod for super::GenCgroup {}
    unsafe impl aya::Pod for super::GenComm {}
    unsafe impl aya::Pod for super::Track {}
    unsafe impl aya::Pod for super::RateState {}
}

// The layout both sides rely on, checked when compiling for the BPF target and
// for the host alike: a change that moves a field fails the build on both.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Header>() == 80);
    assert!(offset_of!(Header, ts_ns) == 8);
    assert!(offset_of!(Header, cgroup_id) == 16);
    assert!(offset_of!(Header, pid) == 24);
    assert!(offset_of!(Header, session) == 56);
    assert!(offset_of!(Header, comm) == 64);
    assert!(offset_of!(ExecRecord, filename_len) == 80);
    assert!(offset_of!(ExecRecord, data) == 88);
    assert!(size_of::<ExitRecord>() == 88);
    assert!(size_of::<ForkRecord>() == 88);
    assert!(size_of::<Offsets>() == Offsets::FIELDS.len() * 4);
    assert!(size_of::<Settings>() == 48);
    assert!(size_of::<NetRecord>() == 128);
    assert!(offset_of!(FileRecord, data) == 104);
    assert!(offset_of!(ChangeRecord, data) == 96);
    assert!(GIVEN_PATH_MAX < PATH_MAX_BYTES - NAME_CAP);
    assert!(size_of::<FilterConfig>() == (24 + 4 * kind::COUNT as usize + 4).next_multiple_of(8));
    assert!(PATH_MAX_BYTES.is_power_of_two() && NAME_CAP.is_power_of_two());
    assert!(offset_of!(ProbeRecord, data) == 152);
    assert!(PROBE_DATA_AREA.is_power_of_two() && PROBE_STRS * PROBE_STR_MAX + PROBE_DATA_MAX <= PROBE_DATA_AREA);
    // Masking tricks in the exec program need power-of-two bounds.
    assert!(FILENAME_MAX.is_power_of_two() && ARGV_MAX.is_power_of_two());
};

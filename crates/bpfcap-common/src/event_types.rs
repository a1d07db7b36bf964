//! The built-in event types, each defined once, for every layer: its kind id
//! and name, the fields it adds to the common header (Rust type, meaning;
//! the JSON key is the field's name), how its record is decoded, and the
//! probe that makes it with its attach plans, preferred first.
//!
//! `event_types!(m)` hands this table to the macro `m`, so each layer reads
//! what it needs: this crate the kind ids (`kind`), the core the payloads,
//! decoder, schema and plans (`bpfcap-core/src/types.rs`), the binding its
//! getters. The table is only tokens until a layer expands it, so it may
//! name the core's types (`String`, the decoder's layouts, the plan helpers
//! of `probes.rs`): the BPF build never expands those parts.
//!
//! Adding a type: an entry here (its kind id is the next free number; never
//! renumber), its BPF program, its test; then `python -m bpfcap.schema
//! --write` regenerates the README's schema section and the Python stubs.
//!
//! `keys` lists every field name once (the binding makes one getter each).
//! `decode(L, |r| P)`: the record is read as layout `L` (`decode.rs`:
//! `Plain<R>` for a record read whole, `NetFields`, `FileFields`,
//! `ExecFields`) and `P` is the payload.

#[macro_export]
macro_rules! event_types {
    ($then:ident) => {
        $then! {
            keys [
                filename, filename_raw, argv, argv_raw, argv_truncated, interpreter, filename_truncated, exit_code, signal, core_dumped, child_pid,
                family, saddr, sport, daddr, dport, connected, bytes, path, path_raw, path_truncated, fd, flags, mask,
                new_path, new_path_raw, new_path_truncated, dir, mode, error,
            ]

            /// A process replaced its program (execve or execveat succeeded).
            Exec = 1 PROCESS_EXEC "process_exec" {
                /// the path as given to execve
                filename: String,
                /// present only when `filename` is not UTF-8 (it has U+FFFD then): its bytes, hex
                filename_raw: IfSome<String>,
                /// arguments (2048 bytes at most)
                argv: Vec<String>,
                /// present only when an argument is not UTF-8: every argument's bytes, hex
                argv_raw: IfSome<Vec<String>>,
                /// argv was cut
                argv_truncated: bool,
                /// a script's `#!` interpreter and its argument (`["/bin/sh"]`), null for a binary; argv is the script's own
                interpreter: Option<Box<Vec<String>>>,
                /// present (true) only when the filename was cut
                filename_truncated: IfSet,
            }
            decode(ExecFields, |e| Exec {
                filename: e.filename,
                filename_raw: IfSome(e.filename_raw),
                argv: e.argv,
                argv_raw: IfSome(e.argv_raw),
                interpreter: e.interpreter,
                argv_truncated: e.argv_truncated,
                filename_truncated: IfSet(e.filename_truncated),
            })
            // (execve's entries keep the argv[0] a script's exec replaces)
            probe("sched_process_exec", [
                plan("raw_tracepoint", &[
                    a("bpfcap_exec", RawTracepoint, "sched_process_exec"),
                    opt("bpfcap_execve_etp", Tracepoint, "syscalls:sys_enter_execve"),
                    opt("bpfcap_execveat_etp", Tracepoint, "syscalls:sys_enter_execveat"),
                ]),
            ])

            /// A process (its last thread) exited.
            Exit = 2 PROCESS_EXIT "process_exit" {
                /// exit status 0-255, null when killed by a signal
                exit_code: Option<u8>,
                /// the signal that killed the process, or null
                signal: Option<u8>,
                /// a core was dumped
                core_dumped: bool,
            }
            // `exit_code` is the kernel's `(status << 8) | signal`, bit 7 the core.
            decode(Plain<ExitRecord>, |r| {
                let (code, sig) = (r.0.exit_code, (r.0.exit_code & 0x7f) as u8);
                Exit {
                    exit_code: (sig == 0).then_some(((code >> 8) & 0xff) as u8),
                    signal: (sig != 0).then_some(sig),
                    core_dumped: code & 0x80 != 0,
                }
            })
            probe("sched_process_exit", [
                plan("raw_tracepoint", &[
                    a("bpfcap_exit", RawTracepoint, "sched_process_exit"),
                    a("bpfcap_free", RawTracepoint, "sched_process_free"),
                ]),
            ])

            /// A process created a new process (fork, vfork, clone without CLONE_THREAD).
            Fork = 3 PROCESS_FORK "process_fork" {
                /// pid of the new process
                child_pid: u32,
            }
            decode(Plain<ForkRecord>, |r| Fork { child_pid: r.0.child_pid })
            probe("sched_process_fork", [
                plan("raw_tracepoint", &[a("bpfcap_fork", RawTracepoint, "sched_process_fork")]),
            ])

            /// A TCP connect was started.
            TcpConnect = 4 TCP_CONNECT "tcp_connect" {
                /// `ipv4` or `ipv6`
                family: Family,
                /// source address (null if unknown)
                saddr: Option<IpAddr>,
                /// destination address
                daddr: IpAddr,
                /// source port (null if unknown)
                sport: Option<u16>,
                /// destination port
                dport: u16,
            }
            decode(NetFields, |n| TcpConnect {
                family: n.family, saddr: n.saddr, daddr: n.daddr, sport: n.sport, dport: n.dport,
            })
            probe("tcp_connect", [
                plan("kprobe", &[a("bpfcap_tcpc_kp", Kprobe, "tcp_connect")]),
                plan("fentry", &[a("bpfcap_tcpc_fe", Fentry, "tcp_connect")]),
                plan("tracepoint", &[a("bpfcap_sockst", Tracepoint, "sock:inet_sock_set_state")]),
            ])

            /// A TCP socket was closed.
            TcpClose = 5 TCP_CLOSE "tcp_close" {
                /// `ipv4` or `ipv6`
                family: Family,
                /// source address (null if unknown)
                saddr: Option<IpAddr>,
                /// destination address
                daddr: IpAddr,
                /// source port (null if unknown)
                sport: Option<u16>,
                /// destination port
                dport: u16,
                /// the connection was established (false: its connect was refused or timed out, or it was closed while connecting)
                connected: bool,
            }
            decode(NetFields, |n| TcpClose {
                family: n.family, saddr: n.saddr, daddr: n.daddr, sport: n.sport, dport: n.dport,
                connected: n.connected,
            })
            // (the connect programs remember each connect's destination)
            probe("tcp_close", [
                plan("kprobe", &[a("bpfcap_tcpx_kp", Kprobe, "tcp_close"), a("bpfcap_tcpc_kp", Kprobe, "tcp_connect")]),
                plan("fentry", &[a("bpfcap_tcpx_fe", Fentry, "tcp_close"), a("bpfcap_tcpc_fe", Fentry, "tcp_connect")]),
                plan("tracepoint", &[a("bpfcap_sockst", Tracepoint, "sock:inet_sock_set_state")]),
            ])

            /// A UDP datagram was sent.
            UdpSend = 6 UDP_SEND "udp_send" {
                /// `ipv4` or `ipv6`
                family: Family,
                /// destination address
                daddr: IpAddr,
                /// destination port
                dport: u16,
                /// bytes the send asked for
                bytes: i64,
            }
            decode(NetFields, |n| UdpSend { family: n.family, daddr: n.daddr, dport: n.dport, bytes: n.bytes })
            probe("udp_sendmsg", [
                plan("kprobe", &[
                    a("bpfcap_udp_kp", Kprobe, "udp_sendmsg"),
                    a("bpfcap_udp_kp", Kprobe, "udpv6_sendmsg"),
                ]),
                plan("fentry", &[
                    a("bpfcap_udp_fe", Fentry, "udp_sendmsg"),
                    a("bpfcap_udp6_fe", Fentry, "udpv6_sendmsg"),
                ]),
                // (write and writev on a connected socket: the file programs)
                plan("tracepoint", &[
                    a("bpfcap_sendto", Tracepoint, "syscalls:sys_enter_sendto"),
                    a("bpfcap_sendmsg", Tracepoint, "syscalls:sys_enter_sendmsg"),
                    opt("bpfcap_sendmmsg_etp", Tracepoint, "syscalls:sys_enter_sendmmsg"),
                    opt("bpfcap_sendmmsg_xtp", Tracepoint, "syscalls:sys_exit_sendmmsg"),
                    a("bpfcap_wr_etp", Tracepoint, "syscalls:sys_enter_write"),
                    a("bpfcap_wrv_etp", Tracepoint, "syscalls:sys_enter_writev"),
                ]),
            ])

            /// A file was opened.
            FileOpen = 7 FILE_OPEN "file_open" {
                /// absolute path, or its end when `path_truncated`
                path: String,
                /// present only when `path` is not UTF-8 (it has U+FFFD then): its bytes, hex
                path_raw: IfSome<String>,
                /// the path was cut (deeper than 32 levels or longer than 2048 bytes)
                path_truncated: bool,
                /// file descriptor (null from kprobe, fentry and LSM mechanisms)
                fd: Option<i32>,
                /// the open file's `f_flags`
                flags: Option<u32>,
            }
            decode(FileFields, |f| FileOpen {
                path: f.path, path_raw: IfSome(f.path_raw), path_truncated: f.path_truncated, fd: f.fd, flags: f.flags,
            })
            probe("vfs_open", [
                plan("kprobe", with_rename_watch![a("bpfcap_open_kp", Kprobe, "vfs_open")]),
                plan("fentry", with_rename_watch![a("bpfcap_open_fe", Fentry, "vfs_open")]),
                plan("tracepoint", with_rename_watch![
                    a("bpfcap_open_tp", Tracepoint, "syscalls:sys_exit_openat"),
                    opt("bpfcap_open_tp", Tracepoint, "syscalls:sys_exit_openat2"),
                    opt("bpfcap_open_tp", Tracepoint, "syscalls:sys_exit_open"),
                    opt("bpfcap_open_tp", Tracepoint, "syscalls:sys_exit_creat"),
                ]),
            ])

            /// A file was read.
            FileRead = 8 FILE_READ "file_read" {
                /// absolute path, or its end when `path_truncated`; `pipe:[INODE]`, `socket:[INODE]` or `anon_inode:[NAME]` for what is not a file
                path: String,
                /// present only when `path` is not UTF-8 (it has U+FFFD then): its bytes, hex
                path_raw: IfSome<String>,
                /// the path was cut (deeper than 32 levels or longer than 2048 bytes)
                path_truncated: bool,
                /// file descriptor (null from kprobe, fentry and LSM mechanisms)
                fd: Option<i32>,
                /// bytes read (null if the mechanism cannot know)
                bytes: Option<i64>,
            }
            decode(FileFields, |f| FileRead {
                path: f.path, path_raw: IfSome(f.path_raw), path_truncated: f.path_truncated, fd: f.fd, bytes: f.bytes,
            })
            probe("vfs_read", [
                plan("kprobe", with_vectored![read:
                    a("bpfcap_rd_kp", Kprobe, "vfs_read"),
                    a("bpfcap_rd_krp", Kretprobe, "vfs_read"),
                ]),
                plan("fentry", with_vectored![read: a("bpfcap_rd_fx", Fexit, "vfs_read")]),
                plan("tracepoint", with_copies![
                    a("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_read"),
                    a("bpfcap_rd_xtp", Tracepoint, "syscalls:sys_exit_read"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_pread64"),
                    opt("bpfcap_rd_xtp", Tracepoint, "syscalls:sys_exit_pread64"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_readv"),
                    opt("bpfcap_rd_xtp", Tracepoint, "syscalls:sys_exit_readv"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_preadv"),
                    opt("bpfcap_rd_xtp", Tracepoint, "syscalls:sys_exit_preadv"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_preadv2"),
                    opt("bpfcap_rd_xtp", Tracepoint, "syscalls:sys_exit_preadv2"),
                ]),
            ])

            /// A file was written.
            FileWrite = 9 FILE_WRITE "file_write" {
                /// absolute path, or its end when `path_truncated`; `pipe:[INODE]`, `socket:[INODE]` or `anon_inode:[NAME]` for what is not a file
                path: String,
                /// present only when `path` is not UTF-8 (it has U+FFFD then): its bytes, hex
                path_raw: IfSome<String>,
                /// the path was cut (deeper than 32 levels or longer than 2048 bytes)
                path_truncated: bool,
                /// file descriptor (null from kprobe, fentry and LSM mechanisms)
                fd: Option<i32>,
                /// bytes written (null if the mechanism cannot know)
                bytes: Option<i64>,
            }
            decode(FileFields, |f| FileWrite {
                path: f.path, path_raw: IfSome(f.path_raw), path_truncated: f.path_truncated, fd: f.fd, bytes: f.bytes,
            })
            probe("vfs_write", [
                plan("kprobe", with_vectored![write:
                    a("bpfcap_wr_kp", Kprobe, "vfs_write"),
                    a("bpfcap_wr_krp", Kretprobe, "vfs_write"),
                ]),
                plan("fentry", with_vectored![write: a("bpfcap_wr_fx", Fexit, "vfs_write")]),
                plan("tracepoint", with_copies![
                    a("bpfcap_wr_etp", Tracepoint, "syscalls:sys_enter_write"),
                    a("bpfcap_wr_xtp", Tracepoint, "syscalls:sys_exit_write"),
                    opt("bpfcap_pwr_etp", Tracepoint, "syscalls:sys_enter_pwrite64"),
                    opt("bpfcap_wr_xtp", Tracepoint, "syscalls:sys_exit_pwrite64"),
                    opt("bpfcap_wrv_etp", Tracepoint, "syscalls:sys_enter_writev"),
                    opt("bpfcap_wr_xtp", Tracepoint, "syscalls:sys_exit_writev"),
                    opt("bpfcap_pwr_etp", Tracepoint, "syscalls:sys_enter_pwritev"),
                    opt("bpfcap_wr_xtp", Tracepoint, "syscalls:sys_exit_pwritev"),
                    opt("bpfcap_pwr_etp", Tracepoint, "syscalls:sys_enter_pwritev2"),
                    opt("bpfcap_wr_xtp", Tracepoint, "syscalls:sys_exit_pwritev2"),
                ]),
            ])

            /// The kernel checked whether a program may be executed (LSM `bprm_check_security`).
            ExecCheck = 10 EXEC_CHECK "exec_check" {
                /// the path as given to execve
                filename: String,
                /// present only when `filename` is not UTF-8 (it has U+FFFD then): its bytes, hex
                filename_raw: IfSome<String>,
            }
            decode(FileFields, |f| ExecCheck { filename: f.path, filename_raw: IfSome(f.path_raw) })
            probe("bprm_check_security", [
                plan("lsm", &[a("bpfcap_xchk_lsm", Lsm, "bprm_check_security")]),
                plan("fentry", &[a("bpfcap_xchk_fe", Fentry, "security_bprm_check")]),
                plan("kprobe", &[a("bpfcap_xchk_kp", Kprobe, "security_bprm_check")]),
                plan("raw_tracepoint", &[a("bpfcap_xchk_tp", RawTracepoint, "sched_process_exec")]),
            ])

            /// The kernel checked access to an open file (LSM `file_permission`).
            FilePermission = 11 FILE_PERMISSION "file_permission" {
                /// absolute path, or its end when `path_truncated`; `pipe:[INODE]`, `socket:[INODE]` or `anon_inode:[NAME]` for what is not a file
                path: String,
                /// present only when `path` is not UTF-8 (it has U+FFFD then): its bytes, hex
                path_raw: IfSome<String>,
                /// the path was cut (deeper than 32 levels or longer than 2048 bytes)
                path_truncated: bool,
                /// file descriptor (null from kprobe, fentry and LSM mechanisms)
                fd: Option<i32>,
                /// permission mask (`MAY_WRITE` 2, `MAY_READ` 4, ...)
                mask: Option<u32>,
            }
            decode(FileFields, |f| FilePermission {
                path: f.path, path_raw: IfSome(f.path_raw), path_truncated: f.path_truncated, fd: f.fd, mask: f.flags,
            })
            probe("file_permission", [
                plan("lsm", with_rename_watch![a("bpfcap_perm_lsm", Lsm, "file_permission")]),
                plan("fentry", with_rename_watch![a("bpfcap_perm_fe", Fentry, "security_file_permission")]),
                plan("kprobe", with_rename_watch![a("bpfcap_perm_kp", Kprobe, "security_file_permission")]),
                plan("tracepoint", with_rename_watch![
                    a("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_read"),
                    a("bpfcap_wr_etp", Tracepoint, "syscalls:sys_enter_write"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_pread64"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_readv"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_preadv"),
                    opt("bpfcap_rd_etp", Tracepoint, "syscalls:sys_enter_preadv2"),
                    opt("bpfcap_pwr_etp", Tracepoint, "syscalls:sys_enter_pwrite64"),
                    opt("bpfcap_wrv_etp", Tracepoint, "syscalls:sys_enter_writev"),
                    opt("bpfcap_pwr_etp", Tracepoint, "syscalls:sys_enter_pwritev"),
                    opt("bpfcap_pwr_etp", Tracepoint, "syscalls:sys_enter_pwritev2"),
                ]),
            ])

            /// A file or directory was deleted, or a process tried to (unlink, unlinkat, rmdir).
            FileDelete = 13 FILE_DELETE "file_delete" {
                /// absolute path (the name given, made absolute from the cwd or dirfd and normalized), or its end when `path_truncated`
                path: String,
                /// present only when `path` is not UTF-8 (it has U+FFFD then): its bytes, hex
                path_raw: IfSome<String>,
                /// the path was cut (deeper than 32 levels or longer than 2048 bytes)
                path_truncated: bool,
                /// a directory was removed (rmdir, unlinkat with `AT_REMOVEDIR`)
                dir: bool,
                /// errno when the syscall failed (nothing changed then), null when it succeeded
                error: Option<u16>,
            }
            decode(ChangeFields, |c| FileDelete {
                path: c.path, path_raw: IfSome(c.path_raw), path_truncated: c.path_truncated,
                dir: c.mode & AT_REMOVEDIR != 0, error: c.error,
            })
            // (one program at the exits: the arguments are read from the saved user registers)
            probe("file_delete", [plan("tracepoint", &[
                a("bpfcap_change_xtp", Tracepoint, "syscalls:sys_exit_unlink"),
                a("bpfcap_change_xtp", Tracepoint, "syscalls:sys_exit_unlinkat"),
                a("bpfcap_change_xtp", Tracepoint, "syscalls:sys_exit_rmdir"),
            ])])

            /// A file or directory was renamed or moved, or a process tried to (rename, renameat, renameat2).
            FileRename = 14 FILE_RENAME "file_rename" {
                /// the old absolute path, as `file_delete`'s
                path: String,
                /// present only when `path` is not UTF-8 (it has U+FFFD then): its bytes, hex
                path_raw: IfSome<String>,
                /// the old path was cut
                path_truncated: bool,
                /// the new absolute path
                new_path: String,
                /// present only when `new_path` is not UTF-8: its bytes, hex
                new_path_raw: IfSome<String>,
                /// the new path was cut
                new_path_truncated: bool,
                /// renameat2's flags (`RENAME_NOREPLACE` 1, `RENAME_EXCHANGE` 2, `RENAME_WHITEOUT` 4), else 0
                flags: u16,
                /// errno when the syscall failed (nothing changed then), null when it succeeded
                error: Option<u16>,
            }
            decode(ChangeFields, |c| FileRename {
                path: c.path, path_raw: IfSome(c.path_raw), path_truncated: c.path_truncated,
                new_path: c.path2, new_path_raw: IfSome(c.path2_raw), new_path_truncated: c.path2_truncated,
                flags: c.mode as u16, error: c.error,
            })
            probe("file_rename", [plan("tracepoint", &[
                a("bpfcap_change_xtp", Tracepoint, "syscalls:sys_exit_rename"),
                a("bpfcap_change_xtp", Tracepoint, "syscalls:sys_exit_renameat"),
                opt("bpfcap_change_xtp", Tracepoint, "syscalls:sys_exit_renameat2"),
            ])])

            /// A directory was created, or a process tried to (mkdir, mkdirat).
            FileMkdir = 15 FILE_MKDIR "file_mkdir" {
                /// the new directory's absolute path, as `file_delete`'s
                path: String,
                /// present only when `path` is not UTF-8 (it has U+FFFD then): its bytes, hex
                path_raw: IfSome<String>,
                /// the path was cut
                path_truncated: bool,
                /// the mode asked for (before the umask)
                mode: u32,
                /// errno when the syscall failed (nothing changed then), null when it succeeded
                error: Option<u16>,
            }
            decode(ChangeFields, |c| FileMkdir {
                path: c.path, path_raw: IfSome(c.path_raw), path_truncated: c.path_truncated,
                mode: c.mode, error: c.error,
            })
            probe("file_mkdir", [plan("tracepoint", &[
                a("bpfcap_change_xtp", Tracepoint, "syscalls:sys_exit_mkdir"),
                a("bpfcap_change_xtp", Tracepoint, "syscalls:sys_exit_mkdirat"),
            ])])
        }
    };
}

/// Expands the table into the kind ids (`kind`).
macro_rules! kinds {
    (
        keys $keys:tt
        $(
            $(#[doc = $doc:literal])*
            $variant:ident = $id:literal $kind:ident $name:literal $fields:tt
            decode $decode:tt probe $probe:tt
        )*
    ) => {
        /// Event kinds. The numbers are part of the public contract (`EventType`
        /// in Python, `eventTypes` in filters): never renumber.
        pub mod kind {
            $( $(#[doc = $doc])* pub const $kind: u16 = $id; )*
            /// A user-defined probe's event.
            pub const PROBE: u16 = 12;
            /// One more than the largest kind a record can have: the size of the
            /// programs' per-kind arrays and filter bits.
            pub const COUNT: u32 = {
                let mut max = PROBE;
                $( if $id > max { max = $id; } )*
                max as u32 + 1
            };
            /// Kinds from here up are made in userspace and never come in a record,
            /// so a new kernel kind (below) never collides with them.
            pub const USERSPACE: u16 = 0x100;
            /// In-band loss notice (reader side: a full ring, a slow subscriber).
            pub const LOSS: u16 = USERSPACE;
        }
    };
}

event_types!(kinds);

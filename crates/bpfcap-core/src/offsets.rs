//! Kernel struct field offsets for the BPF programs, from the running kernel's BTF.

use bpfcap_common::{Offsets, NO_OFFSET};

use crate::btf::Btf;

/// One table drives both the lookup and the report of what is missing.
macro_rules! offset_table {
    ($($field:ident => $s:literal, $path:literal;)*) => {
        /// Offsets of the fields the programs read. A field missing from this
        /// kernel stays `NO_OFFSET` and the programs leave its value 0.
        pub fn from_btf(btf: &Btf) -> Offsets {
            Offsets {
                // `a|b`: the field was renamed between kernels; the first found wins.
                $($field: $path.split('|').find_map(|p| btf.field_offset($s, p)).unwrap_or(NO_OFFSET),)*
            }
        }

        /// `struct.field` names this kernel lacks (for `doctor` and diagnostics).
        pub fn missing(o: &Offsets) -> Vec<&'static str> {
            let mut out = Vec::new();
            $(if o.$field == NO_OFFSET { out.push(concat!($s, ".", $path)); })*
            out
        }
    };
}

offset_table! {
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
    task_files => "task_struct", "files";
    files_fdt => "files_struct", "fdt";
    fdt_fd => "fdtable", "fd";
    fdt_max_fds => "fdtable", "max_fds";
    file_path => "file", "f_path";
    file_flags => "file", "f_flags";
    file_f_op => "file", "f_op";
    fops_poll => "file_operations", "poll";
    file_private => "file", "private_data";
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
    sk_type => "sock", "sk_type";
    msghdr_name => "msghdr", "msg_name";
    nsproxy_net_ns => "nsproxy", "net_ns";
    net_ns_inum => "net", "ns.inum";
    task_cgroups => "task_struct", "cgroups";
    css_set_dfl_cgrp => "css_set", "dfl_cgrp";
    cgroup_kn => "cgroup", "kn";
    kn_parent => "kernfs_node", "parent|__parent";
    kn_id => "kernfs_node", "id";
}

//! Tiny programs that do nothing, one per program type: `bpfcap doctor` loads
//! and attaches each for a moment to learn which types this kernel accepts.

use aya_ebpf::{
    macros::{fentry, kprobe, lsm, raw_tracepoint, tracepoint, uprobe},
    programs::{FEntryContext, LsmContext, ProbeContext, RawTracePointContext, TracePointContext},
};

#[kprobe]
pub fn bpfcap_t_kp(_ctx: ProbeContext) -> u32 {
    0
}

#[fentry(function = "vfs_read")]
pub fn bpfcap_t_fe(_ctx: FEntryContext) -> u32 {
    0
}

#[lsm(hook = "file_open")]
pub fn bpfcap_t_lsm(_ctx: LsmContext) -> i32 {
    0
}

#[tracepoint]
pub fn bpfcap_t_tp(_ctx: TracePointContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn bpfcap_t_rtp(_ctx: RawTracePointContext) -> i32 {
    0
}

#[uprobe]
pub fn bpfcap_t_up(_ctx: ProbeContext) -> u32 {
    0
}

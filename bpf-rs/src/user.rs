//! Generic programs for user-defined probes. Each user probe loads its own
//! instance of this object, so `PROBE` (its id, argument count, which
//! tracepoint fields to copy) is a constant the verifier sees.

use aya_ebpf::{
    helpers::generated as h,
    macros::{kprobe, kretprobe, lsm, map, raw_tracepoint, tracepoint, uprobe, uretprobe},
    maps::PerCpuArray,
    programs::{LsmContext, ProbeContext, RawTracePointContext, RetProbeContext, TracePointContext},
};
use bpfcap_common::{
    kind, ProbeRecord, ProbeSettings, PROBE_ARGS, PROBE_DATA_AREA, PROBE_DATA_MAX, PROBE_STRS, PROBE_STR_MAX,
};

use crate::common::{fill_header, output};

#[no_mangle]
static PROBE: ProbeSettings = ProbeSettings::NONE;

#[map(name = "BPFCAP_PROBE_TMP")]
static PROBE_SCRATCH: PerCpuArray<ProbeRecord> = PerCpuArray::with_max_entries(1, 0);

const DATA_OFFSET: usize = core::mem::offset_of!(ProbeRecord, data);

macro_rules! setting {
    ($f:ident) => {
        unsafe { core::ptr::read_volatile(&PROBE.$f) }
    };
}

#[inline(always)]
fn record() -> Option<&'static mut ProbeRecord> {
    let rec = unsafe { &mut *PROBE_SCRATCH.get_ptr_mut(0)? };
    fill_header(&mut rec.hdr, kind::PROBE);
    rec.probe_id = setting!(probe_id);
    rec.nargs = 0;
    rec.has_ret = 0;
    rec.args = [0; PROBE_ARGS];
    rec.ret = 0;
    rec.data_len = 0;
    rec.nstr = 0;
    rec._pad = 0;
    Some(rec)
}

#[inline(always)]
fn send(rec: &mut ProbeRecord, extra: usize) {
    let size = DATA_OFFSET + (extra & (PROBE_DATA_AREA - 1));
    rec.hdr.size = size as u32;
    output(kind::PROBE, (rec as *mut ProbeRecord).cast(), size);
}

/// Arguments from a context whose argument `i` is read by `get(i)`; only the
/// first `nargs` are read (raw tracepoints must not read past theirs).
macro_rules! read_args {
    ($rec:expr, $get:expr) => {{
        let n = setting!(nargs);
        $rec.nargs = n.min(PROBE_ARGS as u32) as u16;
        if n > 0 {
            $rec.args[0] = $get(0);
        }
        if n > 1 {
            $rec.args[1] = $get(1);
        }
        if n > 2 {
            $rec.args[2] = $get(2);
        }
        if n > 3 {
            $rec.args[3] = $get(3);
        }
        if n > 4 {
            $rec.args[4] = $get(4);
        }
        if n > 5 {
            $rec.args[5] = $get(5);
        }
    }};
}

#[kprobe]
pub fn bpfcap_u_kp(ctx: ProbeContext) -> u32 {
    if let Some(rec) = record() {
        read_args!(rec, |i| ctx.arg::<u64>(i).unwrap_or(0));
        send(rec, 0);
    }
    0
}

#[kretprobe]
pub fn bpfcap_u_krp(ctx: RetProbeContext) -> u32 {
    if let Some(rec) = record() {
        rec.has_ret = 1;
        rec.ret = ctx.ret::<i64>();
        send(rec, 0);
    }
    0
}

#[uprobe]
pub fn bpfcap_u_up(ctx: ProbeContext) -> u32 {
    if let Some(rec) = record() {
        read_args!(rec, |i| ctx.arg::<u64>(i).unwrap_or(0));
        send(rec, 0);
    }
    0
}

#[uretprobe]
pub fn bpfcap_u_urp(ctx: RetProbeContext) -> u32 {
    if let Some(rec) = record() {
        rec.has_ret = 1;
        rec.ret = ctx.ret::<i64>();
        send(rec, 0);
    }
    0
}

#[raw_tracepoint]
pub fn bpfcap_u_rtp(ctx: RawTracePointContext) -> i32 {
    if let Some(rec) = record() {
        read_args!(rec, |i| ctx.arg::<u64>(i));
        send(rec, 0);
    }
    0
}

#[lsm]
pub fn bpfcap_u_lsm(ctx: LsmContext) -> i32 {
    if let Some(rec) = record() {
        read_args!(rec, |i| ctx.arg::<u64>(i));
        send(rec, 0);
    }
    0 // observe only
}

/// Any classic tracepoint: the record's bytes, plus the strings its
/// `const char *` fields point to; userspace decodes fields from the format file.
#[tracepoint]
pub fn bpfcap_u_tp(ctx: TracePointContext) -> u32 {
    let Some(rec) = record() else { return 0 };
    let base = ctx.as_ptr() as u64;
    let nstr = setting!(nstr).min(PROBE_STRS as u32) as usize;
    let user = setting!(str_user) != 0;
    let data = rec.data.as_mut_ptr();
    for i in 0..PROBE_STRS {
        if i >= nstr {
            break;
        }
        let off = setting!(str_off)[i] as u64;
        let mut ptr: u64 = 0;
        unsafe { h::bpf_probe_read_kernel((&mut ptr as *mut u64).cast(), 8, (base + off) as *const _) };
        let dst = unsafe { data.add(i * PROBE_STR_MAX) }.cast();
        unsafe {
            if user {
                h::bpf_probe_read_user_str(dst, PROBE_STR_MAX as u32, ptr as *const _);
            } else {
                h::bpf_probe_read_kernel_str(dst, PROBE_STR_MAX as u32, ptr as *const _);
            }
        }
    }
    rec.nstr = nstr as u16;
    let size = (setting!(data_size) as usize).min(PROBE_DATA_MAX);
    let strs = nstr * PROBE_STR_MAX;
    let ret = unsafe { h::bpf_probe_read_kernel(data.add(strs).cast(), size as u32, base as *const _) };
    rec.data_len = if ret == 0 { size as u16 } else { 0 };
    send(rec, strs + rec.data_len as usize);
    0
}

use aya_ebpf::EbpfContext;

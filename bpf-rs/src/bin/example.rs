//! An example of a user's own BPF object (and a fixture of the tests): a
//! tracepoint program that writes `{magic, tgid, arg0}` to its own ring buffer.
//! Load it with `BPFProgSpec(type="tracepoint", target="syscalls:sys_enter_getppid",
//! object=".../example", program="example_getppid")`. `example_malformed` writes
//! records bpfcap must refuse (the tests check they are counted, not delivered).
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::RingBuf,
    programs::TracePointContext,
};

#[map]
static EXAMPLE_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 16, 0);

#[tracepoint]
pub fn example_getppid(_ctx: TracePointContext) -> u32 {
    let rec: [u64; 2] = [0x6578616d706c6521, bpf_get_current_pid_tgid() >> 32]; // "example!"
    let _ = EXAMPLE_EVENTS.output::<[u64; 2]>(&rec, 0);
    0
}

#[map]
static EXAMPLE_MALFORMED: RingBuf = RingBuf::with_byte_size(1 << 18, 0);

/// The `getpgid` argument that triggers `example_malformed`.
const MALFORMED_TRIGGER: u64 = 0x0bad_f00d;

/// On `getpgid(0x0badf00d)`: an empty record, one larger than bpfcap accepts
/// from a user's object (80 KiB), and a good one (`b"good!\0\0\0"`).
#[tracepoint]
pub fn example_malformed(ctx: TracePointContext) -> u32 {
    // sys_enter_* records: 8 bytes of common fields, the syscall nr, then args.
    if unsafe { ctx.read_at::<u64>(16) } != Ok(MALFORMED_TRIGGER) {
        return 0;
    }
    if let Some(r) = EXAMPLE_MALFORMED.reserve_bytes(0, 0) {
        r.submit(0);
    }
    if let Some(r) = EXAMPLE_MALFORMED.reserve_bytes(80 * 1024, 0) {
        r.submit(0); // unwritten: it holds whatever this ring held before
    }
    let _ = EXAMPLE_MALFORMED.output::<u64>(&u64::from_le_bytes(*b"good!\0\0\0"), 0);
    0
}

/// A program that does nothing: the floor a benchmark compares bpfcap against
/// on the same attach point.
#[tracepoint]
pub fn example_bare(_ctx: TracePointContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[no_mangle]
#[link_section = "license"]
pub static LICENSE: [u8; 4] = *b"GPL\0";

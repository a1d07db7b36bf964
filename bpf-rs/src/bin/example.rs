//! An example of a user's own BPF object (and a fixture of the tests): a
//! tracepoint program that writes `{magic, tgid, arg0}` to its own ring buffer.
//! Load it with `BPFProgSpec(type="tracepoint", target="syscalls:sys_enter_getppid",
//! object=".../example", program="example_getppid")`.
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

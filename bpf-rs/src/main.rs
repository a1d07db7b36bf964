//! bpfcap's BPF programs. One object serves every supported kernel: struct
//! offsets arrive as globals computed from the running kernel's BTF.
#![no_std]
#![no_main]
// Atomic add without fetch (BPF_XADD, in 5.10): core's atomics have no fetch-less form.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod change;
mod common;
mod file;
mod net;
mod path;
mod process;
mod selftest;
mod user;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[no_mangle]
#[link_section = "license"]
pub static LICENSE: [u8; 4] = *b"GPL\0";

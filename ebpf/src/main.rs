//! mcpwatch kernel programs. Each sensor lives in its own module; `maps` holds the
//! ring buffers and counters they share.
#![no_std]
#![no_main]
// Atomic add on map values (the BPF target has no compare-and-swap, see `net::add`).
#![feature(core_intrinsics)]
#![allow(internal_features)]

#[macro_use]
mod program;
mod file;
mod maps;
mod net;
mod payload;
mod process;
mod syscall;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

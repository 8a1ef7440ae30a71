//! Stage 1: the kernel side. Loads and attaches the eBPF programs, drains the ring
//! buffers and decodes raw records into typed [`SensorEvent`]s.

pub mod btf;
mod decode;
mod loader;
pub mod net_decode;
mod reader;

pub use decode::{
    decode, Channel, Direction, ExecEvent, ExitEvent, ForkEvent, PayloadEvent, SensorEvent,
    DECODE_ERROR_REASONS,
};
pub use loader::{SensorOptions, Sensors};
pub use reader::run_ring_reader;

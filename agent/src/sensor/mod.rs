//! Stage 1: the kernel side. Loads and attaches the eBPF programs, drains the ring
//! buffers and decodes raw records into typed [`SensorEvent`]s.

pub mod btf;
mod decode;
mod file_decode;
mod loader;
pub mod net_decode;
mod payload_decode;
mod process_decode;
mod reader;
pub mod record;
pub mod recording;

#[cfg(test)]
mod event_kinds_test;

pub use decode::{decode, SensorEvent};
pub use file_decode::{AccessMode, FileEvent, FileOp};
pub use loader::{SensorOptions, Sensors};
pub use payload_decode::{Channel, Direction, PayloadEvent};
pub use process_decode::{ExecEvent, ExitEvent, ForkEvent};
pub use reader::run_ring_reader;
pub use record::DECODE_ERROR_REASONS;
pub use recording::{Recorder, RecordingReader};

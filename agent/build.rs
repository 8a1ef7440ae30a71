//! Builds the kernel programs (`ebpf/`) for the BPF target and embeds the object in
//! the agent, so `target/release/mcpwatch` is the whole agent.
use anyhow::Context as _;

/// The dated nightly that builds the eBPF crate; `cargo xtask setup` installs it.
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "mcpwatch-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )
    .context("building the eBPF programs (run `cargo xtask setup` first)")
}

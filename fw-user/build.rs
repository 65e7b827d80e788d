//! Compiles the kernel programs (`fw-ebpf`) for the BPF target with nightly
//! and bpf-linker, and leaves the object in `OUT_DIR` for `include_bytes!`.
//! `cargo xtask setup` installs what this needs.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata failed")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "fw-ebpf")
        .ok_or_else(|| anyhow!("fw-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("fw-ebpf manifest has no parent directory"))?;
    aya_build::build_ebpf(
        [Package { name: ebpf.name.as_str(), root_dir: root_dir.as_str(), ..Default::default() }],
        Toolchain::default(),
    )
    .context("building the kernel programs failed; run `cargo xtask setup` to install nightly rust-src and bpf-linker")
}

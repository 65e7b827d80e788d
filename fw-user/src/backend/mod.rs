//! Ways of putting a policy into the kernel. `xdp` is the eBPF datapath
//! (XDP ingress, TC egress); `maps` is its typed view of the pinned maps,
//! `conntrack` its connection tables. `iptables` is the fallback where
//! eBPF cannot run.

pub(crate) mod batch;
pub mod conntrack;
pub mod iptables;
pub mod maps;
pub mod nflog;
mod stats;
pub mod xdp;

/// The compiled kernel programs, embedded at build time by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fw"));

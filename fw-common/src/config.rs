//! Global runtime configuration, one entry in the `FW_CONFIG` array.

/// Bumped whenever a map layout in this crate changes incompatibly, so a
/// loader never reads pinned maps written by a different layout.
pub const ABI_VERSION: u32 = 5;

/// The single element of `FW_CONFIG`.
///
/// `active_gen` selects which half of the double-buffered policy maps the
/// datapath reads. A reload writes the inactive half completely and then
/// flips this one word, so every packet sees exactly one whole policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwConfig {
    /// 0 or 1: the policy generation in force.
    pub active_gen: u32,
    /// `ABI_VERSION` of the loader that wrote the maps.
    pub abi_version: u32,
    /// Added to the kernel's monotonic clock. Always 0 in production; tests
    /// move time forward with it to exercise timeouts deterministically.
    pub clock_offset_ns: u64,
}
const _: () = assert!(size_of::<FwConfig>() == 16);

#[cfg(feature = "user")]
unsafe impl aya::Pod for FwConfig {}

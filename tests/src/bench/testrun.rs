//! (to be written)

use super::{Depth, Measurement};

/// Measure this section at `depth`.
#[must_use]
pub fn run(_depth: Depth) -> Vec<Measurement> {
    Vec::new()
}

//! (to be written): the table, JSON and SVG plot.

use super::Measurement;

/// The text table, every figure beside its ratio to its baseline.
#[must_use]
pub fn table(_m: &[Measurement]) -> String {
    String::new()
}

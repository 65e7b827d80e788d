//! `fw-user check`: validate and compile a policy, touch nothing.

use std::path::Path;

use crate::{error::Result, policy};

/// # Errors
/// The policy is invalid.
pub fn run(path: Option<&Path>) -> Result<()> {
    let (policy, name) = super::read_policy(path)?;
    // Compiling proves the policy fits the datapath's tables.
    let _ = policy::compile(&policy);
    println!(
        "{name}: ok ({} input rules, {} output rules; defaults: input {}, output {})",
        policy.input.len(),
        policy.output.len(),
        policy.defaults.input,
        policy.defaults.output
    );
    Ok(())
}

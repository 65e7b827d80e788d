//! `fw-user check`: validate and compile a policy, touch nothing.

use std::path::Path;

use crate::{error::Result, policy};

/// # Errors
/// The policy is invalid.
pub fn run(path: Option<&Path>) -> Result<()> {
    let (policy, name) = super::read_policy(path)?;
    // Compiling proves the policy fits the datapath's tables. Interfaces
    // are only checked for existence by `load`, on the host it guards.
    let names = std::cell::RefCell::new(std::collections::HashMap::new());
    let any_interface = |n: &str| {
        let mut names = names.borrow_mut();
        let next = u32::try_from(names.len()).unwrap_or(0) + 1;
        Some(*names.entry(n.to_string()).or_insert(next))
    };
    let _ = policy::compile(&policy, &name, &any_interface)?;
    println!(
        "{name}: ok ({} input, {} output, {} forward rules; defaults: input {}, output {}, forward {})",
        policy.input.len(),
        policy.output.len(),
        policy.forward.len(),
        policy.defaults.input,
        policy.defaults.output,
        policy.defaults.forward,
    );
    Ok(())
}

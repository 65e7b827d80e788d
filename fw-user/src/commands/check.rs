//! `fw-user check`: validate and compile a policy, touch nothing; judge it
//! against this host's SSH sessions (`guard`); then say whether this
//! kernel can run the eBPF datapath (`kernel`).

use std::path::Path;

use crate::{error::Result, kernel, policy};

/// # Errors
/// The policy is invalid.
pub fn run(path: Option<&Path>, cli_ifaces: &[String], force: bool) -> Result<()> {
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
    // The lockout guard judges the policy against this host's SSH
    // sessions, on the interfaces `load` would guard.
    let targets = if cli_ifaces.is_empty() {
        policy
            .interfaces
            .clone()
            .map_or_else(crate::ifaces::up_interfaces, Ok)
            .unwrap_or_default()
    } else {
        cli_ifaces.to_vec()
    };
    crate::guard::enforce(&policy, &name, &targets, force)?;
    println!("{name}: ok ({})", super::load::summary(&policy));
    // Where the policy would go on this host: not an error of the policy.
    let release = kernel::running_release();
    let how = if nix::unistd::geteuid().is_root() {
        ""
    } else {
        " (judged by its version: probing the kernel needs root)"
    };
    match kernel::check(&release) {
        Ok(()) => println!("fw: this kernel (Linux {release}) can run the eBPF datapath{how}"),
        Err(e) => println!("fw: `fw-user load` would use the iptables backend here{how}: {e}"),
    }
    Ok(())
}

//! `fw-user export`: the policy as `iptables-restore` / `ip6tables-restore`
//! input, for hosts that keep iptables or to read what fw does in
//! iptables terms.

use std::path::Path;

use crate::{
    error::Result,
    iptables::{IpFamily, export},
};

/// # Errors
/// The policy is invalid.
pub fn run(path: Option<&Path>, family: IpFamily, ifaces: &[String]) -> Result<()> {
    let (policy, _name) = super::read_policy(path)?;
    let ifaces = if ifaces.is_empty() {
        policy.interfaces.clone()
    } else {
        Some(ifaces.to_vec())
    };
    print!(
        "{}",
        export::standalone(&policy, family, &export::Target { ifaces })
    );
    Ok(())
}

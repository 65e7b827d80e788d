//! Which interfaces to guard, resolved in the caller's network namespace.

use std::collections::BTreeSet;

use nix::net::if_::{InterfaceFlags, if_nametoindex};

use crate::error::{Error, Result};

/// Every interface there is, up or not, except loopback ones: what a load
/// at boot guards, before the network is up (`load --all-interfaces`).
///
/// # Errors
/// The interface list could not be read, or it is empty.
pub fn all_interfaces() -> Result<Vec<String>> {
    let addrs =
        nix::ifaddrs::getifaddrs().map_err(|e| Error::io("cannot list interfaces", e.into()))?;
    let names: BTreeSet<String> = addrs
        .filter(|a| !a.flags.contains(InterfaceFlags::IFF_LOOPBACK))
        .map(|a| a.interface_name)
        .collect();
    if names.is_empty() {
        return Err(Error::NoInterfaces);
    }
    Ok(names.into_iter().collect())
}

/// Every interface that is up, except loopback ones.
///
/// # Errors
/// The interface list could not be read, or it is empty.
pub fn up_interfaces() -> Result<Vec<String>> {
    let addrs =
        nix::ifaddrs::getifaddrs().map_err(|e| Error::io("cannot list interfaces", e.into()))?;
    let names: BTreeSet<String> = addrs
        .filter(|a| {
            a.flags.contains(InterfaceFlags::IFF_UP)
                && !a.flags.contains(InterfaceFlags::IFF_LOOPBACK)
        })
        .map(|a| a.interface_name)
        .collect();
    if names.is_empty() {
        return Err(Error::NoInterfaces);
    }
    Ok(names.into_iter().collect())
}

/// Check that every named interface exists and is not loopback.
///
/// # Errors
/// The first interface that is missing or is `lo`.
pub fn validate(names: &[String]) -> Result<()> {
    for name in names {
        if name == "lo" {
            return Err(Error::LoopbackInterface);
        }
        if if_nametoindex(name.as_str()).is_err() {
            return Err(Error::NoSuchInterface(name.clone()));
        }
    }
    Ok(())
}

#[must_use]
pub fn exists(name: &str) -> bool {
    if_nametoindex(name).is_ok()
}

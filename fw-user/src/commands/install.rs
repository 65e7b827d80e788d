//! `fw-user install` / `uninstall`: the systemd unit that loads the saved
//! policy at boot, early, before the network is up (netfilter-persistent's
//! place in the boot).
//!
//! Ordering: `DefaultDependencies=no` and `Before=network-pre.target`
//! (which `Wants` it, so network managers wait for it) put the load before
//! any interface is configured; it runs after local file systems are
//! mounted (the policy and fw-user must be readable) and after
//! `systemd-udev-settle.service`: most NIC drivers are modules that udev
//! loads on coldplug, and udev gives interfaces their final names, so
//! before it settles a server's NICs may not exist yet, or not under the
//! names a policy's `interfaces` uses. (systemd calls settle deprecated
//! because hardware that appears late is not waited for; for NICs present
//! at boot it is the one "all of them are here" point before the network.)
//! Interfaces exist by then but are down, so the unit loads with
//! `--all-interfaces`: every interface but lo, up or not (a policy's
//! `interfaces` still wins). It runs `fw-user boot`, which loads the
//! built-in safe policy if the saved one is missing or invalid (see
//! `boot`). Stopping the unit does not unload the firewall (fail-static:
//! it is pinned); `systemctl reload fw` loads the file again as `fw-user
//! load` does, lockout guard included, and keeps the running policy if the
//! file is invalid.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::error::{Error, Result};

/// Where the unit goes, under the install root.
pub const UNIT_PATH: &str = "etc/systemd/system/fw.service";

/// The unit text that loads `policy` with the `fw-user` at `binary`.
#[must_use]
pub fn unit_text(binary: &Path, policy: &Path) -> String {
    let (binary, policy) = (binary.display(), policy.display());
    format!(
        "# Written by `fw-user install`; `fw-user uninstall` removes it.
[Unit]
Description=fw stateful host firewall (loads {policy})
Documentation=https://github.com/fw/fw/blob/main/docs/operations.md
DefaultDependencies=no
Wants=network-pre.target systemd-udev-settle.service
After=local-fs.target systemd-modules-load.service systemd-udev-settle.service
Before=network-pre.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={binary} boot {policy}
ExecReload={binary} load {policy} --detach --all-interfaces

[Install]
WantedBy=sysinit.target
"
    )
}

fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> Result<()> {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| Error::io("cannot run systemctl", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::io(
            format!("systemctl {} failed", args.join(" ")),
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        ))
    }
}

/// # Errors
/// The policy is missing or invalid, or the unit cannot be written or
/// enabled.
pub fn install(policy: &Path, root: &Path, no_enable: bool) -> Result<()> {
    let policy: PathBuf = std::path::absolute(policy)
        .map_err(|e| Error::io(format!("cannot resolve `{}`", policy.display()), e))?;
    let on_disk = root.join(policy.strip_prefix("/").unwrap_or(&policy));
    // A unit that fails at every boot protects nothing: the policy must be
    // there and valid now.
    let text = fs::read_to_string(&on_disk).map_err(|source| Error::ReadPolicy {
        path: on_disk.clone(),
        source,
    })?;
    crate::policy::parse_file(&text, &on_disk)?;
    let binary =
        std::env::current_exe().map_err(|e| Error::io("cannot find the fw-user binary", e))?;
    let unit = root.join(UNIT_PATH);
    if let Some(dir) = unit.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create `{}`", dir.display()), e))?;
    }
    crate::state::write_atomic_readable(&unit, unit_text(&binary, &policy).as_bytes())?;
    println!("fw: wrote {}", unit.display());
    if no_enable || root != Path::new("/") {
        println!("fw: not enabled (`systemctl enable fw.service` enables it)");
        return Ok(());
    }
    if !systemd_runs() {
        println!("fw: systemd does not run here: the unit is written but not enabled");
        return Ok(());
    }
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", "fw.service"])?;
    println!(
        "fw: enabled fw.service: {} is loaded at every boot, before the network is up",
        policy.display()
    );
    Ok(())
}

/// # Errors
/// The unit cannot be disabled or removed.
pub fn uninstall(root: &Path) -> Result<()> {
    let unit = root.join(UNIT_PATH);
    if root == Path::new("/") && systemd_runs() && unit.exists() {
        systemctl(&["disable", "fw.service"])?;
    }
    match fs::remove_file(&unit) {
        Ok(()) => println!(
            "fw: removed {}; the running firewall stays (`fw-user unload` removes it)",
            unit.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("fw: {} is not installed", unit.display());
        }
        Err(e) => return Err(Error::io(format!("cannot remove `{}`", unit.display()), e)),
    }
    if root == Path::new("/") && systemd_runs() {
        systemctl(&["daemon-reload"])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_loads_early_and_keeps_the_firewall_on_stop() {
        let t = unit_text(
            Path::new("/usr/sbin/fw-user"),
            Path::new("/etc/fw/policy.toml"),
        );
        for line in [
            "DefaultDependencies=no",
            "Wants=network-pre.target systemd-udev-settle.service",
            "After=local-fs.target systemd-modules-load.service systemd-udev-settle.service",
            "Before=network-pre.target shutdown.target",
            "Conflicts=shutdown.target",
            "Type=oneshot",
            "RemainAfterExit=yes",
            "ExecStart=/usr/sbin/fw-user boot /etc/fw/policy.toml",
            "ExecReload=/usr/sbin/fw-user load /etc/fw/policy.toml --detach --all-interfaces",
            "WantedBy=sysinit.target",
        ] {
            assert!(t.lines().any(|l| l == line), "{line:?} missing:\n{t}");
        }
        assert!(
            !t.contains("ExecStop"),
            "stopping must not unload (fail-static)"
        );
        assert!(
            !t.contains("Condition"),
            "a missing policy loads the built-in one, it does not skip the unit"
        );
    }

    #[test]
    fn systemd_analyze_accepts_the_unit() {
        let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
            eprintln!("skipped: no systemd-analyze");
            return;
        };
        assert!(probe.status.success());
        let root = std::env::temp_dir().join(format!("fw-unit-{}", std::process::id()));
        let policy = root.join("etc/fw/policy.toml");
        fs::create_dir_all(policy.parent().unwrap()).unwrap();
        fs::write(&policy, crate::policy::DEFAULT_POLICY).unwrap();
        let unit = root.join("fw.service");
        let binary = std::env::current_exe().unwrap();
        fs::write(&unit, unit_text(&binary, &policy)).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .unwrap();
        let _ = fs::remove_dir_all(&root);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("fw.service"),
            "systemd-analyze finds fault with the unit:\n{err}"
        );
    }
}

//! Where a firewall lives on the BPF filesystem, and making sure that
//! filesystem is there.
//!
//! Layout under the pin path (default `/sys/fs/bpf/fw`):
//! `maps/<MAP>`, `progs/<program>`, `links/<ifname>/{xdp-native|xdp-generic,
//! tc-tcx|tc-netlink}`. Links are pinned so the firewall outlives `fw-user`.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const BPFFS_ROOT: &str = "/sys/fs/bpf";

#[derive(Clone, Debug)]
pub struct PinLayout {
    pub root: PathBuf,
}

impl PinLayout {
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    #[must_use]
    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    #[must_use]
    pub fn progs_dir(&self) -> PathBuf {
        self.root.join("progs")
    }

    #[must_use]
    pub fn prog(&self, name: &str) -> PathBuf {
        self.progs_dir().join(name)
    }

    #[must_use]
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    #[must_use]
    pub fn iface_dir(&self, iface: &str) -> PathBuf {
        self.links_dir().join(iface)
    }

    /// The pin path as one file name (`/sys/fs/bpf/fw` ->
    /// `_sys_fs_bpf_fw`): what names this firewall's files outside bpffs
    /// (the iptables backend's state, the state directory).
    #[must_use]
    pub fn file_name(&self) -> String {
        self.root
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    }

    /// Is a firewall installed here?
    #[must_use]
    pub fn is_installed(&self) -> bool {
        self.maps_dir().join(fw_common::maps::CONFIG).exists()
    }
}

/// The pin path when none is given: `/sys/fs/bpf/fw-<name>` inside a named
/// network namespace (`ip netns`), `/sys/fs/bpf/fw` otherwise, so firewalls
/// of different namespaces never share pins.
#[must_use]
pub fn default_pin_path() -> PathBuf {
    let own = fs::metadata("/proc/self/ns/net").map(|m| m.ino()).ok();
    let name = own.and_then(|ino| {
        fs::read_dir("/run/netns").ok().and_then(|dir| {
            dir.flatten()
                .find(|e| fs::metadata(e.path()).is_ok_and(|m| m.ino() == ino))
                .map(|e| e.file_name().to_string_lossy().into_owned())
        })
    });
    match name {
        Some(name) => Path::new(BPFFS_ROOT).join(format!("fw-{name}")),
        None => Path::new(BPFFS_ROOT).join("fw"),
    }
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// The nearest existing ancestor of `path` (itself if it exists).
fn existing_ancestor(path: &Path) -> &Path {
    let mut p = path;
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    p
}

fn parent_pid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 4, after the parenthesised command name (which may hold spaces).
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The nearest ancestor process living in another mount namespace.
fn ancestor_in_other_mount_ns() -> Option<u32> {
    let own = fs::read_link("/proc/self/ns/mnt").ok()?;
    let mut pid = parent_pid(std::process::id())?;
    while pid > 1 {
        match fs::read_link(format!("/proc/{pid}/ns/mnt")) {
            Ok(ns) if ns != own => return Some(pid),
            Ok(_) => pid = parent_pid(pid)?,
            Err(_) => return None,
        }
    }
    None
}

/// Make the pins under `pin_root` those of the host, not of a throwaway
/// mount namespace.
///
/// `ip netns exec` runs each command in a private mount namespace with its
/// own `/sys`, where no bpffs is mounted; one mounted there would vanish
/// with the command, unpinning (and so detaching) the firewall. When the
/// pin path is not on a bpffs here, fw-user joins the mount namespace of
/// the nearest ancestor process that has another one (the shell that ran
/// `ip netns exec`). Only the mount namespace changes: interfaces are still
/// those of the network namespace the command runs in. Must run before any
/// thread is started.
///
/// Returns a note for the user when it did something.
///
/// # Errors
/// Joining the namespace failed.
pub fn use_host_bpffs(pin_root: &Path) -> Result<Option<String>> {
    if is_bpffs(existing_ancestor(pin_root)) || !pin_root.starts_with(BPFFS_ROOT) {
        return Ok(None);
    }
    let Some(pid) = ancestor_in_other_mount_ns() else {
        return Ok(None);
    };
    // Joining a mount namespace moves the working directory to its root;
    // come back to the same path so relative policy paths still resolve.
    let cwd = std::env::current_dir().ok();
    let ns = fs::File::open(format!("/proc/{pid}/ns/mnt")).map_err(|e| {
        Error::io(
            format!("cannot open the mount namespace of process {pid}"),
            e,
        )
    })?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| {
        if e == nix::errno::Errno::EPERM {
            Error::Privileges {
                action: "use the host's BPF filesystem",
            }
        } else {
            Error::io(
                format!("cannot join the mount namespace of process {pid}"),
                e.into(),
            )
        }
    })?;
    if let Some(cwd) = cwd {
        let _ = std::env::set_current_dir(cwd);
    }
    Ok(Some(format!(
        "using the BPF filesystem of the parent mount namespace (process {pid}): this command has a private /sys, and pins there would vanish with it"
    )))
}

/// Make sure `pin_root` is on a bpffs, mounting one at /sys/fs/bpf if that
/// is where it should be. Returns a note for the user when it mounted.
///
/// # Errors
/// The path is elsewhere and not on bpffs, or mounting failed.
pub fn ensure_bpffs(pin_root: &Path) -> Result<Option<String>> {
    if is_bpffs(existing_ancestor(pin_root)) {
        return Ok(None);
    }
    let root = Path::new(BPFFS_ROOT);
    if !pin_root.starts_with(root) {
        return Err(Error::NotBpffs {
            path: pin_root.to_path_buf(),
        });
    }
    fs::create_dir_all(root).map_err(|e| Error::io(format!("cannot create `{BPFFS_ROOT}`"), e))?;
    nix::mount::mount(
        Some("bpf"),
        root,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| {
        if e == nix::errno::Errno::EPERM {
            Error::Privileges {
                action: "mount the BPF filesystem",
            }
        } else {
            Error::io(format!("cannot mount bpffs on `{BPFFS_ROOT}`"), e.into())
        }
    })?;
    Ok(Some(format!("mounted bpffs on {BPFFS_ROOT}")))
}

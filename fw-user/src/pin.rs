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
    process::Command,
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

    /// Is a firewall installed here?
    #[must_use]
    pub fn is_installed(&self) -> bool {
        self.maps_dir().join(fw_common::maps::CONFIG).exists()
    }
}

/// The pin path when none is given: `/sys/fs/bpf/fw` in the host's network
/// namespace, `/sys/fs/bpf/fw-<netns>` in any other, so firewalls of
/// different namespaces never share pins.
#[must_use]
pub fn default_pin_path() -> PathBuf {
    let own = fs::metadata("/proc/self/ns/net").map(|m| m.ino()).ok();
    let init = fs::metadata("/proc/1/ns/net").map(|m| m.ino()).ok();
    match own {
        Some(ino) if own != init => {
            // `ip netns` names live in /run/netns; fall back to the inode.
            let name = fs::read_dir("/run/netns").ok().and_then(|dir| {
                dir.flatten()
                    .find(|e| fs::metadata(e.path()).is_ok_and(|m| m.ino() == ino))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
            });
            Path::new(BPFFS_ROOT).join(format!(
                "fw-{}",
                name.unwrap_or_else(|| format!("netns-{ino}"))
            ))
        }
        _ => Path::new(BPFFS_ROOT).join("fw"),
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

/// Make sure `pin_root` is on a bpffs, mounting one at /sys/fs/bpf if that
/// is where it should be. Returns a note for the user when it mounted.
///
/// `ip netns exec` gives each command a private /sys, so a bpffs mounted
/// there would vanish (with our pins, detaching the firewall) when the
/// command exits. In that case the host's bpffs is bind-mounted instead, so
/// the pins live as long as the host's.
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
    let host_bpffs = Path::new("/proc/1/root/sys/fs/bpf");
    let private_mount_ns =
        fs::read_link("/proc/self/ns/mnt").ok() != fs::read_link("/proc/1/ns/mnt").ok();
    if private_mount_ns {
        if !is_bpffs(host_bpffs) {
            // Mount the host's bpffs first, in the host's mount namespace.
            let status = Command::new("nsenter")
                .args([
                    "--mount=/proc/1/ns/mnt",
                    "mount",
                    "-t",
                    "bpf",
                    "bpf",
                    BPFFS_ROOT,
                ])
                .status()
                .map_err(|e| Error::io("cannot run `nsenter` to mount the host's bpffs", e))?;
            if !status.success() || !is_bpffs(host_bpffs) {
                return Err(Error::NotBpffs {
                    path: root.to_path_buf(),
                });
            }
        }
        nix::mount::mount(
            Some(host_bpffs),
            root,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            Error::io(
                format!("cannot bind-mount the host's bpffs on `{BPFFS_ROOT}`"),
                e.into(),
            )
        })?;
        return Ok(Some(format!(
            "bind-mounted the host's bpffs on {BPFFS_ROOT} (this mount namespace had none)"
        )));
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

//! What fw keeps on disk about the firewall at a pin path: the policy
//! running now, the one before it, and a load awaiting confirmation.
//!
//! The kernel holds the compiled policy, not its source. To roll back, to
//! `save` the running policy for the next boot or to show what runs, fw
//! needs the source as it was loaded, with the set files it read then (a
//! blocklist file may have changed since). Each successful load therefore
//! leaves a *snapshot*:
//!
//! ```text
//! /var/lib/fw/<pin path, mangled>/
//!   lock                  flock: one load, confirm or rollback at a time
//!   running/              the policy in force
//!     meta.json           name, source path, interfaces, backend, hash
//!     files/<abs path>    the policy file and its relative set files,
//!                         at their original absolute paths, so relative
//!                         `file =` references resolve inside the snapshot
//!   previous/             the policy before it
//!   rollback/             what a `--confirm` load restores (see `confirm`)
//!   pending.json          the unconfirmed load and its watchdog
//!   watchdog.log          what the watchdog did
//! ```
//!
//! `FW_STATE_DIR` moves the base directory (tests, read-only `/var`).

use std::{
    fs,
    io::{self, Write as _},
    path::{Component, Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    pin::PinLayout,
};

const DEFAULT_BASE: &str = "/var/lib/fw";

/// The state directory of one firewall (one pin path).
#[derive(Clone, Debug)]
pub struct StateDir {
    pub root: PathBuf,
}

/// What a snapshot says about the load that made it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// The name messages used for the policy (its path as given, or the
    /// built-in policy's name).
    pub name: String,
    /// Absolute path of the policy file; `None`: the built-in policy.
    pub source: Option<PathBuf>,
    /// `--iface` of the load; `None`: the policy's `interfaces` or every
    /// interface that is up.
    pub ifaces: Option<Vec<String>>,
    /// `xdp` or `iptables`: where the policy went.
    pub backend: String,
    /// `Policy::hash`.
    pub hash: u64,
    /// Unix seconds of the load.
    pub loaded_at: u64,
}

/// A stored policy: its metadata and where its text is.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub dir: PathBuf,
    pub meta: Meta,
}

impl Snapshot {
    /// The stored policy file: parse it with `parse_file` so its relative
    /// set files are the stored copies.
    #[must_use]
    pub fn policy_path(&self) -> PathBuf {
        self.dir.join("files").join(mirror(&self.source_path()))
    }

    /// The policy's original path (for the built-in policy, a name under
    /// the snapshot that no set file can refer to).
    fn source_path(&self) -> PathBuf {
        self.meta
            .source
            .clone()
            .unwrap_or_else(|| PathBuf::from("/builtin/policy.toml"))
    }

    /// The policy text.
    ///
    /// # Errors
    /// The snapshot is damaged.
    pub fn text(&self) -> Result<String> {
        let path = self.policy_path();
        fs::read_to_string(&path).map_err(|e| {
            Error::io(
                format!(
                    "cannot read the stored policy `{}` (hint: the state under `{}` is damaged; load a policy file again)",
                    path.display(),
                    self.dir.display()
                ),
                e,
            )
        })
    }

    /// The set files it read, by their original absolute paths (the
    /// stored copies' paths inside the snapshot are `files/` + that path).
    ///
    /// # Errors
    /// The snapshot cannot be read.
    pub fn set_files(&self) -> Result<Vec<PathBuf>> {
        let text = self.text()?;
        Ok(relative_set_files(&text)
            .into_iter()
            .filter_map(|f| {
                let dir = self.source_path().parent()?.to_path_buf();
                Some(normalize(&dir.join(f)))
            })
            .collect())
    }
}

/// A policy about to be loaded, for `StateDir::stage`.
pub struct NewSnapshot<'a> {
    pub text: &'a str,
    pub name: &'a str,
    /// The policy file as given on the command line; `None`: built-in.
    pub source: Option<&'a Path>,
    /// Where its relative set files are read now: beside `source`, or
    /// inside the snapshot a rollback restores.
    pub read_from: Option<&'a Path>,
    pub ifaces: Option<&'a [String]>,
    pub backend: &'a str,
    pub hash: u64,
}

/// An unconfirmed load: what the watchdog restores, and when.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    /// Tells this load's watchdog from an earlier one's.
    pub token: u64,
    /// `now_ms()` (boot-time clock) after which the watchdog rolls back.
    pub deadline_ms: u64,
    /// The watchdog process (0 until it is started).
    pub watchdog_pid: i32,
    /// The policy that awaits confirmation.
    pub policy_name: String,
    /// `true`: nothing ran before, so rolling back unloads the firewall;
    /// `false`: it reloads `rollback/`.
    pub unload: bool,
}

/// A held `lock` (released on drop).
pub struct Lock {
    _flock: nix::fcntl::Flock<fs::File>,
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> Error {
    move |e| Error::io(what, e)
}

/// `path` under `files/`: absolute paths lose their root.
fn mirror(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// `path` without `.` and `..` (lexically: the state mirrors what the
/// parser would open, which joins the same way).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The `file =` values of `[sets]` that are relative paths (absolute ones
/// are read where they are, at every load).
#[must_use]
pub fn relative_set_files(text: &str) -> Vec<String> {
    let Ok(value) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let Some(sets) = value.get("sets").and_then(toml::Value::as_table) else {
        return Vec::new();
    };
    sets.values()
        .filter_map(|v| v.get("file")?.as_str())
        .filter(|f| Path::new(f).is_relative())
        .map(str::to_string)
        .collect()
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds on `CLOCK_BOOTTIME`: the clock of `--confirm` deadlines.
/// It is shared by every process and never steps, where the wall clock
/// may jump (NTP at boot, an operator's `date -s`, a VM resumed) and fire
/// a rollback early or never.
#[must_use]
pub fn now_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1000
            + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000_000
    })
}

/// Write `bytes` to `path` through a temporary file and a rename, so a
/// crash leaves the old content or the new, never half of it.
///
/// # Errors
/// The directory is not writable.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let what = || format!("cannot write `{}`", path.display());
    let mut f = fs::File::create(&tmp).map_err(io_err(what()))?;
    f.write_all(bytes).map_err(io_err(what()))?;
    f.sync_all().map_err(io_err(what()))?;
    fs::rename(&tmp, path).map_err(io_err(what()))
}

/// `write_atomic` for a file every user may read (mode 0644, whatever the
/// umask): a saved policy and a systemd unit, like the rest of `/etc`.
///
/// # Errors
/// The directory is not writable.
pub fn write_atomic_readable(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = path.with_extension("tmp");
    let what = || format!("cannot write `{}`", path.display());
    let mut f = fs::File::create(&tmp).map_err(io_err(what()))?;
    f.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(io_err(what()))?;
    f.write_all(bytes).map_err(io_err(what()))?;
    f.sync_all().map_err(io_err(what()))?;
    fs::rename(&tmp, path).map_err(io_err(what()))
}

fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn remove_dir(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Write the metadata last: a snapshot without it does not exist.
fn finish_stage(snap: Snapshot) -> Result<Snapshot> {
    let meta = serde_json::to_vec_pretty(&snap.meta)
        .map_err(|e| Error::io("cannot encode the state's metadata", io::Error::other(e)))?;
    write_atomic(&snap.dir.join("meta.json"), &meta)?;
    Ok(snap)
}

impl StateDir {
    /// The state directory of the firewall pinned at `layout`.
    #[must_use]
    pub fn for_layout(layout: &PinLayout) -> Self {
        let base = std::env::var_os("FW_STATE_DIR")
            .map_or_else(|| PathBuf::from(DEFAULT_BASE), PathBuf::from);
        Self {
            root: base.join(layout.file_name()),
        }
    }

    fn create(&self) -> Result<()> {
        fs::create_dir_all(&self.root).map_err(io_err(format!(
            "cannot create the state directory `{}` (hint: fw-user needs root; FW_STATE_DIR moves it)",
            self.root.display()
        )))
    }

    /// Hold the state lock until the returned guard drops: loads, confirms
    /// and rollbacks (the watchdog's too) never interleave.
    ///
    /// # Errors
    /// The state directory cannot be created or locked.
    pub fn lock(&self) -> Result<Lock> {
        self.create()?;
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("cannot open `{}`", path.display())))?;
        let flock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io(format!("cannot lock `{}`", path.display()), e.into()))?;
        Ok(Lock { _flock: flock })
    }

    fn snapshot(&self, which: &str) -> Result<Option<Snapshot>> {
        let dir = self.root.join(which);
        let meta_path = dir.join("meta.json");
        let text = match fs::read_to_string(&meta_path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::io(
                    format!("cannot read `{}`", meta_path.display()),
                    e,
                ));
            }
        };
        let meta = serde_json::from_str(&text).map_err(|e| {
            Error::io(
                format!(
                    "`{}` is damaged (hint: remove `{}`; load a policy file again)",
                    meta_path.display(),
                    dir.display()
                ),
                io::Error::other(e),
            )
        })?;
        Ok(Some(Snapshot { dir, meta }))
    }

    /// The policy in force, as last loaded.
    ///
    /// # Errors
    /// The state is unreadable.
    pub fn running(&self) -> Result<Option<Snapshot>> {
        self.snapshot("running")
    }

    /// The policy before the running one.
    ///
    /// # Errors
    /// The state is unreadable.
    pub fn previous(&self) -> Result<Option<Snapshot>> {
        self.snapshot("previous")
    }

    /// What an unconfirmed load restores.
    ///
    /// # Errors
    /// The state is unreadable.
    pub fn rollback_target(&self) -> Result<Option<Snapshot>> {
        self.snapshot("rollback")
    }

    /// Store `new` as `staged/`, ready for `commit` once the load
    /// succeeded. Set files are copied now: they are what this load reads.
    ///
    /// # Errors
    /// The state directory is not writable or a set file is unreadable.
    pub fn stage(&self, new: &NewSnapshot<'_>) -> Result<Snapshot> {
        self.create()?;
        let dir = self.root.join("staged");
        remove_dir(&dir).map_err(io_err(format!("cannot clear `{}`", dir.display())))?;
        let source = match new.source {
            Some(p) => Some(normalize(
                &std::path::absolute(p)
                    .map_err(io_err(format!("cannot resolve `{}`", p.display())))?,
            )),
            None => None,
        };
        let snap = Snapshot {
            dir: dir.clone(),
            meta: Meta {
                name: new.name.to_string(),
                source,
                ifaces: new.ifaces.map(<[String]>::to_vec),
                backend: new.backend.to_string(),
                hash: new.hash,
                loaded_at: now_unix(),
            },
        };
        let policy_path = snap.policy_path();
        let write = |path: &Path, bytes: &[u8]| -> Result<()> {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .map_err(io_err(format!("cannot create `{}`", parent.display())))?;
            }
            fs::write(path, bytes).map_err(io_err(format!("cannot write `{}`", path.display())))
        };
        write(&policy_path, new.text.as_bytes())?;
        let (Some(original_dir), Some(read_dir)) = (
            snap.source_path().parent().map(Path::to_path_buf),
            new.read_from.and_then(Path::parent),
        ) else {
            return finish_stage(snap);
        };
        for file in relative_set_files(new.text) {
            // The load itself reports an unreadable set file, with its line.
            if let Ok(bytes) = fs::read(read_dir.join(&file)) {
                let original = normalize(&original_dir.join(&file));
                write(&snap.dir.join("files").join(mirror(&original)), &bytes)?;
            }
        }
        finish_stage(snap)
    }

    /// The staged load is in force: it becomes `running/`, the old running
    /// policy `previous/`.
    ///
    /// # Errors
    /// The state directory is not writable.
    pub fn commit(&self) -> Result<()> {
        let (staged, running, previous) = (
            self.root.join("staged"),
            self.root.join("running"),
            self.root.join("previous"),
        );
        if running.exists() {
            remove_dir(&previous)
                .map_err(io_err(format!("cannot clear `{}`", previous.display())))?;
            fs::rename(&running, &previous)
                .map_err(io_err(format!("cannot move `{}`", running.display())))?;
        }
        fs::rename(&staged, &running).map_err(io_err(format!("cannot move `{}`", staged.display())))
    }

    /// Forget a staged load that failed.
    pub fn discard_staged(&self) {
        let _ = remove_dir(&self.root.join("staged"));
    }

    /// The firewall was unloaded: nothing runs, and what ran becomes the
    /// previous policy (`fw-user rollback` brings it back).
    ///
    /// # Errors
    /// The state directory is not writable.
    pub fn record_unload(&self) -> Result<()> {
        let (running, previous) = (self.root.join("running"), self.root.join("previous"));
        if running.exists() {
            remove_dir(&previous)
                .map_err(io_err(format!("cannot clear `{}`", previous.display())))?;
            fs::rename(&running, &previous)
                .map_err(io_err(format!("cannot move `{}`", running.display())))?;
        }
        Ok(())
    }

    /// Keep a copy of the running policy as `rollback/`, what an
    /// unconfirmed load restores.
    ///
    /// # Errors
    /// The copy failed.
    pub fn keep_for_rollback(&self) -> Result<()> {
        let (running, rollback) = (self.root.join("running"), self.root.join("rollback"));
        remove_dir(&rollback).map_err(io_err(format!("cannot clear `{}`", rollback.display())))?;
        copy_dir(&running, &rollback).map_err(io_err(format!(
            "cannot copy `{}` to `{}`",
            running.display(),
            rollback.display()
        )))
    }

    /// The unconfirmed load, if any.
    ///
    /// # Errors
    /// `pending.json` is unreadable.
    pub fn pending(&self) -> Result<Option<Pending>> {
        let path = self.root.join("pending.json");
        match fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
                Error::io(
                    format!(
                        "`{}` is damaged (hint: `fw-user rollback` restores the previous policy; or remove the file)",
                        path.display()
                    ),
                    io::Error::other(e),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("cannot read `{}`", path.display()), e)),
        }
    }

    /// Record (or update) the unconfirmed load.
    ///
    /// # Errors
    /// The state directory is not writable.
    pub fn set_pending(&self, pending: &Pending) -> Result<()> {
        self.create()?;
        let bytes = serde_json::to_vec_pretty(pending)
            .map_err(|e| Error::io("cannot encode `pending.json`", io::Error::other(e)))?;
        write_atomic(&self.root.join("pending.json"), &bytes)
    }

    /// The load was confirmed or rolled back: nothing awaits.
    pub fn clear_pending(&self) {
        let _ = fs::remove_file(self.root.join("pending.json"));
        let _ = remove_dir(&self.root.join("rollback"));
    }

    /// Where the watchdog writes what it did.
    #[must_use]
    pub fn watchdog_log(&self) -> PathBuf {
        self.root.join("watchdog.log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DEFAULT_POLICY_NAME;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fw-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_snapshot_keeps_the_policy_and_its_relative_set_files() {
        let work = scratch("snap");
        let src_dir = work.join("etc/policies");
        fs::create_dir_all(src_dir.join("lists")).unwrap();
        fs::write(src_dir.join("lists/bad.txt"), "192.0.2.0/24\n").unwrap();
        fs::write(work.join("etc/shared.txt"), "198.51.100.7\n").unwrap();
        let text =
            "[sets]\nbad = { file = \"lists/bad.txt\" }\nshared = { file = \"../shared.txt\" }\n";
        let policy = src_dir.join("p.toml");
        fs::write(&policy, text).unwrap();
        let state = StateDir {
            root: work.join("state"),
        };
        let snap = state
            .stage(&NewSnapshot {
                text,
                name: "p.toml",
                source: Some(&policy),
                read_from: Some(&policy),
                ifaces: None,
                backend: "xdp",
                hash: 7,
            })
            .unwrap();
        state.commit().unwrap();
        // The originals change; the snapshot does not.
        fs::write(src_dir.join("lists/bad.txt"), "203.0.113.0/24\n").unwrap();
        let running = state.running().unwrap().unwrap();
        assert_eq!(running.meta.hash, 7);
        assert_eq!(running.text().unwrap(), text);
        let parsed = crate::policy::parse_file(text, &running.policy_path()).unwrap();
        assert_eq!(parsed.sets["bad"][0].to_string(), "192.0.2.0/24");
        assert_eq!(parsed.sets["shared"][0].to_string(), "198.51.100.7/32");
        assert_eq!(snap.meta.source.as_deref(), Some(policy.as_path()));
        assert_eq!(
            running.set_files().unwrap(),
            [src_dir.join("lists/bad.txt"), work.join("etc/shared.txt")]
        );
        let _ = fs::remove_dir_all(&work);
    }

    #[test]
    fn commit_moves_running_to_previous_and_unload_keeps_it() {
        let work = scratch("commit");
        let state = StateDir {
            root: work.join("state"),
        };
        for hash in [1, 2] {
            state
                .stage(&NewSnapshot {
                    text: "",
                    name: DEFAULT_POLICY_NAME,
                    source: None,
                    read_from: None,
                    ifaces: Some(&["eth0".to_string()]),
                    backend: "xdp",
                    hash,
                })
                .unwrap();
            state.commit().unwrap();
        }
        assert_eq!(state.running().unwrap().unwrap().meta.hash, 2);
        assert_eq!(state.previous().unwrap().unwrap().meta.hash, 1);
        state.record_unload().unwrap();
        assert!(state.running().unwrap().is_none());
        assert_eq!(state.previous().unwrap().unwrap().meta.hash, 2);
        let _ = fs::remove_dir_all(&work);
    }

    #[test]
    fn pending_round_trips_and_clears() {
        let work = scratch("pending");
        let state = StateDir {
            root: work.join("state"),
        };
        assert!(state.pending().unwrap().is_none());
        let p = Pending {
            token: 9,
            deadline_ms: 1000,
            watchdog_pid: 0,
            policy_name: "x".into(),
            unload: true,
        };
        state.set_pending(&p).unwrap();
        let _lock = state.lock().unwrap();
        assert_eq!(state.pending().unwrap(), Some(p));
        state.clear_pending();
        assert!(state.pending().unwrap().is_none());
        let _ = fs::remove_dir_all(&work);
    }
}

//! `fw-user save`: store the running policy where the boot unit loads it
//! (`/etc/fw/policy.toml`), like netfilter-persistent's `save`.
//!
//! The text comes from the state directory's snapshot of the running
//! load, not from the file it was loaded from (which may have changed
//! since); its relative set files are written beside it, at the same
//! relative paths, from the snapshot too.
//!
//! A file it replaces that differs (a policy edited by hand in
//! `/etc/fw`) is kept as `<name>.bak`, one generation, as editors do:
//! `save` is run to store what runs, not to throw away an edit.

use std::{
    fs,
    path::{Component, Path},
};

use crate::{
    error::{Error, Result},
    pin::PinLayout,
    state::{StateDir, relative_set_files, write_atomic_readable},
};

/// # Errors
/// Nothing recorded as running, a set file that would land outside the
/// target's directory, or the target is not writable.
pub fn run(layout: &PinLayout, to: &Path) -> Result<()> {
    let state = StateDir::for_layout(layout);
    let _lock = state.lock()?;
    let Some(running) = state.running()? else {
        return Err(Error::NothingToSave {
            state: state.root.clone(),
        });
    };
    let text = running.text()?;
    // Only a policy that still parses is worth booting with.
    crate::policy::parse_file(&text, &running.policy_path())?;
    let dir = to.parent().unwrap_or(Path::new("/"));
    let files = relative_set_files(&text);
    for file in &files {
        if Path::new(file)
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(Error::SaveOutside {
                file: file.clone(),
                dir: dir.to_path_buf(),
            });
        }
    }
    let stored_dir = running
        .policy_path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mkdir = |d: &Path| {
        fs::create_dir_all(d).map_err(|e| Error::io(format!("cannot create `{}`", d.display()), e))
    };
    mkdir(dir)?;
    for file in &files {
        let from = stored_dir.join(file);
        let bytes = fs::read(&from)
            .map_err(|e| Error::io(format!("cannot read `{}`", from.display()), e))?;
        let target = dir.join(file);
        if let Some(parent) = target.parent() {
            mkdir(parent)?;
        }
        replace(&target, &bytes)?;
        println!("fw: saved set file {}", target.display());
    }
    replace(to, text.as_bytes())?;
    println!(
        "fw: saved the running policy ({}) to {}",
        running.meta.name,
        to.display()
    );
    if let Some(ifaces) = &running.meta.ifaces {
        println!(
            "fw: note: it was loaded with --iface {}; a load of the saved file guards the policy's `interfaces` or, at boot, every interface: add `interfaces = [\"{}\"]` to it to keep guarding only these",
            ifaces.join(" --iface "),
            ifaces.join("\", \"")
        );
    }
    Ok(())
}

/// Write `bytes` to `path` (mode 0644), keeping a differing old content
/// as `path.bak`.
fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Ok(old) = fs::read(path)
        && old != bytes
    {
        let mut bak = path.as_os_str().to_owned();
        bak.push(".bak");
        let bak = std::path::PathBuf::from(bak);
        write_atomic_readable(&bak, &old)?;
        println!(
            "fw: kept the previous {} as {}",
            path.display(),
            bak.display()
        );
    }
    write_atomic_readable(path, bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_differing_file_is_kept_as_bak_and_the_new_one_is_world_readable() {
        let dir = std::env::temp_dir().join(format!("fw-save-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("policy.toml");
        let bak = dir.join("policy.toml.bak");
        replace(&file, b"one").unwrap();
        assert!(!bak.exists(), "nothing to keep the first time");
        replace(&file, b"one").unwrap();
        assert!(!bak.exists(), "the same content needs no backup");
        replace(&file, b"two").unwrap();
        assert_eq!(fs::read(&bak).unwrap(), b"one");
        assert_eq!(fs::read(&file).unwrap(), b"two");
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(mode, 0o644);
    }
}

//! `fw-user save`: store the running policy where the boot unit loads it
//! (`/etc/fw/policy.toml`), like netfilter-persistent's `save`.
//!
//! The text comes from the state directory's snapshot of the running
//! load, not from the file it was loaded from (which may have changed
//! since); its relative set files are written beside it, at the same
//! relative paths, from the snapshot too.

use std::{
    fs,
    path::{Component, Path},
};

use crate::{
    error::{Error, Result},
    pin::PinLayout,
    state::{StateDir, relative_set_files, write_atomic},
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
        write_atomic(&target, &bytes)?;
        println!("fw: saved set file {}", target.display());
    }
    write_atomic(to, text.as_bytes())?;
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

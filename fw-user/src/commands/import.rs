//! `fw-user import`: an `iptables-save` file (and its `ip6tables-save`
//! twin) as an equivalent `policy.toml`, printed on stdout; warnings about
//! classic holes and skipped rules on stderr.

use std::{fs, path::Path};

use crate::{
    error::{Error, Result},
    iptables::import::{ImportOptions, import},
};

fn read(path: &Path) -> Result<(String, String)> {
    let text = fs::read_to_string(path).map_err(|e| {
        Error::io(
            format!(
                "cannot read `{}` (hint: `iptables-save > rules.v4` writes one)",
                path.display()
            ),
            e,
        )
    })?;
    Ok((path.display().to_string(), text))
}

/// # Errors
/// A file cannot be read, or it holds constructs fw cannot express (all
/// listed) and `--skip-unsupported` was not given.
pub fn run(v4: Option<&Path>, v6: Option<&Path>, skip_unsupported: bool) -> Result<()> {
    if v4.is_none() && v6.is_none() {
        return Err(Error::Usage {
            message: "nothing to import".into(),
            hint: "give an iptables-save file, e.g. `fw-user import /etc/iptables/rules.v4 --ipv6 /etc/iptables/rules.v6`".into(),
        });
    }
    let v4 = v4.map(read).transpose()?;
    let v6 = v6.map(read).transpose()?;
    let imported = import(
        v4.as_ref().map(|(n, t)| (n.as_str(), t.as_str())),
        v6.as_ref().map(|(n, t)| (n.as_str(), t.as_str())),
        &ImportOptions { skip_unsupported },
    )
    .map_err(|e| {
        Error::Import(format!(
            "{} construct(s) fw cannot express:\n{e}",
            e.diagnostics.len()
        ))
    })?;
    for w in &imported.warnings {
        eprintln!("fw-user: warning: {w}");
    }
    for s in &imported.skipped {
        eprintln!("fw-user: skipped: {s}");
    }
    print!("{}", imported.toml);
    Ok(())
}

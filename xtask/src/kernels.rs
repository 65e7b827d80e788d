//! The kernels the privileged suite runs on: this machine's own, Debian's
//! packaged kernels (fetched with `apt-get download`, unpacked and cached),
//! or any `vmlinuz` given by path.

use std::{
    fmt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// The Debian kernel series every default run covers: bookworm's own 6.1
/// and the 6.12 it ships beside it. Each is the oldest and newest kernel a
/// Debian 12 server runs; the host's kernel is tested too.
pub const DEBIAN_SERIES: &[&str] = &["6.1", "6.12"];

/// What `--kernel` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    /// This machine's kernel, no VM: the suite runs in namespaces here.
    Host,
    /// Debian's newest amd64 image of a series, e.g. "6.1".
    Debian(String),
    /// A kernel image file.
    Image(PathBuf),
}

impl Spec {
    pub fn parse(s: &str) -> Result<Self> {
        if s == "host" {
            return Ok(Self::Host);
        }
        if s.contains('/') || Path::new(s).is_file() {
            let path = PathBuf::from(s);
            if !path.is_file() {
                bail!("--kernel {s}: no such kernel image file");
            }
            return Ok(Self::Image(path));
        }
        let series = s.strip_prefix("debian-").unwrap_or(s);
        let numeric = series
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if numeric && series.contains('.') {
            return Ok(Self::Debian(series.to_string()));
        }
        bail!(
            "--kernel {s}: expected `host`, a Debian series such as {} or a path to a vmlinuz",
            DEBIAN_SERIES.join(" or ")
        )
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host => write!(f, "host"),
            Self::Debian(s) => write!(f, "debian-{s}"),
            Self::Image(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A kernel image ready to boot, with its modules when it has any.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// How reports name it, e.g. "debian 6.1.0-56-amd64".
    pub label: String,
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/RELEASE`, with `modules.dep` made by depmod.
    pub modules: Option<PathBuf>,
}

/// Where unpacked kernels are kept between runs: `$FW_VM_CACHE`, else
/// `$XDG_CACHE_HOME/fw/kernels`, else `~/.cache/fw/kernels`. Outside the
/// checkout so that a clean clone reuses them.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FW_VM_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache"),
        PathBuf::from,
    );
    base.join("fw").join("kernels")
}

fn say(msg: &str) {
    eprintln!("[kernels] {msg}");
}

fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Numeric parts of a version-like string, for ordering package names.
fn numbers(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The newest generic amd64 image package of a series among `names`:
/// `linux-image-6.1.0-56-amd64` or `linux-image-6.12.117+deb12-amd64`, not
/// the cloud, rt, debug, unsigned or meta packages.
fn newest_image(series: &str, names: &str) -> Option<String> {
    let prefix = format!("linux-image-{series}.");
    names
        .lines()
        .map(str::trim)
        .filter(|n| {
            n.strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix("-amd64"))
                .is_some_and(|mid| {
                    mid.starts_with(|c: char| c.is_ascii_digit())
                        && !mid.contains("cloud")
                        && !mid.contains("rt")
                        && !mid.contains("dbg")
                })
        })
        .max_by_key(|n| numbers(n))
        .map(str::to_string)
}

/// Debian's newest image of `series`, downloaded and unpacked into the
/// cache unless it is there already.
pub fn debian(series: &str) -> Result<Kernel> {
    let names =
        stdout_of(Command::new("apt-cache").args(["pkgnames", &format!("linux-image-{series}.")]))?;
    let Some(pkg) = newest_image(series, &names) else {
        bail!(
            "no Debian package of kernel {series} for amd64 in the apt lists; \
             run `apt-get update`, or pick another with --kernel"
        );
    };
    let release = pkg.trim_start_matches("linux-image-").to_string();
    let dir = cache_dir().join(&pkg);
    let ready = dir.join(".ready");
    if ready.exists() {
        say(&format!("{pkg}: cached in {}", dir.display()));
    } else {
        fetch(&pkg, &release, &dir)?;
        std::fs::write(&ready, b"")?;
    }
    let modules = dir.join("lib/modules").join(&release);
    Ok(Kernel {
        label: format!("debian {release}"),
        vmlinuz: dir.join("boot").join(format!("vmlinuz-{release}")),
        modules: modules.join("modules.dep").exists().then_some(modules),
        release,
    })
}

fn fetch(pkg: &str, release: &str, dir: &Path) -> Result<()> {
    let debs = cache_dir().join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    say(&format!(
        "downloading {pkg} with apt-get download into {}",
        debs.display()
    ));
    let status = Command::new("apt-get")
        .args(["download", "-q", pkg])
        .current_dir(&debs)
        .status()
        .context("cannot start apt-get")?;
    if !status.success() {
        bail!("`apt-get download {pkg}` failed ({status}); is the Debian archive reachable?");
    }
    let deb = std::fs::read_dir(&debs)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{pkg}_")))
                && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("deb"))
        })
        .with_context(|| format!("apt-get download left no {pkg}_*.deb in {}", debs.display()))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    say(&format!(
        "unpacking {} into {}",
        deb.display(),
        dir.display()
    ));
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(dir)
        .status()?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed ({status})", deb.display());
    }
    // The package ships no modules.dep (its postinst makes one); the
    // guest's modprobe needs it.
    say(&format!("depmod for {release}"));
    let status = Command::new("depmod")
        .arg("-b")
        .arg(dir)
        .arg(release)
        .status()?;
    if !status.success() {
        bail!("depmod -b {} {release} failed ({status})", dir.display());
    }
    std::fs::remove_file(&deb)?;
    Ok(())
}

/// A kernel image given by path: its release comes from the file name
/// (`vmlinuz-RELEASE`); modules are looked for beside it, as in an unpacked
/// package (`../lib/modules/RELEASE`), then in `/lib/modules/RELEASE`.
pub fn image(path: &Path) -> Kernel {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let release = name
        .strip_prefix("vmlinuz-")
        .or_else(|| name.strip_prefix("bzImage-"))
        .unwrap_or_default()
        .to_string();
    let mut candidates = Vec::new();
    if !release.is_empty() {
        if let Some(parent) = path.parent().and_then(Path::parent) {
            candidates.push(parent.join("lib/modules").join(&release));
        }
        candidates.push(Path::new("/lib/modules").join(&release));
    }
    let modules = candidates
        .into_iter()
        .find(|d| d.join("modules.dep").exists());
    if modules.is_none() {
        say(&format!(
            "{}: no modules found (looked for lib/modules/RELEASE beside it); \
             the kernel must have 9p, virtio and what the tests use built in",
            path.display()
        ));
    }
    Kernel {
        label: format!("image {}", path.display()),
        release: if release.is_empty() {
            "unknown".into()
        } else {
            release
        },
        vmlinuz: path.to_path_buf(),
        modules,
    }
}

pub fn resolve(spec: &Spec) -> Result<Option<Kernel>> {
    match spec {
        Spec::Host => Ok(None),
        Spec::Debian(series) => debian(series).map(Some),
        Spec::Image(p) => Ok(Some(image(p))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(Spec::parse("host").unwrap(), Spec::Host);
        assert_eq!(Spec::parse("6.1").unwrap(), Spec::Debian("6.1".into()));
        assert_eq!(
            Spec::parse("debian-6.12").unwrap(),
            Spec::Debian("6.12".into())
        );
        assert!(Spec::parse("6").is_err());
        assert!(Spec::parse("latest").is_err());
        assert!(Spec::parse("/nonexistent/vmlinuz").is_err());
    }

    #[test]
    fn picks_the_newest_generic_image() {
        let names = "linux-image-6.1.0-47-amd64\nlinux-image-6.1.0-56-amd64\n\
                     linux-image-6.1.0-9-amd64\nlinux-image-6.1.0-56-cloud-amd64\n\
                     linux-image-6.1.0-56-rt-amd64\nlinux-image-6.1.0-56-amd64-dbg\n\
                     linux-image-6.1.0-56-amd64-unsigned\n";
        assert_eq!(
            newest_image("6.1", names).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        let names = "linux-image-6.12-amd64\nlinux-image-6.12.107+deb12-amd64\n\
                     linux-image-6.12.117+deb12-amd64\nlinux-image-6.12.117+deb12-cloud-amd64\n";
        assert_eq!(
            newest_image("6.12", names).as_deref(),
            Some("linux-image-6.12.117+deb12-amd64")
        );
        assert_eq!(newest_image("5.10", names), None);
    }
}

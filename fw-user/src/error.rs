//! fw-user's errors. Messages are lowercase, name the thing in backticks
//! and end with what to do next.

use std::{fmt, io, path::PathBuf};

use thiserror::Error;

/// A problem in a policy file, with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: String,
}

impl PolicyError {
    #[must_use]
    pub fn at(file: &str, text: &str, offset: usize, message: String, hint: &str) -> Self {
        let (line, column) = crate::policy::line_col_of(text, offset);
        Self {
            file: file.to_string(),
            line,
            column,
            message,
            hint: hint.to_string(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}\n  hint: {}",
            self.file, self.line, self.column, self.message, self.hint
        )
    }
}

impl std::error::Error for PolicyError {}

#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Policy(#[from] PolicyError),

    #[error(
        "cannot read policy `{path}`: {source} (hint: check the path; without a file `fw-user load` uses the built-in safe policy)"
    )]
    ReadPolicy {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "interface `{0}` does not exist in this network namespace (hint: `ip link` lists the interfaces)"
    )]
    NoSuchInterface(String),

    #[error(
        "fw never guards the loopback interface `lo` (hint: drop it from --iface / `interfaces`)"
    )]
    LoopbackInterface,

    #[error(
        "no interface to guard: none is up besides `lo` (hint: bring one up or name it with --iface)"
    )]
    NoInterfaces,

    #[error(
        "`{path}` is not on a BPF filesystem (hint: `mount -t bpf bpf {path}` or pick a --pin-path under /sys/fs/bpf)"
    )]
    NotBpffs { path: PathBuf },

    #[error(
        "no firewall is loaded at `{0}` (hint: is fw loaded? `fw-user load` installs it; pass the same --pin-path it used)"
    )]
    NotLoaded(PathBuf),

    #[error(
        "another fw-user (pid {holder}) is already following this firewall's events; a ring buffer has one reader (hint: stop that one, or use its output; lock `{}`)", lock.display()
    )]
    EventsBusy { holder: String, lock: PathBuf },

    #[error(
        "cannot serve metrics on `{addr}`: {reason} (hint: pick a free address and port, e.g. --metrics 127.0.0.1:9464)"
    )]
    MetricsBind { addr: String, reason: String },

    #[error(
        "policy {policy} was loaded with --confirm and awaits confirmation ({seconds} s left) (hint: `fw-user confirm` keeps it, `fw-user rollback` restores the one before; then load again)"
    )]
    ConfirmPending { policy: String, seconds: u64 },

    #[error(
        "no load awaits confirmation: it was confirmed, or the watchdog already rolled it back (hint: `{}` says what the watchdog did; `fw-user status` shows the running policy)", log.display()
    )]
    NothingToConfirm { log: PathBuf },

    #[error(
        "a firewall runs here but `{}` holds no record of its policy, so --confirm would have nothing to roll back to (hint: load the running policy once without --confirm, then load the new one with --confirm)", state.display()
    )]
    NoRollbackRecord { state: PathBuf },

    #[error(
        "nothing to roll back to: `{}` holds no earlier policy (hint: `fw-user load POLICY` loads one)", state.display()
    )]
    NothingToRollBack { state: PathBuf },

    #[error("{0}")]
    Lockout(String),

    #[error(
        "the saved policy `{}` could not be loaded at boot, so the built-in safe policy runs instead (loopback, established and SSH in; everything else inbound dropped) (hint: the error above says why; fix the file, `fw-user check` it, then `systemctl restart fw`)", policy.display()
    )]
    BootFallback { policy: PathBuf },

    #[error(
        "nothing to save: `{}` holds no record of a running policy (hint: `fw-user load POLICY` first; a firewall loaded by an older fw-user must be loaded again once)", state.display()
    )]
    NothingToSave { state: PathBuf },

    #[error(
        "set file `{file}` would be saved outside `{}` (hint: give the set an absolute path, or one inside the policy's directory)", dir.display()
    )]
    SaveOutside { file: String, dir: PathBuf },

    #[error(
        "the firewall at `{path}` was written by a different fw version (map layout {found}, this fw-user uses {expected}) (hint: `fw-user unload --pin-path {path}` removes it with any version; then load again: established TCP connections are adopted again, other tracked flows are lost)"
    )]
    AbiMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },

    #[error(
        "conntrack `max_entries` is {running} in the running firewall, the policy asks {asked}{asked_note}: the table size is fixed while loaded (hint: set `[conntrack] max_entries = {running}` to keep it, or `fw-user unload` then load again to resize: established TCP connections are re-adopted, every other tracked flow is lost)"
    )]
    CtSizeFixed {
        running: u32,
        asked: u32,
        /// Says when `asked` is the default of a policy without the key.
        asked_note: &'static str,
    },

    #[error(
        "no tracked connection {tuple} (hint: `fw-user conntrack list` shows the table; write the tuple as PROTO SRC[:PORT] DST[:PORT], either end first)"
    )]
    NoSuchConnection { tuple: String },

    /// A command-line value clap could not check by itself.
    #[error("{message} (hint: {hint})")]
    Usage { message: String, hint: String },

    /// Constructs of an iptables ruleset fw cannot express, one a line,
    /// each with its own hint.
    #[error("cannot import; {0}")]
    Import(String),

    #[error(
        "privileges are required to {action} (hint: run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)"
    )]
    Privileges { action: &'static str },

    /// The kernel lacks something the eBPF datapath needs
    /// (`fw_common::kernel::REQUIREMENTS`); `--backend auto` falls back
    /// to iptables on it.
    #[error(
        "this kernel (Linux {release}) lacks what fw's eBPF datapath needs: {missing} (hint: {hint})"
    )]
    UnsupportedKernel {
        /// `uname -r`.
        release: String,
        /// Each requirement not met, with the release that brought it.
        missing: String,
        hint: String,
    },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("{what}: {source}")]
    Bpf {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    pub fn bpf(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Bpf {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! Running the privileged suite inside a QEMU VM on another kernel.
//!
//! The guest boots the kernel with a small initramfs (static busybox, the
//! init script in `xtask/vm/init`, and the modules needed to reach 9p). It
//! mounts this machine's root filesystem read-only over 9p and runs the
//! already built test binaries in a chroot there: the same iproute2,
//! iptables and nft as on the host, the kernel's own modules from a second
//! share (loaded on demand by the chroot's kmod), and a writable job
//! directory, the only thing the guest can change on the host, for logs and
//! exit codes. The guest has no network device: the tests make their own
//! namespaces and veths inside it.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::kernels::Kernel;

const INIT: &str = include_str!("../vm/init");

/// Modules the initramfs loads itself, before the root filesystem is there
/// to load the rest from: virtio, 9p and overlayfs. Built-in ones are
/// skipped.
const BOOT_MODULES: &[&str] = &["virtio_pci", "virtio_rng", "9pnet_virtio", "9p", "overlay"];

/// Modules loaded at boot for the suite, so that a missing one is reported
/// up front rather than as a puzzling test failure; the kernel loads others
/// on demand through the chroot's modprobe.
const SUITE_MODULES: &[&str] = &[
    "veth",
    "bridge",
    "sch_ingress",
    "cls_bpf",
    "nf_conntrack",
    "nf_tables",
    "nft_compat",
    "nft_ct",
    "nfnetlink_log",
    "iptable_filter",
    "iptable_raw",
    "ip6table_filter",
    "ip6table_raw",
    "xt_conntrack",
    "xt_multiport",
    "xt_limit",
    "xt_hl",
    "xt_tcpudp",
    "xt_NFLOG",
    "ipt_REJECT",
    "ip6t_REJECT",
];

/// One test binary and how to run it in the guest.
pub struct TestRun {
    /// Names its log and exit-code files, e.g. `netns_traffic` or
    /// `netns_examples-iptables`.
    pub name: String,
    pub exe: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Rough cost, to spread suites over parallel lanes: the number of
    /// tests it runs, where known.
    pub weight: u32,
}

pub struct Options {
    pub cpus: u32,
    pub memory_mib: u32,
    pub timeout: Duration,
    /// Working directory of the test binaries (cargo runs integration tests
    /// in their package's directory).
    pub cwd: PathBuf,
    /// Where the per-kernel job directories go.
    pub workdir: PathBuf,
}

/// What came back from one VM: each binary's log and exit code.
pub struct Outcome {
    pub logs: Vec<(String, String, Option<i32>)>,
}

fn say(label: &str, msg: &str) {
    eprintln!("[vm {label}] {msg}");
}

/// The kernel's `modules.dep`: module name → (path, dependencies' names).
fn module_deps(dir: &Path) -> Result<Vec<(String, String, Vec<String>)>> {
    let text = fs::read_to_string(dir.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep", dir.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (path, deps) = l.split_once(':')?;
            Some((
                module_name(path),
                path.to_string(),
                deps.split_whitespace().map(module_name).collect(),
            ))
        })
        .collect())
}

/// `kernel/net/9p/9pnet_virtio.ko.xz` → `9pnet_virtio`; modprobe treats
/// `-` and `_` alike.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// `wanted` and everything they depend on, dependencies first, as paths
/// relative to the modules directory. Names not in `modules.dep` are
/// built in (or absent: the guest then reports it).
fn load_order(deps: &[(String, String, Vec<String>)], wanted: &[&str]) -> Vec<String> {
    fn visit(
        name: &str,
        deps: &[(String, String, Vec<String>)],
        out: &mut Vec<String>,
        seen: &mut Vec<String>,
    ) {
        if seen.iter().any(|s| s == name) {
            return;
        }
        seen.push(name.to_string());
        let Some((_, path, needs)) = deps.iter().find(|(n, _, _)| n == name) else {
            return;
        };
        for need in needs {
            visit(need, deps, out, seen);
        }
        out.push(path.clone());
    }
    let (mut out, mut seen) = (Vec::new(), Vec::new());
    for w in wanted {
        visit(w, deps, &mut out, &mut seen);
    }
    out
}

/// A module file as the kernel takes it: Debian compresses modules with xz
/// since 6.x, and busybox's insmod does not unpack them.
fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    let tool = match ext {
        "ko" => return fs::read(path).with_context(|| format!("reading {}", path.display())),
        "xz" => "xz",
        "zst" => "zstd",
        "gz" => "gzip",
        _ => bail!("{}: unknown module compression", path.display()),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("cannot start {tool} to unpack {}", path.display()))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed", path.display());
    }
    Ok(out.stdout)
}

/// The initramfs as an uncompressed newc cpio archive.
fn initramfs(kernel: &Kernel) -> Result<Vec<u8>> {
    use cpio::newc::{Builder, trailer};

    fn file(out: Vec<u8>, name: &str, mode: u32, data: &[u8]) -> Result<Vec<u8>> {
        let len = u32::try_from(data.len()).context("initramfs file over 4 GiB")?;
        let mut w = Builder::new(name).mode(mode).nlink(1).write(out, len);
        std::io::Write::write_all(&mut w, data)?;
        Ok(w.finish()?)
    }
    fn dir(out: Vec<u8>, name: &str) -> Result<Vec<u8>> {
        Ok(Builder::new(name)
            .mode(0o040_755)
            .nlink(2)
            .write(out, 0)
            .finish()?)
    }

    let busybox = Path::new("/bin/busybox");
    let bb = fs::read(busybox)
        .context("reading /bin/busybox: install busybox-static (`cargo xtask setup` does)")?;
    let mut out = Vec::new();
    for d in ["bin", "dev", "proc", "sys", "sbin", "newroot", "modules"] {
        out = dir(out, d)?;
    }
    // The kernel opens /dev/console for init's output before devtmpfs.
    out = Builder::new("dev/console")
        .mode(0o020_600)
        .nlink(1)
        .rdev_major(5)
        .rdev_minor(1)
        .write(out, 0)
        .finish()?;
    out = file(out, "init", 0o100_755, INIT.as_bytes())?;
    out = file(out, "bin/busybox", 0o100_755, &bb)?;

    let mut order = String::new();
    if let Some(mods) = &kernel.modules {
        let deps = module_deps(mods)?;
        for rel in load_order(&deps, BOOT_MODULES) {
            let bytes = module_bytes(&mods.join(&rel))?;
            let name = format!("{}.ko", module_name(&rel));
            out = file(out, &format!("modules/{name}"), 0o100_644, &bytes)?;
            writeln!(order, "{name}")?;
        }
    }
    out = file(out, "modules.order", 0o100_644, order.as_bytes())?;
    Ok(trailer(out)?)
}

/// The script the guest runs in the chroot: load the suite's modules, then
/// every test binary, each one's output to the console and to a log file,
/// its exit code to a file of its own.
fn job_script(job: &Path, cwd: &Path, runs: &[TestRun], lanes: usize) -> Result<String> {
    let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut s = String::new();
    writeln!(s, "# Made by `cargo xtask test` for one VM run.")?;
    writeln!(
        s,
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )?;
    writeln!(s, "export HOME=/root RUST_BACKTRACE=1")?;
    writeln!(s, "job={}", q(&job.display().to_string()))?;
    writeln!(s, "for m in {}; do", SUITE_MODULES.join(" "))?;
    writeln!(
        s,
        "  modprobe -q $m || echo \"fw-vm: module $m is not available\""
    )?;
    writeln!(s, "done")?;
    writeln!(s, "cd {} || exit 1", q(&cwd.display().to_string()))?;
    // Suites run in `lanes` parallel lanes, heaviest first into the
    // lightest lane: most suites here are a test or two, which would leave
    // all but one CPU idle.
    let mut order: Vec<&TestRun> = runs.iter().collect();
    order.sort_by_key(|r| std::cmp::Reverse(r.weight));
    let mut lanes: Vec<(u32, String)> = vec![(0, String::new()); lanes.max(1)];
    for r in order {
        let lane = lanes.iter_mut().min_by_key(|(w, _)| *w).expect("one lane");
        lane.0 += r.weight;
        let mut cmd = String::new();
        for (k, v) in &r.env {
            write!(cmd, "{k}={} ", q(v))?;
        }
        write!(cmd, "{}", q(&r.exe.display().to_string()))?;
        for a in &r.args {
            write!(cmd, " {}", q(a))?;
        }
        writeln!(lane.1, "  echo \"fw-vm: running {}\"", r.name)?;
        writeln!(
            lane.1,
            "  {{ {cmd}; echo $? >\"$job/{name}.rc\"; }} >\"$job/{name}.log\" 2>&1",
            name = r.name
        )?;
        writeln!(
            lane.1,
            "  echo \"fw-vm: {} done\"; cat \"$job/{}.log\"",
            r.name, r.name
        )?;
    }
    for (i, (_, body)) in lanes.iter().enumerate() {
        writeln!(s, "lane{i}() {{\n  :\n{body}}}")?;
        writeln!(s, "lane{i} &")?;
    }
    writeln!(s, "wait")?;
    Ok(s)
}

/// Whether KVM really runs this kernel. An openable /dev/kvm is not enough:
/// under nested virtualization a guest can hang at its first instruction
/// or QEMU can abort on an MSR it cannot set. So boot the kernel bare with
/// KVM and wait briefly for its first console line; otherwise emulate
/// (TCG). `FW_VM_ACCEL=kvm|tcg` skips the probe.
pub fn kvm_works(kernel: &Kernel) -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| probe_kvm(kernel))
}

fn probe_kvm(kernel: &Kernel) -> bool {
    match std::env::var("FW_VM_ACCEL").as_deref() {
        Ok("kvm") => return true,
        Ok("tcg") => return false,
        _ => {}
    }
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return false;
    }
    let Ok(mut child) = Command::new("qemu-system-x86_64")
        .args(["-machine", "q35,accel=kvm", "-cpu", "host", "-m", "256"])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-nic",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        let booted = BufReader::new(stdout)
            .split(b'\n')
            .map_while(Result::ok)
            .any(|l| String::from_utf8_lossy(&l).contains("Linux version"));
        let _ = tx.send(booted);
    });
    let booted = rx.recv_timeout(Duration::from_secs(10)).unwrap_or(false);
    let _ = child.kill();
    let _ = child.wait();
    booted
}

/// Boot `kernel`, run `runs` inside, and collect their logs. The console
/// streams to the terminal, each line prefixed with the kernel's release.
pub fn run(kernel: &Kernel, runs: &[TestRun], opts: &Options) -> Result<Outcome> {
    let label = kernel.release.as_str();
    let dir = opts.workdir.join(&kernel.release);
    let job = dir.join("job");
    if job.exists() {
        fs::remove_dir_all(&job).with_context(|| format!("clearing {}", job.display()))?;
    }
    fs::create_dir_all(&job).with_context(|| format!("creating {}", job.display()))?;
    let initrd = dir.join("initramfs.cpio");
    fs::write(&initrd, initramfs(kernel)?)
        .with_context(|| format!("writing {}", initrd.display()))?;
    fs::write(
        job.join("run.sh"),
        job_script(&job, &opts.cwd, runs, opts.cpus as usize)?,
    )?;

    let kvm = kvm_works(kernel);
    say(
        label,
        &format!(
            "booting {} ({}, {} CPUs, {} MiB; at most {} min)",
            kernel.vmlinuz.display(),
            if kvm {
                "KVM"
            } else {
                "KVM does not work here: TCG emulation"
            },
            opts.cpus,
            opts.memory_mib,
            opts.timeout.as_secs() / 60
        ),
    );
    let mut child = qemu(kernel, &initrd, &job, kvm, opts).spawn().context(
        "cannot start qemu-system-x86_64: install qemu-system-x86 (`cargo xtask setup` does)",
    )?;
    stream_console(&mut child, kernel, opts.timeout)?;
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "qemu for kernel {} exited with {status}; see its messages above",
            kernel.label
        );
    }

    let mut logs = Vec::new();
    for r in runs {
        let log = fs::read_to_string(job.join(format!("{}.log", r.name))).unwrap_or_default();
        let rc = fs::read_to_string(job.join(format!("{}.rc", r.name)))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        logs.push((r.name.clone(), log, rc));
    }
    Ok(Outcome { logs })
}

/// The QEMU command line for one run: no network device, the console on
/// stdout, the host's root, the job directory and the modules as 9p shares.
fn qemu(kernel: &Kernel, initrd: &Path, job: &Path, kvm: bool, opts: &Options) -> Command {
    let share = |path: &Path, tag: &str, ro: bool| {
        format!(
            "local,path={},mount_tag={tag},security_model=none,multidevs=remap{}",
            path.display(),
            if ro { ",readonly=on" } else { "" }
        )
    };
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-machine",
        if kvm {
            "q35,accel=kvm"
        } else {
            "q35,accel=tcg"
        },
    ])
    .args(["-cpu", if kvm { "host" } else { "max" }])
    .args([
        "-smp",
        &opts.cpus.to_string(),
        "-m",
        &opts.memory_mib.to_string(),
    ])
    .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
    .args(["-nic", "none", "-no-reboot"])
    .args(["-device", "virtio-rng-pci"])
    .arg("-kernel")
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .args([
        "-append",
        &format!(
            "console=ttyS0 panic=-1 loglevel=4 rdinit=/init fw.job={}",
            job.display()
        ),
    ])
    .args(["-virtfs", &share(Path::new("/"), "hostroot", true)])
    .args(["-virtfs", &share(job, "job", false)]);
    if let Some(m) = &kernel.modules {
        cmd.args(["-virtfs", &share(m, "kmods", true)]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Print the console and QEMU's own messages, each line prefixed with the
/// kernel's release, until QEMU exits; kill it at the deadline.
fn stream_console(
    child: &mut std::process::Child,
    kernel: &Kernel,
    timeout: Duration,
) -> Result<()> {
    let label = kernel.release.as_str();
    // Lines from the console and from qemu's own errors, through one
    // channel so the deadline below can be checked between them.
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("piped")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => println!("[{label}] {line}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the VM on kernel {} did not finish within {} min and was killed; \
                     the console above shows where it stopped (raise --vm-timeout if it was only slow)",
                    kernel.label,
                    timeout.as_secs() / 60
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_load_first() {
        let deps = vec![
            (
                "9p".into(),
                "kernel/fs/9p/9p.ko.xz".into(),
                vec!["9pnet".into(), "netfs".into()],
            ),
            (
                "9pnet".into(),
                "kernel/net/9p/9pnet.ko.xz".into(),
                vec!["netfs".into()],
            ),
            ("netfs".into(), "kernel/fs/netfs/netfs.ko.xz".into(), vec![]),
            (
                "9pnet_virtio".into(),
                "kernel/net/9p/9pnet_virtio.ko.xz".into(),
                vec!["9pnet".into(), "netfs".into()],
            ),
        ];
        assert_eq!(
            load_order(&deps, &["virtio_pci", "9pnet_virtio", "9p"]),
            [
                "kernel/fs/netfs/netfs.ko.xz",
                "kernel/net/9p/9pnet.ko.xz",
                "kernel/net/9p/9pnet_virtio.ko.xz",
                "kernel/fs/9p/9p.ko.xz",
            ]
        );
        assert_eq!(
            module_name("kernel/drivers/virtio/virtio-pci.ko"),
            "virtio_pci"
        );
    }

    #[test]
    fn job_script_quotes_and_records_exit_codes() {
        let s = job_script(
            Path::new("/w/job"),
            Path::new("/w/tests"),
            &[TestRun {
                name: "netns_examples-iptables".into(),
                exe: "/w/target/debug/deps/netns_examples-0123".into(),
                args: vec!["it's".into()],
                env: vec![("FW_TEST_BACKEND".into(), "iptables".into())],
                weight: 1,
            }],
            2,
        )
        .unwrap();
        assert!(s.contains(
            "{ FW_TEST_BACKEND='iptables' '/w/target/debug/deps/netns_examples-0123' 'it'\\''s'; \
             echo $? >\"$job/netns_examples-iptables.rc\"; } >\"$job/netns_examples-iptables.log\" 2>&1"
        ));
        assert!(s.contains("lane0 &\n") && s.contains("lane1 &\n") && s.ends_with("wait\n"));
    }
}

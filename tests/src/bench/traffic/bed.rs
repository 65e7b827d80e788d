//! One test bed per measurement: a generator namespace and a server
//! namespace joined by a veth pair, and the receiver-side readings a flood
//! is judged by (the veth's counters, the server stack's SNMP counters and
//! the CPU time of the veth's NAPI thread).
//!
//! The generator pushes frames with `XDP_TX` in live-frame mode; a veth
//! only takes such frames when its peer runs NAPI, which it does once an
//! XDP program is attached or GRO is on: GRO is turned on for every arm so
//! the ones without XDP receive too. The server's NAPI is then made a
//! kernel thread (`threaded`) pinned to the last CPU while the generator
//! runs on the first: the receiver's whole cost (the filter, and for the
//! netfilter arms the stack up to the drop) is that one thread's run time.

use std::{collections::HashMap, os::fd::OwnedFd, path::PathBuf, process::Command, time::Duration};

use crate::netns::{Bpffs, Netns};

use crate::bench::bpf;

pub struct Bed {
    pub gen_ns: Netns,
    pub srv: Netns,
    pub gen_if: String,
    pub srv_if: String,
    pub bpffs: Bpffs,
    pub workdir: PathBuf,
    gen_mac: [u8; 6],
    srv_mac: [u8; 6],
    /// The `XDP_TX` program the generator test-runs.
    tx_prog: std::sync::Arc<OwnedFd>,
    /// The bare `XDP_DROP` link of that arm, if attached.
    pub drop_link: Option<OwnedFd>,
}

/// The server veth's counters.
#[derive(Clone, Copy, Default)]
pub struct Link {
    /// Frames its NAPI processed (the filter saw them).
    pub rx_packets: u64,
    /// Frames lost because its receive ring was full (the receiver could
    /// not keep up).
    pub rx_dropped: u64,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

impl Bed {
    /// # Errors
    /// A namespace, the veth or the generator program could not be set up.
    pub fn new() -> Result<Self, String> {
        let tx_prog = bpf::load_verdict(bpf::XDP_TX, "bench_xdp_tx")
            .map_err(|e| format!("loading the XDP_TX generator program: {e}"))?;
        let srv = Netns::new("fwb-srv-");
        let gen_ns = Netns::new("fwb-gen-");
        let tag = crate::unique("");
        let (srv_if, gen_if) = (format!("s{tag}"), format!("g{tag}"));
        run(Command::new("ip").args([
            "link",
            "add",
            &srv_if,
            "netns",
            &srv.name,
            "type",
            "veth",
            "peer",
            "name",
            &gen_if,
            "netns",
            &gen_ns.name,
        ]))?;
        let addr = format!("{}/24", super::super::policies::SERVER);
        srv.ip(&["addr", "add", &addr, "dev", &srv_if]);
        srv.ip(&["link", "set", &srv_if, "up"]);
        gen_ns.ip(&["link", "set", &gen_if, "up"]);
        run(Command::new("ip").args([
            "netns", "exec", &srv.name, "ethtool", "-K", &srv_if, "gro", "on",
        ]))?;
        let workdir = std::env::temp_dir().join(crate::unique("fw-bench-traffic-"));
        std::fs::create_dir_all(&workdir).map_err(|e| format!("{}: {e}", workdir.display()))?;
        Ok(Self {
            gen_mac: gen_ns.mac(&gen_if),
            srv_mac: srv.mac(&srv_if),
            gen_ns,
            srv,
            gen_if,
            srv_if,
            bpffs: Bpffs::new(),
            workdir,
            tx_prog: std::sync::Arc::new(tx_prog),
            drop_link: None,
        })
    }

    /// `frame` addressed from the generator's veth to the server's.
    #[must_use]
    pub fn addressed(&self, frame: &[u8]) -> Vec<u8> {
        crate::packet::with_macs(frame, self.gen_mac, self.srv_mac)
    }

    /// Run `cmd` in the server namespace; its stdout, or why it failed.
    ///
    /// # Errors
    /// The command failed.
    pub fn srv_exec(&self, cmd: &[&str]) -> Result<String, String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.srv.name])
            .args(cmd))
    }

    /// Like `srv_exec`, with `input` on stdin.
    ///
    /// # Errors
    /// The command failed.
    pub fn srv_exec_input(&self, cmd: &[&str], input: &std::path::Path) -> Result<String, String> {
        let file = std::fs::File::open(input).map_err(|e| format!("{}: {e}", input.display()))?;
        run(Command::new("ip")
            .args(["netns", "exec", &self.srv.name])
            .args(cmd)
            .stdin(file))
    }

    /// Run the shell `script` in the server namespace with this bed's
    /// bpffs at /sys/fs/bpf (`ip netns exec` mounts a fresh /sys, without
    /// one), for tools that pin there (xdp-filter).
    ///
    /// # Errors
    /// The script failed.
    pub fn srv_sh_bpffs(&self, script: &str) -> Result<String, String> {
        let full = format!(
            "mount --bind {} /sys/fs/bpf && {script}",
            self.bpffs.dir.display()
        );
        run(Command::new("ip").args(["netns", "exec", &self.srv.name, "sh", "-c", &full]))
    }

    /// The server veth's counters.
    ///
    /// # Errors
    /// `ip -s -j link` failed or printed something else.
    pub fn link(&self) -> Result<Link, String> {
        let out = run(Command::new("ip").args([
            "-n",
            &self.srv.name,
            "-s",
            "-j",
            "link",
            "show",
            "dev",
            &self.srv_if,
        ]))?;
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("ip -j link: {e}: {out}"))?;
        let rx = &v[0]["stats64"]["rx"];
        match (rx["packets"].as_u64(), rx["dropped"].as_u64()) {
            (Some(rx_packets), Some(rx_dropped)) => Ok(Link {
                rx_packets,
                rx_dropped,
            }),
            _ => Err(format!("no rx counters in `ip -s -j link`: {out}")),
        }
    }

    /// The server namespace's /proc/net/snmp, as "Proto.Field" → value.
    ///
    /// # Errors
    /// It could not be read.
    pub fn snmp(&self) -> Result<HashMap<String, i64>, String> {
        let text = self.srv_exec(&["cat", "/proc/net/snmp"])?;
        let mut out = HashMap::new();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let mut n = names.split_whitespace();
            let mut v = values.split_whitespace();
            let Some(proto) = n.next() else { continue };
            v.next();
            for (name, value) in n.zip(v) {
                if let Ok(value) = value.parse() {
                    out.insert(
                        format!("{}{name}", proto.trim_end_matches(':').to_owned() + "."),
                        value,
                    );
                }
            }
        }
        Ok(out)
    }

    /// Make the server veth's NAPI a kernel thread pinned to the last CPU
    /// and return its pid. Call after the filter is in place: attaching
    /// XDP may recreate the NAPI instance.
    ///
    /// # Errors
    /// The thread did not appear.
    pub fn napi_thread(&self) -> Result<i32, String> {
        let path = format!("/sys/class/net/{}/threaded", self.srv_if);
        self.srv_exec(&["sh", "-c", &format!("echo 1 > {path}")])?;
        let want = format!("napi/{}-", self.srv_if);
        for _ in 0..50 {
            let found = std::fs::read_dir("/proc")
                .map_err(|e| format!("/proc: {e}"))?
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .find(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|c| c.trim().starts_with(&want))
                });
            if let Some(pid) = found {
                pin(pid, receiver_cpu())?;
                realtime(pid)?;
                return Ok(pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "no NAPI thread {want}* after enabling {path}: the kernel cannot run veth NAPI threaded"
        ))
    }

    /// Flood `frame` from the generator for at most `max_time` and
    /// `max_frames`, the generator pinned to CPU 0.
    ///
    /// # Errors
    /// The generator failed.
    pub fn flood(
        &self,
        frame: &[u8],
        max_frames: u64,
        max_time: Duration,
    ) -> Result<bpf::Sent, String> {
        let frame = self.addressed(frame);
        let prog = std::sync::Arc::clone(&self.tx_prog);
        let ifname = self.gen_if.clone();
        self.gen_ns.run(move || {
            pin(0, 0)?;
            realtime(0)?;
            let ifindex = nix::net::if_::if_nametoindex(ifname.as_str())
                .map_err(|e| format!("{ifname}: {e}"))?;
            bpf::flood(&prog, ifindex, &frame, max_frames, max_time).map_err(|e| {
                format!("BPF_PROG_RUN live frames on {ifname}: {e} (needs Linux 5.18 or later)")
            })
        })
    }

    /// Attach the bare `XDP_DROP` program to the server veth (the ceiling).
    ///
    /// # Errors
    /// The kernel refused.
    pub fn attach_drop(&mut self) -> Result<(), String> {
        let ifname = self.srv_if.clone();
        let link = self.srv.run(move || {
            let prog = bpf::load_verdict(bpf::XDP_DROP, "bench_xdp_drop")
                .map_err(|e| format!("XDP_DROP: {e}"))?;
            let ifindex = nix::net::if_::if_nametoindex(ifname.as_str())
                .map_err(|e| format!("{ifname}: {e}"))?;
            bpf::attach_link(&prog, ifindex)
                .map_err(|e| format!("attach XDP_DROP to {ifname}: {e}"))
        })?;
        self.drop_link = Some(link);
        Ok(())
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.drop_link = None;
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

/// The CPU the receiver's NAPI thread runs on: the last one, so that the
/// generator (CPU 0) does not share it when there are two or more.
#[must_use]
pub fn receiver_cpu() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get() - 1)
}

/// Pin thread `tid` (0: the calling thread) to `cpu`.
fn pin(tid: i32, cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays within it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &raw const set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "pinning thread {tid} to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Make thread `tid` (0: the calling thread) `SCHED_FIFO`: the other
/// work of a shared machine (builds, other benches) must not take the CPU
/// from the generator or the receiver halfway through a flood. Floods are
/// bounded to seconds, and the kernel's RT throttling leaves the rest of
/// the machine a share even then.
fn realtime(tid: i32) -> Result<(), String> {
    let param = libc::sched_param { sched_priority: 50 };
    // SAFETY: a plain syscall with a parameter block we own.
    let rc = unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &raw const param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "making thread {tid} SCHED_FIFO: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// CPU `cpu`'s times from /proc/stat, in nanoseconds: (busy outside
/// interrupts, hard and soft interrupts, idle).
///
/// # Errors
/// /proc/stat has no such line.
pub fn cpu_times(cpu: usize) -> Result<(u64, u64, u64), String> {
    let text = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let want = format!("cpu{cpu} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&want))
        .ok_or_else(|| format!("no {want:?} in /proc/stat"))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf is always safe to call.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let ns = |v: u64| v * 1_000_000_000 / hz;
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    Ok((
        ns(get(0) + get(1) + get(2) + get(7)),
        ns(get(5) + get(6)),
        ns(get(3) + get(4)),
    ))
}

/// The 1-minute load average: what else the machine was doing.
#[must_use]
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Nanoseconds thread `pid` has run (`/proc/PID/schedstat`).
///
/// # Errors
/// The thread is gone.
pub fn run_time_ns(pid: i32) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .map_err(|e| format!("/proc/{pid}/schedstat: {e}"))?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/schedstat: {text:?}"))
}

//! Scenario suites as data: a file in `tests/scenarios/` names the hosts,
//! the networks between them, each host's policy, the services listening
//! and a reachability matrix of probes with their expected outcomes, and
//! optionally deliberately wrong policies (`[[mutation]]`) with the probes
//! that must catch them. The runner builds it all from network
//! namespaces (`Lab`), starts real listeners, loads every policy with the
//! real `fw-user`, sends every probe and returns a `Report` of everything
//! that differs. The format is described in `docs/scenarios.md`.

pub(crate) mod generate;
mod probe;
mod report;
mod service;
pub(crate) mod spec;

use std::{
    collections::{BTreeMap, HashMap},
    io::Read as _,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

pub use generate::{prefixes as generated_prefixes, render as render_generated};
pub use probe::{DROP_WAIT, OPEN_WAIT};
pub use report::{Mismatch, MutationRun, ProbeResult, Report, Run};
pub use spec::{
    DOCUMENTATION_RANGES, Generated, Host, Interface, Mutation, Network, NetworkKind, Outcome,
    PolicySource, Probe, ProbeKind, ProbeProto, Proxy, RandomPrefixes, Route, Scenario,
    ScenarioError, Service, examples_dir,
};

use crate::{fwcli, lab::Lab, netns::Netns};

/// `tests/scenarios/`.
#[must_use]
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// Every scenario file (`tests/scenarios/*.toml`), sorted.
#[must_use]
pub fn files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tests/scenarios/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

/// The scenario `tests/scenarios/NAME.toml`.
///
/// # Panics
/// The file is missing or wrong; the message names the file, the line and
/// the fix.
#[must_use]
pub fn load(name: &str) -> Scenario {
    let path = dir().join(format!("{name}.toml"));
    Scenario::from_file(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// A host fw runs on, as loaded.
struct Guarded {
    host: String,
    ns: String,
    pin: String,
    iptables: bool,
}

impl Scenario {
    /// The same scenario with `host` running policy `policy` (a name of
    /// its `[policy.…]` tables) and no mutations: to see what the suite
    /// says about a wrong policy.
    ///
    /// # Panics
    /// No such host or policy.
    #[must_use]
    pub fn with_policy(mut self, host: &str, policy: &str) -> Self {
        assert!(self.policies.contains_key(policy), "no policy {policy}");
        let h = self
            .hosts
            .iter_mut()
            .find(|h| h.name == host)
            .unwrap_or_else(|| panic!("no host {host}"));
        assert!(h.policy.is_some(), "{host} is not guarded");
        h.policy = Some(policy.to_string());
        self.mutations.clear();
        self
    }

    /// Write the generated set files and the inline policies with `write`
    /// (name, text → path); returns every policy's path by name.
    fn write_files(&self, write: impl Fn(&str, &str) -> String) -> BTreeMap<String, String> {
        let shown = self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        for g in &self.generated {
            write(&g.file, &generate::render(g, &shown));
        }
        self.policies
            .iter()
            .map(|(name, src)| {
                let path = match src {
                    PolicySource::Example(p) | PolicySource::File(p) => p.display().to_string(),
                    PolicySource::Inline(text) => write(&format!("{name}.toml"), text),
                };
                (name.clone(), path)
            })
            .collect()
    }

    /// `fw-user check` on every policy of the scenario (mutations too),
    /// with its generated files beside it; no privileges needed.
    ///
    /// # Errors
    /// Every policy `fw-user` refuses, with its message.
    pub fn check_policies(&self) -> Result<(), String> {
        let work = std::env::temp_dir().join(crate::unique("fw-scenario-check-"));
        std::fs::create_dir_all(&work).expect("scratch directory");
        let files = self.write_files(|name, text| {
            let p = work.join(name);
            std::fs::write(&p, text).expect("write scratch file");
            p.display().to_string()
        });
        let mut errors = Vec::new();
        for (name, path) in &files {
            let out = std::process::Command::new(fwcli::binary())
                .args(["check", "--force", path])
                .output()
                .expect("run fw-user check");
            if !out.status.success() {
                errors.push(format!(
                    "{}: policy `{name}`: fw-user check refuses it:\n{}{}",
                    self.path.display(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let _ = std::fs::remove_dir_all(&work);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }

    /// Build the scenario, load its policies, send every probe; then, for
    /// each mutation, load the wrong policy, send every probe again and
    /// put the right one back. Everything is removed at the end (also on
    /// a panic: the lab's namespaces and bpffs go with it).
    ///
    /// # Panics
    /// The lab cannot be built or `fw-user load` refuses a policy (the
    /// message names the scenario, the host and the policy); a probe that
    /// does not get its expected outcome is not a panic but an entry of
    /// the report.
    #[must_use]
    pub fn run(&self) -> Report {
        let started = Instant::now();
        let mut lab = Lab::new();
        for n in &self.networks {
            lab.lan(&n.name);
        }
        for h in &self.hosts {
            for i in &h.interfaces {
                let addrs: Vec<String> = i.addresses.iter().map(ToString::to_string).collect();
                let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
                lab.plug(&h.name, &i.name, &i.network, &addrs);
            }
            self.configure_routing(lab.host(&h.name), h);
        }
        let built = started.elapsed();
        let files = self.write_files(|name, text| lab.file(name, text));
        let services: Vec<service::Services> = self
            .hosts
            .iter()
            .filter(|h| !h.services.is_empty() || !h.proxies.is_empty())
            .map(|h| {
                service::Services::start(&h.name, &lab.host(&h.name).name, &h.services, &h.proxies)
            })
            .collect();
        let loads: Vec<(&Host, &str)> = self
            .hosts
            .iter()
            .filter_map(|h| h.policy.as_ref().map(|p| (h, files[p].as_str())))
            .collect();
        let loading = Instant::now();
        let outputs = self.load_policies(&lab, &loads);
        let loading = loading.elapsed();
        let guarded: Vec<Guarded> = loads
            .iter()
            .zip(&outputs)
            .map(|((h, _), out)| Guarded {
                host: h.name.clone(),
                ns: lab.host(&h.name).name.clone(),
                pin: pin_path(&lab, &h.name),
                iptables: out.contains("iptables backend"),
            })
            .collect();
        let backend = match (
            guarded.iter().any(|g| g.iptables),
            guarded.iter().all(|g| g.iptables),
        ) {
            (false, _) => "xdp",
            (true, true) => "iptables",
            (true, false) => "mixed xdp and iptables",
        };
        // What `fw-user load` said about the backend it chose (a fallback
        // to iptables says why).
        let notes: Vec<String> = loads
            .iter()
            .zip(&outputs)
            .flat_map(|((h, _), out)| {
                out.lines()
                    .filter(|l| l.contains("cannot run here") || l.contains("falling back"))
                    .map(|l| format!("{}: {l}", h.name))
                    .collect::<Vec<_>>()
            })
            .collect();
        // Duplicate address detection of the link-local addresses ran
        // while the policies loaded; it is over by now, or nearly.
        for h in &self.hosts {
            wait_ipv6_ready(lab.host(&h.name));
        }
        let setup = started.elapsed();

        let baseline = self.send_probes(&lab);
        let mut mutations = Vec::new();
        for m in &self.mutations {
            let host = self.host(&m.host);
            let own = host.policy.as_ref().expect("checked: guarded");
            self.load_policies(&lab, &[(host, files[&m.policy].as_str())]);
            // Connections the previous run's policies let through must
            // not pass as established now.
            flush_conntrack(&guarded);
            let run = self.send_probes(&lab);
            self.load_policies(&lab, &[(host, files[own].as_str())]);
            mutations.push(MutationRun {
                declared: m
                    .declared(&self.probes)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                mutation: m.clone(),
                run,
            });
        }
        drop(services);
        Report {
            scenario: self.name.clone(),
            file: self.path.clone(),
            backend: backend.to_string(),
            notes,
            setup,
            building: built,
            loading,
            baseline,
            mutations,
        }
    }

    fn configure_routing(&self, ns: &Netns, h: &Host) {
        for r in &h.routes {
            let mut args: Vec<&str> = Vec::new();
            if r.via.is_some_and(|v| v.is_ipv6()) || r.to.contains(':') {
                args.push("-6");
            }
            args.extend(["route", "add", r.to.as_str()]);
            let via = r.via.map(|v| v.to_string());
            if let Some(v) = &via {
                args.extend(["via", v.as_str()]);
            }
            if let Some(d) = &r.dev {
                args.extend(["dev", d.as_str()]);
            }
            ns.ip(&args);
        }
        // Reverse-path filtering off, as the kernel's default has it, so
        // that a distribution's sysctl defaults cannot change what a
        // scenario means: an address arriving on the "wrong" interface is
        // for the firewall to judge (web-db does exactly that).
        let mut settings: Vec<(String, &str)> = std::iter::once("all")
            .chain(h.interfaces.iter().map(|i| i.name.as_str()))
            .map(|i| (format!("/proc/sys/net/ipv4/conf/{i}/rp_filter"), "0"))
            .collect();
        if h.ip_forward {
            settings.push(("/proc/sys/net/ipv4/ip_forward".into(), "1"));
            settings.push(("/proc/sys/net/ipv6/conf/all/forwarding".into(), "1"));
        }
        let file = self.path.display().to_string();
        let host = h.name.clone();
        // /proc/sys/net belongs to the namespace of the thread that opens
        // it.
        ns.run(move || {
            for (f, v) in settings {
                std::fs::write(&f, v).unwrap_or_else(|e| panic!("{file}: host {host}: {f}: {e}"));
            }
        });
    }

    /// `fw-user load` for each (host, policy file), all at once: loading
    /// the eBPF programs is most of a scenario's setup time.
    fn load_policies(&self, lab: &Lab, loads: &[(&Host, &str)]) -> Vec<String> {
        let handles: Vec<_> = loads
            .iter()
            .map(|(h, file)| {
                let ns = lab.host(&h.name).name.clone();
                let mut args = vec![
                    "load".to_string(),
                    (*file).to_string(),
                    "--pin-path".into(),
                    pin_path(lab, &h.name),
                    "--detach".into(),
                ];
                for i in &h.guard {
                    args.extend(["--iface".to_string(), i.clone()]);
                }
                args.extend(fwcli::backend_args());
                thread::spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    fwcli::fw_user(&Netns::existing(&ns), &args)
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(loads)
            .map(|(t, (h, file))| {
                let r = t.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
                assert!(
                    r.ok,
                    "{}: host {}: fw-user load {file} failed:\n{}{}",
                    self.path.display(),
                    h.name,
                    r.stdout,
                    r.stderr
                );
                r.stdout
            })
            .collect()
    }

    /// Every probe, at once, except that probes from the same host,
    /// protocol, family and fixed source port take turns (they would share
    /// a socket address).
    fn send_probes(&self, lab: &Lab) -> Run {
        let started = Instant::now();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut by_port: HashMap<(&str, bool, bool, u16), usize> = HashMap::new();
        for (i, p) in self.probes.iter().enumerate() {
            match p.sport {
                Some(sp) => {
                    let key = (
                        p.from.as_str(),
                        p.proto == ProbeProto::Udp,
                        p.to.is_ipv6(),
                        sp,
                    );
                    let g = *by_port.entry(key).or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                    groups[g].push(i);
                }
                None => groups.push(vec![i]),
            }
        }
        let handles: Vec<_> = groups
            .into_iter()
            .map(|g| {
                let probes: Vec<Probe> = g.iter().map(|&i| self.probes[i].clone()).collect();
                let ns = lab.host(&probes[0].from).name.clone();
                let handle = Netns::existing(&ns).spawn(move || {
                    probes
                        .iter()
                        .map(|p| {
                            let t = Instant::now();
                            let got = probe::send(&ns, p);
                            (got, t.elapsed())
                        })
                        .collect::<Vec<_>>()
                });
                (g, handle)
            })
            .collect();
        let mut results: Vec<Option<ProbeResult>> = vec![None; self.probes.len()];
        for (g, h) in handles {
            let outcomes = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            for (i, (got, elapsed)) in g.into_iter().zip(outcomes) {
                results[i] = Some(ProbeResult {
                    probe: self.probes[i].clone(),
                    got,
                    elapsed,
                });
            }
        }
        Run {
            results: results
                .into_iter()
                .map(|r| r.expect("every probe ran"))
                .collect(),
            elapsed: started.elapsed(),
        }
    }
}

fn pin_path(lab: &Lab, host: &str) -> String {
    lab.bpffs.dir.join(host).display().to_string()
}

/// Link-local addresses start tentative (DAD); wait until the host can
/// use IPv6 (its global addresses are added without DAD).
fn wait_ipv6_ready(ns: &Netns) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let out = ns.exec(&["ip", "-6", "addr", "show", "tentative"]);
        if out.stdout.is_empty() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Empty every guarded host's connection table.
fn flush_conntrack(guarded: &[Guarded]) {
    for g in guarded {
        let ns = Netns::existing(&g.ns);
        if g.iptables {
            let host = g.host.clone();
            ns.run(move || {
                flush_kernel_conntrack()
                    .unwrap_or_else(|e| panic!("host {host}: flush the kernel's conntrack: {e}"));
            });
        } else {
            fwcli::fw_user_ok(&ns, &["conntrack", "flush", "--pin-path", &g.pin]);
        }
    }
}

/// Empty the kernel's connection tracking table of the calling thread's
/// namespace, as `conntrack -F` does: a ctnetlink `IPCTNL_MSG_CT_DELETE`
/// without a tuple, for every family. The iptables backend's connections
/// live there.
fn flush_kernel_conntrack() -> std::io::Result<()> {
    const NFNL_SUBSYS_CTNETLINK: u16 = 1;
    const IPCTNL_MSG_CT_DELETE: u16 = 2;
    #[expect(clippy::cast_possible_truncation, reason = "netlink flag constants")]
    const FLAGS: u16 = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    let sock = socket2::Socket::new(
        socket2::Domain::from(libc::AF_NETLINK),
        socket2::Type::RAW,
        Some(socket2::Protocol::from(libc::NETLINK_NETFILTER)),
    )?;
    // struct nlmsghdr, then struct nfgenmsg (AF_UNSPEC, version 0, res_id 0).
    let mut msg = Vec::with_capacity(20);
    msg.extend_from_slice(&20u32.to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE).to_ne_bytes());
    msg.extend_from_slice(&FLAGS.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&[0, 0, 0, 0]);
    sock.send(&msg)?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 256];
    let n = (&sock).read(&mut buf)?;
    // The answer is an NLMSG_ERROR whose error code (0: done) follows the
    // 16-byte header.
    let code = buf
        .get(16..20)
        .filter(|_| n >= 20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| std::io::Error::other("short netlink answer"))?;
    match code {
        0 => Ok(()),
        // No connection tracking in this namespace: nothing to flush.
        c if -c == libc::ENOENT => Ok(()),
        c => Err(std::io::Error::from_raw_os_error(-c)),
    }
}

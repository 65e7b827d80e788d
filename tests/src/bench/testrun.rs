//! In-kernel cost per packet: each arm's XDP program run by
//! `BPF_PROG_TEST_RUN` on one frame per packet class, timed by the kernel
//! (the duration it reports is the time of its loop divided by `repeat`).
//!
//! Arms:
//! - `fw`: fw's `fw_ingress` with private maps (`Datapath`), the workload
//!   policy of `policies` installed from its file as `fw-user load` reads
//!   it;
//! - `xdp-pass`, `xdp-drop`: two-instruction programs returning PASS and
//!   DROP, loaded by hand (`raw`): the floor, and the baseline every
//!   figure is divided by;
//! - `xdp-filter`: the program Debian ships for xdp-filter, maps filled as
//!   its CLI would, on the classes it can express (`xdpfilter`).
//!
//! Every run's return code is checked against the class's verdict, and
//! fw's verdict reason (the counter that moved) once per class before the
//! timing: a wrong verdict stops the bench, it never becomes a figure.
//!
//! The measuring thread is our own: `Datapath` moves the calling thread
//! into its namespace (setns moves one thread only), and the bench's main
//! thread must stay in the root namespace for the sections after this one.

mod xdpfilter;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    path::PathBuf,
};

use fw_common::{
    conntrack::tcp_flags::{ACK, SYN},
    counters::Counter,
};
use ipnet::IpNet;

use self::xdpfilter::XdpFilter;
use super::{Depth, Measurement, Section, Unit, bpf, policies, rule_counts, set_sizes};
use crate::{
    datapath::{Datapath, XDP_DROP, XDP_PASS},
    packet::{self, Segment, Side, TcpConversation, Way},
};

/// Measure this section at `depth`.
#[must_use]
pub fn run(depth: Depth) -> Vec<Measurement> {
    let worker = std::thread::Builder::new()
        .name("bench-kernel".into())
        .spawn(move || measure(depth))
        .expect("spawn the measuring thread");
    match worker.join() {
        Ok(m) => m,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// How hard to measure.
struct Effort {
    /// `repeat` of one `BPF_PROG_TEST_RUN`.
    repeat: u32,
    /// Runs per figure; the figure is their median.
    runs: usize,
    /// Distinct flows for `new-syn-allowed` (one single run each).
    flows: u16,
}

const fn effort(depth: Depth) -> Effort {
    match depth {
        Depth::Quick => Effort {
            repeat: 10_000,
            runs: 3,
            flows: 10_000,
        },
        Depth::Full => Effort {
            repeat: 500_000,
            runs: 5,
            flows: 20_000,
        },
    }
}

/// Each connection table's size: room for every flow `new-syn-allowed`
/// opens with slack, so no SYN meets a full table (that would time
/// `DropTableFull`, or LRU eviction, instead of an insertion).
const TABLE_ENTRIES: u32 = 1 << 17;

/// The policy a fresh `Datapath` starts with, replaced by the workload.
const BOOT_POLICY: &str = "[defaults]\ninput = \"drop\"\noutput = \"accept\"\n";

/// The rule count of the combined row of a Full run.
const COMBINED_RULES: u64 = 10_000;
const COMBINED_SET: u64 = 1_000_000;

/// The packet classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Established,
    NewSynAllowed,
    NewSynDenied,
    Blocklisted,
    AckNoState,
    Ipv6ExtHeaders,
}

impl Class {
    const ALL: [Self; 6] = [
        Self::Established,
        Self::NewSynAllowed,
        Self::NewSynDenied,
        Self::Blocklisted,
        Self::AckNoState,
        Self::Ipv6ExtHeaders,
    ];

    const fn name(self) -> &'static str {
        match self {
            Self::Established => "established",
            Self::NewSynAllowed => "new-syn-allowed",
            Self::NewSynDenied => "new-syn-denied",
            Self::Blocklisted => "blocklisted",
            Self::AckNoState => "ack-no-state",
            Self::Ipv6ExtHeaders => "ipv6-ext-headers",
        }
    }

    /// The XDP action the policy asks for.
    const fn verdict(self) -> u32 {
        match self {
            Self::Established | Self::NewSynAllowed => XDP_PASS,
            _ => XDP_DROP,
        }
    }

    /// Why fw decides so: the counter its verdict moves.
    const fn reason(self) -> Counter {
        match self {
            Self::Established => Counter::AcceptEstablished,
            Self::NewSynAllowed => Counter::AcceptRule,
            Self::NewSynDenied | Self::Ipv6ExtHeaders => Counter::DropDefault,
            Self::Blocklisted => Counter::DropRule,
            Self::AckNoState => Counter::DropInvalid,
        }
    }

    /// What the figure means, for the reader of the report.
    fn note(self, flows: u16) -> Option<String> {
        match self {
            Self::NewSynAllowed => Some(format!(
                "each SYN creates a conntrack entry, so no repeat: one run per packet over {flows} distinct flows, median of the kernel's per-run durations (whole ns, timer overhead included); xdp-pass measured the same way on the same frames"
            )),
            Self::Ipv6ExtHeaders => Some(
                "IPv6 SYN with hop-by-hop and destination-options headers to a port no rule names: both headers walked, then the default drop (the workload has no IPv6 rule)"
                    .into(),
            ),
            Self::NewSynDenied => {
                Some("SYN to a port no rule names: the default drop after the whole rule set".into())
            }
            Self::AckNoState => Some("bare ACK of no tracked flow: dropped as INVALID".into()),
            Self::Established | Self::Blocklisted => None,
        }
    }
}

/// What one class is run on.
enum Frames {
    /// One frame, `repeat` times per run.
    Repeat(Vec<u8>),
    /// One single run per frame (each leaves state behind).
    Each(Vec<Vec<u8>>),
}

/// Ports of the per-class probes (the client side), distinct so that no
/// class sees another's state.
mod sport {
    pub const ESTABLISHED: u16 = 40_000;
    pub const DENIED: u16 = 40_001;
    pub const LISTED: u16 = 40_002;
    pub const ACK: u16 = 40_003;
    pub const V6: u16 = 40_004;
    /// `new-syn-allowed`'s checking probe; its timed flows start above.
    pub const NEW_PROBE: u16 = 9_999;
    pub const NEW_FIRST: u16 = 10_000;
}

fn syn() -> Segment {
    Segment {
        seq: 1_000,
        window: 64_240,
        flags: SYN,
        mss: Some(1460),
        ..Segment::default()
    }
}

fn inbound(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, seg: &Segment) -> Vec<u8> {
    packet::tcp_segment(
        Way::In,
        SocketAddr::new(src, sport),
        SocketAddr::new(dst, dport),
        seg,
    )
}

/// The frames of the classes other than `established` (which needs a
/// handshake through the datapath first), for a policy of `rules` rules.
fn stateless_frames(class: Class, rules: u64, flows: u16) -> Frames {
    let (src, port) = policies::allowed_probe(rules);
    let server = IpAddr::V4(policies::SERVER);
    let src = IpAddr::V4(src);
    match class {
        Class::Established => unreachable!("built by a handshake"),
        Class::NewSynAllowed => Frames::Each(
            (0..flows)
                .map(|i| inbound(src, sport::NEW_FIRST + i, server, port, &syn()))
                .collect(),
        ),
        Class::NewSynDenied => Frames::Repeat(inbound(
            src,
            sport::DENIED,
            server,
            policies::DENIED_PORT,
            &syn(),
        )),
        Class::Blocklisted => Frames::Repeat(inbound(
            IpAddr::V4(policies::LISTED),
            sport::LISTED,
            server,
            port,
            &syn(),
        )),
        Class::AckNoState => Frames::Repeat(inbound(
            src,
            sport::ACK,
            server,
            port,
            &Segment {
                seq: 5_000,
                ack: 7_000,
                window: 64_240,
                flags: ACK,
                ..Segment::default()
            },
        )),
        Class::Ipv6ExtHeaders => {
            let plain = inbound(
                IpAddr::V6(packet::CLIENT6),
                sport::V6,
                IpAddr::V6(packet::SERVER6),
                policies::DENIED_PORT,
                &syn(),
            );
            // Hop-by-hop (0), then destination options (60).
            Frames::Repeat(packet::with_ipv6_ext_headers(&plain, &[0, 60]))
        }
    }
}

/// The conversation `established` times: the allowed probe's flow.
fn conversation(rules: u64) -> TcpConversation {
    let (src, port) = policies::allowed_probe(rules);
    let mut conv = TcpConversation::new(false, port, sport::ESTABLISHED, 1_000, 2_000);
    conv.remote = SocketAddr::new(IpAddr::V4(src), sport::ESTABLISHED);
    conv
}

fn median(mut xs: Vec<f64>) -> f64 {
    assert!(!xs.is_empty(), "a median of nothing");
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        f64::midpoint(xs[n / 2 - 1], xs[n / 2])
    }
}

/// ns per packet of `prog` on `frames`, every run's verdict checked.
fn time(prog: BorrowedFd<'_>, frames: &Frames, want: u32, e: &Effort, what: &str) -> f64 {
    let check = |r: bpf::Run| {
        assert!(
            r.retval == want,
            "{what}: returned {} where the class expects {want} (1 = DROP, 2 = PASS): a wrong verdict is a bench failure, not a figure",
            r.retval
        );
        f64::from(r.duration_ns)
    };
    let run = |frame: &[u8], repeat: u32| {
        bpf::test_run(prog, frame, repeat)
            .unwrap_or_else(|err| panic!("{what}: BPF_PROG_TEST_RUN: {err}"))
    };
    match frames {
        Frames::Repeat(f) => median((0..e.runs).map(|_| check(run(f, e.repeat))).collect()),
        Frames::Each(fs) => median(fs.iter().map(|f| check(run(f, 1))).collect()),
    }
}

fn row(
    arm: &str,
    class: Class,
    rules: Option<u64>,
    set_size: Option<u64>,
    value: f64,
    note: Option<String>,
) -> Measurement {
    Measurement {
        section: Section::Kernel,
        arm: arm.into(),
        case: class.name().into(),
        rules,
        set_size,
        value,
        unit: Unit::NsPerPacket,
        baseline: (arm != "xdp-pass").then(|| "xdp-pass".into()),
        note,
    }
}

fn join_notes(a: Option<String>, b: Option<&str>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, None) => a,
        (None, Some(b)) => Some(b.into()),
    }
}

/// Keep the measuring thread on one CPU: a migration in the middle of a
/// run would show up in its duration.
fn pin_to_last_cpu() {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpus - 1).is_ok()
        && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
    {
        eprintln!("kernel: measuring on CPU {}", cpus - 1);
    }
}

/// A directory of ours for the workload files, removed at the end.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One point of the curves: a policy of `rules` rules and a blocklist of
/// `set_size` prefixes (0: none).
#[derive(Clone, Copy)]
struct Point {
    rules: u64,
    set_size: u64,
}

impl Point {
    const fn set(self) -> Option<u64> {
        if self.set_size == 0 {
            None
        } else {
            Some(self.set_size)
        }
    }

    fn classes(self) -> impl Iterator<Item = Class> {
        Class::ALL
            .into_iter()
            .filter(move |c| *c != Class::Blocklisted || self.set_size > 0)
    }
}

fn measure(depth: Depth) -> Vec<Measurement> {
    pin_to_last_cpu();
    let e = effort(depth);
    let work = WorkDir(std::env::temp_dir().join(crate::unique("fw-bench-kernel-")));
    let mut out = baselines(&e);

    let mut accepted = Vec::new();
    let mut refused = BTreeMap::new();
    for &rules in rule_counts(depth) {
        let p = Point { rules, set_size: 0 };
        out.extend(xdp_filter_arm(p, &e));
        match fw_arm(p, &e, &work, None) {
            Ok(m) => {
                out.extend(m);
                accepted.push(rules);
            }
            Err(err) => {
                eprintln!("fw: {rules} rules: {err}");
                refused.insert(rules, err);
            }
        }
    }
    let Some(&largest) = accepted.iter().max() else {
        eprintln!("fw: no rule count compiled; blocklist sizes not measured");
        return out;
    };
    let fallback = refused
        .iter()
        .next_back()
        .filter(|(r, _)| **r > largest)
        .map(|(r, err)| {
            let first = err.lines().next().unwrap_or_default();
            format!("{largest} rules: the largest rule count fw accepted ({r} refused: {first})")
        });
    let mut measured_combined = false;
    for &set_size in set_sizes(depth) {
        let p = Point {
            rules: largest,
            set_size,
        };
        out.extend(xdp_filter_arm(p, &e));
        match fw_arm(p, &e, &work, fallback.as_deref()) {
            Ok(m) => out.extend(m),
            Err(err) => eprintln!("fw: {largest} rules + {set_size} set: {err}"),
        }
        measured_combined |= largest == COMBINED_RULES && set_size == COMBINED_SET;
    }
    drift_check(&out, &e);
    if depth == Depth::Full && !measured_combined {
        if let Some(err) = refused.get(&COMBINED_RULES) {
            let first = err.lines().next().unwrap_or_default();
            eprintln!(
                "fw: {COMBINED_RULES} rules + {COMBINED_SET} set: not measured, fw refused {COMBINED_RULES} rules: {first}"
            );
        } else {
            let p = Point {
                rules: COMBINED_RULES,
                set_size: COMBINED_SET,
            };
            match fw_arm(p, &e, &work, None) {
                Ok(m) => out.extend(m),
                Err(err) => eprintln!("fw: {COMBINED_RULES} rules + {COMBINED_SET} set: {err}"),
            }
        }
    }
    out
}

/// `xdp-pass` and `xdp-drop` on every class's frames (those of the
/// 1-rule workload: an empty program does not read them). Measured once:
/// they depend on no policy.
fn baselines(e: &Effort) -> Vec<Measurement> {
    let pass = bpf::load_verdict(XDP_PASS, "bench_xdp_pass")
        .unwrap_or_else(|err| panic!("load the empty XDP_PASS program: {err}"));
    let drop = bpf::load_verdict(XDP_DROP, "bench_xdp_drop")
        .unwrap_or_else(|err| panic!("load the empty XDP_DROP program: {err}"));
    let mut out = Vec::new();
    for class in Class::ALL {
        let frames = match class {
            Class::Established => Frames::Repeat({
                let conv = conversation(1);
                conv.segment(Side::Remote, &conv.next_segment(Side::Remote, ACK, 0))
            }),
            c => stateless_frames(c, 1, e.flows),
        };
        let note = matches!(frames, Frames::Each(_)).then(|| {
            format!(
                "one run per packet over {} frames (as fw's new-syn-allowed), median",
                e.flows
            )
        });
        for (arm, fd, want) in [("xdp-pass", &pass, XDP_PASS), ("xdp-drop", &drop, XDP_DROP)] {
            let fd: &OwnedFd = fd;
            let ns = time(
                fd.as_fd(),
                &frames,
                want,
                e,
                &format!("{arm} {}", class.name()),
            );
            eprintln!("kernel: {arm:<10} {:<17} {ns:>7.1} ns/pkt", class.name());
            out.push(row(arm, class, None, None, ns, note.clone()));
        }
    }
    out
}

/// The baselines are measured once, at the start: time `xdp-pass` again
/// now and say how far it moved, so a reader knows how much of a ratio
/// may be the machine drifting rather than the program.
fn drift_check(out: &[Measurement], e: &Effort) {
    let Some(start) = out
        .iter()
        .find(|m| m.arm == "xdp-pass" && m.case == Class::Established.name())
    else {
        return;
    };
    let pass = bpf::load_verdict(XDP_PASS, "bench_xdp_pass")
        .unwrap_or_else(|err| panic!("load the empty XDP_PASS program: {err}"));
    let conv = conversation(1);
    let frame = conv.segment(Side::Remote, &conv.next_segment(Side::Remote, ACK, 0));
    let now = time(
        pass.as_fd(),
        &Frames::Repeat(frame),
        XDP_PASS,
        e,
        "xdp-pass established (drift check)",
    );
    eprintln!(
        "kernel: xdp-pass established: {:.1} ns/pkt at the start, {now:.1} now ({:+.0}%)",
        start.value,
        (now / start.value - 1.0) * 100.0
    );
}

/// fw on every class at `p`; `Err` with the loader's message when fw
/// refuses the policy.
fn fw_arm(
    p: Point,
    e: &Effort,
    work: &WorkDir,
    extra_note: Option<&str>,
) -> Result<Vec<Measurement>, String> {
    let dir = work.0.join(format!("r{}-s{}", p.rules, p.set_size));
    let t0 = std::time::Instant::now();
    let w = policies::write(&dir, p.rules, p.set_size)
        .map_err(|err| format!("write the workload into {}: {err}", dir.display()))?;
    let mut dp = Datapath::with_table_size(BOOT_POLICY, TABLE_ENTRIES);
    dp.install_file(&w.policy)?;
    eprintln!(
        "kernel: fw {} rules, set {}: installed in {:.1} s",
        p.rules,
        p.set_size,
        t0.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = Vec::new();
    for class in p.classes() {
        let frames = fw_frames(&mut dp, class, p.rules, e.flows);
        let what = format!("fw {} rules, set {}: {}", p.rules, p.set_size, class.name());
        let ns = time(
            dp.ingress_program().fd().expect("loaded").as_fd(),
            &frames,
            class.verdict(),
            e,
            &what,
        );
        eprintln!(
            "kernel: fw         {:<17} {ns:>7.1} ns/pkt  ({} rules, set {})",
            class.name(),
            p.rules,
            p.set_size
        );
        out.push(row(
            "fw",
            class,
            Some(p.rules),
            p.set(),
            ns,
            join_notes(class.note(e.flows), extra_note),
        ));
    }
    Ok(out)
}

/// The frames of `class` for fw, after checking once through the counting
/// path (`Datapath::ingress`) that fw decides for the class's reason.
fn fw_frames(dp: &mut Datapath, class: Class, rules: u64, flows: u16) -> Frames {
    let expect = |dp: &mut Datapath, frame: &[u8], what: &str| {
        let got = dp.ingress(frame).counter;
        assert!(
            got == class.reason(),
            "fw, {rules} rules, {}: {what} counted {got:?}, expected {:?}: the datapath does not decide this class as the bench assumes",
            class.name(),
            class.reason()
        );
    };
    match class {
        Class::Established => {
            let mut conv = conversation(rules);
            let c = dp.send_tcp(&mut conv, Side::Remote, SYN, 0);
            assert_eq!(c, Counter::AcceptRule, "fw, {rules} rules: the opening SYN");
            let c = dp.send_tcp(&mut conv, Side::Local, SYN | ACK, 0);
            assert!(!c.is_drop(), "fw, {rules} rules: the SYN-ACK out: {c:?}");
            dp.send_tcp(&mut conv, Side::Remote, ACK, 0);
            let frame = conv.segment(Side::Remote, &conv.next_segment(Side::Remote, ACK, 0));
            expect(dp, &frame, "an ACK of the open flow");
            Frames::Repeat(frame)
        }
        Class::NewSynAllowed => {
            let (src, port) = policies::allowed_probe(rules);
            let probe = inbound(
                IpAddr::V4(src),
                sport::NEW_PROBE,
                IpAddr::V4(policies::SERVER),
                port,
                &syn(),
            );
            expect(dp, &probe, "a SYN of a new flow");
            stateless_frames(class, rules, flows)
        }
        c => {
            let frames = stateless_frames(c, rules, flows);
            if let Frames::Repeat(f) = &frames {
                expect(dp, f, "the probe");
            }
            frames
        }
    }
}

/// xdp-filter at `p`, on the classes it can express: with no blocklist,
/// the rules' destination ports under a default drop (`--policy deny`,
/// `xdp-filter port P --mode dst --proto tcp` per rule); with one, the
/// blocklist's addresses under a default pass (`--policy allow`,
/// `xdp-filter ip A --mode src`), timed on `blocklisted` only.
fn xdp_filter_arm(p: Point, e: &Effort) -> Vec<Measurement> {
    let stateless = "xdp-filter keeps no state and pairs no address with a port: it passes any TCP packet to a listed port";
    let (filter, classes, note) = if p.set_size == 0 {
        let mut f = match XdpFilter::load(xdpfilter::DefaultVerdict::Drop) {
            Ok(f) => f,
            Err(err) => {
                eprintln!("xdp-filter: not measured: {err}");
                return Vec::new();
            }
        };
        f.tcp_dst_ports((0..p.rules).map(policies::rule_port));
        eprintln!(
            "xdp-filter: ack-no-state not measured ({stateless}, so it would pass this ACK the policy drops)"
        );
        (
            f,
            vec![
                Class::Established,
                Class::NewSynAllowed,
                Class::NewSynDenied,
                Class::Ipv6ExtHeaders,
            ],
            format!(
                "the {} rules as destination ports in a default-drop filter; {stateless}",
                p.rules
            ),
        )
    } else {
        let mut f = match XdpFilter::load(xdpfilter::DefaultVerdict::Pass) {
            Ok(f) => f,
            Err(err) => {
                eprintln!("xdp-filter: not measured: {err}");
                return Vec::new();
            }
        };
        // It matches exact addresses only: a /32 of each prefix's network
        // address stands in for the prefix, up to its map's capacity.
        let addrs = policies::blocklist(p.set_size)
            .into_iter()
            .filter_map(|n| match n {
                IpNet::V4(n) => Some(n.network()),
                IpNet::V6(_) => None,
            });
        let loaded = f.src_addresses(addrs);
        (
            f,
            vec![Class::Blocklisted],
            format!(
                "xdp-filter matches exact addresses, no prefixes, in a hash of at most {}: loaded {loaded} addresses (the listed source and the network addresses of the first prefixes) for a set of {}; its default passes everything else (no rules)",
                xdpfilter::IPV4_ENTRIES,
                p.set_size
            ),
        )
    };
    let mut out = Vec::new();
    for class in classes {
        let frames = match class {
            Class::Established => Frames::Repeat({
                let conv = conversation(p.rules);
                conv.segment(Side::Remote, &conv.next_segment(Side::Remote, ACK, 0))
            }),
            c => stateless_frames(c, p.rules, e.flows),
        };
        let what = format!(
            "xdp-filter {} rules, set {}: {}",
            p.rules,
            p.set_size,
            class.name()
        );
        let ns = time(filter.fd(), &frames, class.verdict(), e, &what);
        eprintln!(
            "kernel: xdp-filter {:<17} {ns:>7.1} ns/pkt  ({} rules, set {})",
            class.name(),
            p.rules,
            p.set_size
        );
        let class_note = matches!(frames, Frames::Each(_))
            .then(|| "one run per packet, as fw's and xdp-pass's new-syn-allowed");
        out.push(row(
            "xdp-filter",
            class,
            Some(p.rules),
            p.set(),
            ns,
            join_notes(Some(note.clone()), class_note),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert!((median(vec![3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(vec![4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < f64::EPSILON);
    }

    #[test]
    fn new_syn_frames_are_distinct_flows() {
        let Frames::Each(fs) = stateless_frames(Class::NewSynAllowed, 10, 100) else {
            panic!("one frame per flow");
        };
        let distinct: std::collections::HashSet<_> = fs.iter().collect();
        assert_eq!(distinct.len(), 100);
    }

    #[test]
    fn probes_are_documentation_addresses() {
        let doc: [IpNet; 3] = [
            "192.0.2.0/24".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap(),
            "203.0.113.0/24".parse().unwrap(),
        ];
        let (src, _) = policies::allowed_probe(10_000);
        for a in [src, policies::LISTED, policies::SERVER] {
            assert!(doc.iter().any(|n| n.contains(&IpAddr::V4(a))), "{a}");
        }
    }
}

//! Real traffic over veth: a generator namespace floods 64-byte frames
//! (60 bytes plus the FCS a wire would add) into a server namespace, which
//! filters them with each arm in turn, every arm in fresh namespaces.
//!
//! - Generator: `BPF_PROG_RUN` in live-frame mode (what xdp-trafficgen
//!   does): a two-instruction `XDP_TX` program test-run with
//!   `BPF_F_TEST_XDP_LIVE_FRAMES` on the generator's veth transmits the
//!   frame for real into the server veth's receive ring, millions of times
//!   a second from one CPU (`xdp`).
//! - Receiver: the server veth's NAPI runs as a kernel thread pinned to
//!   the other CPU (`bed`), so the filter's whole cost is that thread's.
//! - Figures: packets per second the receiver processed (the veth's
//!   `rx_packets` delta over the flood's wall time; all of them dropped,
//!   checked), and CPU time per packet (the NAPI thread's run time from
//!   `/proc/PID/schedstat` divided by the same packets).
//! - Checks: the arm's own counter (fw's rule or default counter,
//!   xdp-filter's `XDP_DROP` count, the iptables rule, the nft counter) saw
//!   at least 99% of the packets, and the server stack's UDP/TCP counters
//!   moved by less than 1% of them (for XDP arms, IP's too): a filter that
//!   let the flood through is an error, not a figure.

mod arms;
mod bed;

use std::time::Duration;

use arms::{Arm, Filter, Size};
use bed::Bed;

use super::{Depth, Measurement, Section, Unit, policies};

/// What a flood carries and which path of the policy it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    /// UDP from 203.0.113.1 to the denied port: no rule matches (they are
    /// all TCP), the default drops it.
    Udp,
    /// TCP SYN from 203.0.113.1 to the denied port: every rule is walked
    /// (the source matches rule 0's), the default drops it.
    Syn,
    /// TCP SYN from the blocklisted `LISTED`: the blocklist rule drops it.
    Listed,
}

impl Flood {
    const fn case(self) -> &'static str {
        match self {
            Self::Udp => "udp-flood",
            Self::Syn => "syn-flood",
            Self::Listed => "blocklist-flood",
        }
    }

    /// The 60-byte frame (MAC addresses filled in by the bed).
    fn frame(self) -> Vec<u8> {
        use crate::packet::{Segment, Way, tcp_segment, udp_datagram};
        use fw_common::conntrack::tcp_flags::SYN;
        use std::net::SocketAddr;
        let dst = SocketAddr::from((policies::SERVER, policies::DENIED_PORT));
        let src = |ip| SocketAddr::from((ip, 40_000));
        let mut f = match self {
            // 42 bytes of headers, 18 of payload.
            Self::Udp => udp_datagram(Way::In, src(policies::rule_source(0)), dst, 18),
            Self::Syn | Self::Listed => {
                let from = if self == Self::Syn {
                    policies::rule_source(0)
                } else {
                    policies::LISTED
                };
                let seg = Segment {
                    seq: 1,
                    window: 64_240,
                    flags: SYN,
                    ..Segment::default()
                };
                tcp_segment(Way::In, src(from), dst, &seg)
            }
        };
        // Ethernet padding to the 60-byte minimum (IP's length excludes it).
        f.resize(60, 0);
        f
    }
}

/// Bounds of one flood.
struct Bounds {
    time: Duration,
    frames: u64,
    warmup: Duration,
}

const fn bounds(depth: Depth) -> Bounds {
    match depth {
        Depth::Quick => Bounds {
            time: Duration::from_millis(500),
            frames: 5_000_000,
            warmup: Duration::from_millis(50),
        },
        Depth::Full => Bounds {
            time: Duration::from_secs(2),
            frames: 20_000_000,
            warmup: Duration::from_millis(200),
        },
    }
}

/// What one flood measured.
struct Figures {
    pps: f64,
    ns_per_packet: f64,
    note: String,
}

/// Measure this section at `depth`.
#[must_use]
pub fn run(depth: Depth) -> Vec<Measurement> {
    let mut out = Vec::new();
    let mut failures = Vec::new();
    eprintln!(
        "traffic: live-frame XDP_TX generator on CPU 0, receiver NAPI thread on CPU {}",
        bed::receiver_cpu()
    );
    for arm in Arm::ALL {
        for (flood, size) in plan(arm, depth) {
            let label = label(arm, flood, size);
            eprint!("traffic: {label} ... ");
            match one(arm, flood, size, depth) {
                Ok(f) => {
                    eprintln!("{:.3} Mpps, {:.0} ns/pkt", f.pps / 1e6, f.ns_per_packet);
                    let (rules, set_size) = match size {
                        Size::Fixed => (None, None),
                        Size::Rules(n) => (Some(n), None),
                        Size::Set(n) => (None, Some(n)),
                    };
                    let m = |case: String, value, unit| Measurement {
                        section: Section::Traffic,
                        arm: arm.name().into(),
                        case,
                        rules,
                        set_size,
                        value,
                        unit,
                        baseline: Some(Arm::XdpDrop.name().into()),
                        note: Some(f.note.clone()),
                    };
                    out.push(m(flood.case().into(), f.pps, Unit::Pps));
                    out.push(m(
                        format!("{}-cpu", flood.case()),
                        f.ns_per_packet,
                        Unit::NsPerPacket,
                    ));
                }
                Err(e) => {
                    eprintln!("not measured: {e}");
                    failures.push(format!("{label}: {e}"));
                }
            }
        }
    }
    if !failures.is_empty() {
        eprintln!("traffic: {} floods not measured:", failures.len());
        for f in &failures {
            eprintln!("  {f}");
        }
    }
    out
}

fn label(arm: Arm, flood: Flood, size: Size) -> String {
    let size = match size {
        Size::Fixed => String::new(),
        Size::Rules(n) => format!(", {n} rules"),
        Size::Set(n) => format!(", set of {n}"),
    };
    format!("{} {}{size}", arm.name(), flood.case())
}

/// The floods and sizes `arm` runs: the per-rule arms at every rule count
/// for the UDP and SYN floods, the set arms at every set size for the
/// blocklist flood, the single-rule arms once for every flood.
fn plan(arm: Arm, depth: Depth) -> Vec<(Flood, Size)> {
    let rules = super::rule_counts(depth);
    let sets = super::set_sizes(depth);
    let mut p = Vec::new();
    match arm {
        Arm::None | Arm::XdpDrop | Arm::XdpFilter | Arm::IptablesRaw => {
            for f in [Flood::Udp, Flood::Syn, Flood::Listed] {
                p.push((f, Size::Fixed));
            }
        }
        Arm::Fw | Arm::Iptables | Arm::Nft => {
            for f in [Flood::Udp, Flood::Syn] {
                p.extend(rules.iter().map(|&n| (f, Size::Rules(n))));
            }
            if arm == Arm::Fw {
                p.extend(sets.iter().map(|&n| (Flood::Listed, Size::Set(n))));
            }
        }
        Arm::IptablesIpset | Arm::NftSet => {
            p.extend(sets.iter().map(|&n| (Flood::Listed, Size::Set(n))));
        }
    }
    p
}

/// One flood against one arm, in a bed of its own.
fn one(arm: Arm, flood: Flood, size: Size, depth: Depth) -> Result<Figures, String> {
    let mut bed = Bed::new()?;
    let filter = arms::install(&mut bed, arm, size, flood)?;
    let result = measure(&bed, &filter, arm, flood, depth);
    filter.remove(&bed);
    result.map(|mut f| {
        f.note = format!("{}; {}", filter.what, f.note);
        f
    })
}

/// Stack counters that move when a packet got past the filter to UDP or
/// TCP.
const L4_SEEN: [&str; 4] = [
    "Udp.InDatagrams",
    "Udp.NoPorts",
    "Udp.InErrors",
    "Tcp.InSegs",
];

#[expect(
    clippy::cast_precision_loss,
    reason = "packet counts and nanoseconds far below 2^52"
)]
fn measure(
    bed: &Bed,
    filter: &Filter,
    arm: Arm,
    flood: Flood,
    depth: Depth,
) -> Result<Figures, String> {
    let b = bounds(depth);
    let frame = flood.frame();
    let napi = bed.napi_thread()?;
    // Warm up: caches, conntrack's and fw's first lookups, the page pool.
    bed.flood(&frame, b.frames, b.warmup)?;
    std::thread::sleep(Duration::from_millis(20));
    let (link0, snmp0, count0) = (bed.link()?, bed.snmp()?, filter.count(bed)?);
    let cpu = bed::receiver_cpu();
    let (run0, stat0) = (bed::run_time_ns(napi)?, bed::cpu_times(cpu)?);
    let sent = bed.flood(&frame, b.frames, b.time)?;
    // Let the receiver drain its ring (256 frames: microseconds).
    std::thread::sleep(Duration::from_millis(20));
    let (run1, stat1) = (bed::run_time_ns(napi)?, bed::cpu_times(cpu)?);
    let (link1, snmp1, count1) = (bed.link()?, bed.snmp()?, filter.count(bed)?);

    let rx = link1.rx_packets - link0.rx_packets;
    let overflow = link1.rx_dropped - link0.rx_dropped;
    if rx == 0 {
        return Err(format!(
            "no packet reached the server veth ({} sent)",
            sent.frames
        ));
    }
    let delta = |keys: &[&str]| -> i64 {
        keys.iter()
            .map(|k| snmp1.get(*k).unwrap_or(&0) - snmp0.get(*k).unwrap_or(&0))
            .sum()
    };
    let l4 = delta(&L4_SEEN);
    let ip = delta(&["Ip.InReceives"]);
    let one_percent = i64::try_from(rx / 100).unwrap_or(i64::MAX);
    if arm != Arm::None && l4 > one_percent {
        return Err(format!(
            "FAILED: the filter let the flood through: UDP/TCP saw {l4} of {rx} packets"
        ));
    }
    if arm.is_xdp() && ip > one_percent {
        return Err(format!(
            "FAILED: {ip} of {rx} packets reached IP behind an XDP drop"
        ));
    }
    if let (Some(c0), Some(c1)) = (count0, count1) {
        let dropped = c1 - c0;
        if dropped < rx - rx / 100 {
            return Err(format!(
                "FAILED: the filter's own counter saw {dropped} of {rx} packets"
            ));
        }
    }
    let secs = sent.elapsed.as_secs_f64();
    let busy = (run1 - run0) as f64 / 1e9 / secs;
    let pps = rx as f64 / secs;
    let ns_per_packet = (run1 - run0) as f64 / rx as f64;
    let offered = sent.frames as f64 / secs;
    let bound = if busy > 0.9 || overflow > rx / 100 {
        "receiver-bound"
    } else {
        "generator-bound: the receiver idled, the rate is a floor"
    };
    let checked = if arm == Arm::None {
        format!("the stack's UDP/TCP counters saw {l4}")
    } else {
        "all dropped (arm's counter and the stack's checked)".into()
    };
    let note = format!(
        "{rx} packets in {secs:.2} s counted on the server veth (rx_packets), {checked}; \
         offered {:.2} Mpps, {:.1}% lost to a full ring, receiver NAPI thread busy {:.0}%, {bound}; \
         CPU = NAPI thread run time / packets; CPU {cpu} per /proc/stat: {:.0}% busy, {:.0}% in interrupts, {:.0}% idle; load average {}",
        offered / 1e6,
        overflow as f64 * 100.0 / (rx + overflow) as f64,
        busy * 100.0,
        (stat1.0 - stat0.0) as f64 / 1e7 / secs,
        (stat1.1 - stat0.1) as f64 / 1e7 / secs,
        (stat1.2 - stat0.2) as f64 / 1e7 / secs,
        bed::load_average()
    );
    Ok(Figures {
        pps,
        ns_per_packet,
        note,
    })
}

//! The stages every packet goes through, in the classic server-firewall
//! order: parse, anti-spoof, neighbour discovery, connection tracking, then
//! the `[stateful]` stage for the packet's state (ESTABLISHED and INVALID
//! are usually decided here) or the rules. There is one classification call
//! site, and `finish` is the one place a verdict becomes counters.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use fw_common::{
    Direction,
    conntrack::{
        CT_FLAG_FORWARD, CT_FLAG_SEEN_REPLY, CtEntry, CtKey, CtState, TcpStep, datagram_transition,
        tcp_flags, tcp_flags_valid, tcp_is_pure_syn, tcp_transition_raw,
    },
    counters::Counter,
    family, ipproto,
    policy::{Action, Chain, PacketState, StageAction},
};

use crate::{
    conntrack,
    maps::{FW_COUNTERS, FW_PENDING},
    parse::{self, Fragment, Headers, Packet, ParseError},
    policy::{self, Query},
    route,
};

pub enum Verdict {
    Pass,
    Drop,
    /// Drop and answer; how is parked in `FW_PENDING`.
    Reject,
}

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
/// Router solicitation .. redirect: the neighbour discovery messages
/// (RFC 4861), which are only valid with hop limit 255.
const ICMPV6_ND_FIRST: u8 = 133;
const ICMPV6_ND_LAST: u8 = 137;

#[inline(always)]
pub fn process(ctx: *mut core::ffi::c_void, pkt: &Packet, dir: Direction, ifindex: u32) -> Verdict {
    let counter = decide(ctx, pkt, dir, ifindex);
    let verdict = finish(dir, counter, pkt.len as u64);
    if matches!(counter, Counter::RejectRule | Counter::RejectDefault) {
        // Only the rules stage rejects, and it parked how to answer.
        return Verdict::Reject;
    }
    verdict
}

#[inline(always)]
fn finish(dir: Direction, counter: Counter, bytes: u64) -> Verdict {
    if let Some(c) = FW_COUNTERS.get_ptr_mut(counter.index(dir)) {
        // SAFETY: per-CPU slot from a map lookup; no other CPU touches it.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
    if counter.is_drop() {
        Verdict::Drop
    } else {
        Verdict::Pass
    }
}

/// What connection tracking makes of a packet.
enum Track {
    /// Part of a tracked connection (ESTABLISHED or a reply).
    Established {
        key: CtKey,
        entry: *mut CtEntry,
        original: bool,
        next: CtState,
        forward: bool,
    },
    /// Starts a connection, or repeats the opener's packet before any reply
    /// (still NEW, as in netfilter): `entry` is then the existing one.
    New {
        key: CtKey,
        entry: Option<*mut CtEntry>,
        next: CtState,
        forward: bool,
    },
    /// Not trackable on its own (ICMP errors, other protocols): NEW, but
    /// no state is created.
    Stateless,
    Invalid,
}

#[inline(always)]
fn decide(ctx: *mut core::ffi::c_void, pkt: &Packet, dir: Direction, ifindex: u32) -> Counter {
    let h = match parse::parse(pkt, dir == Direction::Ingress) {
        Ok(h) => h,
        Err(ParseError::NotIp) => return Counter::PassNonIp,
        Err(ParseError::Malformed) => return Counter::DropMalformed,
    };
    if is_loopback(&h) {
        return Counter::DropSpoofed;
    }
    // Without a policy loaded there is nothing to enforce; fail closed.
    let Some(snap) = policy::snapshot() else {
        return Counter::DropDefault;
    };
    if h.fragment == Fragment::Later {
        return Counter::DropFragment;
    }
    let nd = h.proto == ipproto::ICMPV6
        && (ICMPV6_ND_FIRST..=ICMPV6_ND_LAST).contains(&h.icmp_type)
        && h.hop_limit == 255;
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() } + snap.clock_offset_ns;
    let track = if nd {
        Track::Stateless
    } else {
        track(&h, dir, now, snap.header.tcp_syn_only != 0)
    };
    let (forward, has_entry) = match &track {
        Track::Established { forward, .. } => (*forward, true),
        Track::New { forward, entry, .. } => (*forward, entry.is_some()),
        Track::Stateless | Track::Invalid => (false, false),
    };
    // Routed traffic is judged once, by the forward chain as it arrives;
    // on its way out it passes untouched (as iptables' FORWARD chain).
    if dir == Direction::Egress
        && (forward || (!has_entry && !route::source_is_local(ctx, &h, ifindex)))
    {
        return Counter::PassForwarded;
    }
    let (state, stage) = match &track {
        Track::Established { .. } => (
            PacketState::Established,
            StageAction::from_u8(snap.header.established),
        ),
        Track::Invalid => (
            PacketState::Invalid,
            StageAction::from_u8(snap.header.invalid),
        ),
        Track::New { .. } | Track::Stateless if nd => (
            PacketState::New,
            StageAction::from_u8(snap.header.neighbor_discovery),
        ),
        Track::New { .. } | Track::Stateless => (PacketState::New, StageAction::Rules),
    };
    match (stage, &track) {
        (StageAction::Accept, Track::Invalid) => Counter::AcceptInvalid,
        (StageAction::Accept, _) if nd => Counter::AcceptNeighborDiscovery,
        (
            StageAction::Accept,
            Track::Established {
                entry,
                original,
                next,
                ..
            },
        ) => {
            conntrack::touch(*entry, *original, *next, now, pkt.len as u64);
            Counter::AcceptEstablished
        }
        (StageAction::Accept, _) => Counter::AcceptDefault,
        (StageAction::Drop, Track::Invalid) => Counter::DropInvalid,
        (StageAction::Drop, Track::Established { .. }) => Counter::DropEstablished,
        (StageAction::Drop, _) => Counter::DropNeighborDiscovery,
        (StageAction::Rules, _) => {
            // Which chain: the flow's, or (for a packet without state) the
            // routing table's answer for where it is going.
            let chain = match dir {
                Direction::Egress => Chain::Output,
                Direction::Ingress if forward => Chain::Forward,
                Direction::Ingress
                    if !has_entry && !nd && route::is_forwarded(ctx, &h, ifindex) =>
                {
                    Chain::Forward
                }
                Direction::Ingress => Chain::Input,
            };
            if hand_over(
                &h,
                chain,
                ifindex,
                state,
                &track,
                snap.generation,
                now,
                pkt.len as u64,
            )
            .is_none()
            {
                return Counter::DropDefault;
            }
            classify_and_apply(dir)
        }
    }
}

/// What the rules stage needs, parked per CPU. Every path that reaches the
/// rules writes this and then calls `classify_and_apply`, which reads only
/// this record: the verifier then sees one state at that call, instead of
/// one per parsing and tracking path, and verifies the classifier once.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    pub query: Query,
    key: CtKey,
    now: u64,
    bytes: u64,
    generation: u32,
    /// `PENDING_*`.
    kind: u8,
    original: u8,
    next: u8,
    /// Set by `classify_and_apply`: the `RejectWith` of a REJECT.
    pub reject_with: u8,
    /// `CT_FLAG_*` of an entry to create.
    ct_flags: u8,
    _pad: [u8; 7],
}

const PENDING_ESTABLISHED: u8 = 0;
const PENDING_NEW_EXISTING: u8 = 1;
const PENDING_NEW: u8 = 2;
const PENDING_STATELESS: u8 = 3;
const PENDING_INVALID: u8 = 4;

#[expect(
    clippy::too_many_arguments,
    reason = "copies the packet's context into the per-CPU record"
)]
#[inline(always)]
fn hand_over(
    h: &Headers,
    chain: Chain,
    ifindex: u32,
    state: PacketState,
    track: &Track,
    generation: u32,
    now: u64,
    bytes: u64,
) -> Option<()> {
    let p = FW_PENDING.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot from a map lookup, used only by this program run.
    let p = unsafe { &mut *p };
    p.query = query(h, chain, ifindex, state);
    p.now = now;
    p.bytes = bytes;
    p.generation = generation;
    p.ct_flags = 0;
    match track {
        Track::Established {
            key,
            original,
            next,
            ..
        } => {
            // The entry is found again by its key after classification.
            p.kind = PENDING_ESTABLISHED;
            p.original = u8::from(*original);
            p.next = *next as u8;
            p.key = *key;
        }
        Track::New {
            key, entry, next, ..
        } => {
            p.kind = if entry.is_some() {
                PENDING_NEW_EXISTING
            } else {
                PENDING_NEW
            };
            p.original = 1;
            p.next = *next as u8;
            p.key = *key;
            if chain == Chain::Forward {
                p.ct_flags = CT_FLAG_FORWARD;
            }
        }
        Track::Stateless => p.kind = PENDING_STATELESS,
        Track::Invalid => p.kind = PENDING_INVALID,
    }
    Some(())
}

/// Classify the parked packet and carry the decision out on the connection
/// table. Reads nothing but `FW_PENDING` and the maps, so every path
/// reaches it in the same verifier state. (Inlined: a BPF-to-BPF call
/// would not mix with the tail calls into the REJECT programs.)
#[inline(always)]
fn classify_and_apply(dir: Direction) -> Counter {
    let Some(p) = FW_PENDING.get_ptr_mut(0) else {
        return Counter::DropDefault;
    };
    // SAFETY: per-CPU slot from a map lookup, used only by this program run.
    let p = unsafe { &mut *p };
    let d = policy::classify(p.generation, &p.query, p.now);
    p.reject_with = d.reject_with;
    let by_rule = d.rule != 0;
    match d.action {
        Action::Accept => {}
        Action::Reject => {
            return if by_rule {
                Counter::RejectRule
            } else {
                Counter::RejectDefault
            };
        }
        Action::Drop | Action::NoMatch | Action::Log => {
            return if by_rule {
                Counter::DropRule
            } else {
                Counter::DropDefault
            };
        }
    }
    let accepted = if by_rule {
        Counter::AcceptRule
    } else {
        Counter::AcceptDefault
    };
    match p.kind {
        PENDING_ESTABLISHED | PENDING_NEW_EXISTING => {
            // The entry may have been evicted meanwhile; then there is
            // nothing to update.
            if let Some(entry) = conntrack::lookup(&p.key, p.now) {
                conntrack::touch(
                    entry,
                    p.original != 0,
                    CtState::from_u8(p.next),
                    p.now,
                    p.bytes,
                );
            }
            accepted
        }
        PENDING_NEW => {
            if conntrack::create(
                &p.key,
                dir,
                CtState::from_u8(p.next),
                d.rule,
                p.now,
                p.bytes,
                p.ct_flags,
            )
            .is_err()
            {
                return Counter::DropTableFull;
            }
            accepted
        }
        _ => accepted,
    }
}

#[inline(always)]
fn query(h: &Headers, chain: Chain, ifindex: u32, state: PacketState) -> Query {
    Query {
        chain: chain as u8,
        state: state as u8,
        ifindex,
        family: h.family,
        proto: h.proto,
        src: h.src,
        dst: h.dst,
        sport: h.sport,
        dport: h.dport,
        icmp_type: h.icmp_type,
        tcp_flags: h.tcp_flags,
        _pad: [0; 2],
    }
}

/// 127.0.0.0/8 or ::1 as source or destination: only `lo` may carry them,
/// and fw never guards `lo`.
#[inline(always)]
fn is_loopback(h: &Headers) -> bool {
    if h.family == family::IPV4 {
        // Addresses are in network byte order: the first octet is the
        // lowest byte of the word.
        (h.src[0] & 0xff) == 127 || (h.dst[0] & 0xff) == 127
    } else {
        let lo = |a: &[u32; 4]| a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == u32::from_be(1);
        lo(&h.src) || lo(&h.dst)
    }
}

/// (local, remote) ports of the packet as seen from `dir`.
#[inline(always)]
fn ports(h: &Headers, dir: Direction) -> (u16, u16) {
    match dir {
        Direction::Ingress => (h.dport, h.sport),
        Direction::Egress => (h.sport, h.dport),
    }
}

#[inline(always)]
fn track(h: &Headers, dir: Direction, now: u64, tcp_syn_only: bool) -> Track {
    match h.proto {
        ipproto::TCP => track_tcp(h, dir, now, tcp_syn_only),
        ipproto::UDP => {
            let (l, r) = ports(h, dir);
            track_datagram(h, dir, now, l, r, CtState::UdpUnreplied, true)
        }
        ipproto::ICMP => track_icmp(h, dir, now, ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY),
        ipproto::ICMPV6 => track_icmp(h, dir, now, ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY),
        _ => Track::Stateless,
    }
}

/// A packet of a flow the table knows, moving it to `next`: until the peer
/// has answered, the opener's packets are still NEW (as in netfilter).
#[inline(always)]
fn known_flow(f: &conntrack::Found, flags: u8, next: CtState) -> Track {
    if f.original && flags & CT_FLAG_SEEN_REPLY == 0 {
        Track::New {
            key: f.key,
            entry: Some(f.entry),
            next,
            forward: f.forward,
        }
    } else {
        Track::Established {
            key: f.key,
            entry: f.entry,
            original: f.original,
            next,
            forward: f.forward,
        }
    }
}

#[inline(always)]
fn track_tcp(h: &Headers, dir: Direction, now: u64, tcp_syn_only: bool) -> Track {
    if !tcp_flags_valid(h.tcp_flags) {
        return Track::Invalid;
    }
    let (local_port, remote_port) = ports(h, dir);
    let key = conntrack::flow_key(h, dir, local_port, remote_port);
    if let Some(f) = conntrack::find(&key, now, dir) {
        // SAFETY: pointer from a map lookup.
        let e = unsafe { &*f.entry };
        let next = match tcp_transition_raw(e.state, f.original, h.tcp_flags) {
            TcpStep::Invalid => return Track::Invalid,
            TcpStep::Ignore => CtState::from_u8(e.state),
            TcpStep::To(s) => s,
        };
        return known_flow(&f, e.flags, next);
    }
    if tcp_is_pure_syn(h.tcp_flags) {
        return Track::New {
            key,
            entry: None,
            next: CtState::TcpSynSent,
            forward: false,
        };
    }
    // With `tcp_syn_only = false`, a mid-stream segment (ACK set, no RST)
    // may be picked up as an established connection, like netfilter's
    // `nf_conntrack_tcp_loose`.
    if !tcp_syn_only && h.tcp_flags & tcp_flags::ACK != 0 && h.tcp_flags & tcp_flags::RST == 0 {
        return Track::New {
            key,
            entry: None,
            next: CtState::TcpEstablished,
            forward: false,
        };
    }
    Track::Invalid
}

/// UDP and ICMP echo: pseudo-connections keyed by ports or echo identifier.
/// `opens`: may a packet without state start a flow (false for an echo reply).
#[inline(always)]
fn track_datagram(
    h: &Headers,
    dir: Direction,
    now: u64,
    local_port: u16,
    remote_port: u16,
    new_state: CtState,
    opens: bool,
) -> Track {
    let key = conntrack::flow_key(h, dir, local_port, remote_port);
    if let Some(f) = conntrack::find(&key, now, dir) {
        // SAFETY: pointer from a map lookup.
        let e = unsafe { &*f.entry };
        let next = datagram_transition(CtState::from_u8(e.state), f.original);
        return known_flow(&f, e.flags, next);
    }
    if opens {
        Track::New {
            key,
            entry: None,
            next: new_state,
            forward: false,
        }
    } else {
        Track::Invalid
    }
}

#[inline(always)]
fn track_icmp(h: &Headers, dir: Direction, now: u64, request: u8, reply: u8) -> Track {
    if h.icmp_type == request {
        track_datagram(
            h,
            dir,
            now,
            h.icmp_id,
            h.icmp_id,
            CtState::IcmpUnreplied,
            true,
        )
    } else if h.icmp_type == reply {
        track_datagram(
            h,
            dir,
            now,
            h.icmp_id,
            h.icmp_id,
            CtState::IcmpUnreplied,
            false,
        )
    } else {
        // Errors and other ICMP types carry no flow of their own here.
        Track::Stateless
    }
}

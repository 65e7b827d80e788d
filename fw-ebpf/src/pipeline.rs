//! The stages every packet goes through, in the classic server-firewall
//! order: parse, anti-spoof, neighbour discovery, connection tracking, then
//! the `[stateful]` stage for the packet's state (ESTABLISHED and INVALID
//! are usually decided here) or the rules. There is one classification call
//! site, and `finish` is the one place a verdict becomes counters.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use fw_common::{
    Direction,
    conntrack::{
        CT_FLAG_FORWARD, CT_FLAG_SEEN_REPLY, CtEntry, CtKey, CtState, FragKey, JudgedWindows,
        TcpSeg, TcpStep, TcpWindow, ct_init, datagram_transition, tcp_flags, tcp_flags_valid,
        tcp_is_pure_syn, tcp_judge,
    },
    counters::Counter,
    family, ipproto,
    policy::{Action, Chain, PacketState, StageAction},
};

use crate::{
    conntrack,
    maps::{FW_COUNTERS, FW_PENDING, FW_POLICY},
    parse::{self, Fragment, Headers, Packet, ParseError},
    policy::{self, Query},
    report::{self, LogTrail},
    route,
};

pub enum Verdict {
    Pass,
    Drop,
    /// Drop and answer; how is parked in `FW_PENDING`.
    Reject,
    /// Go on in the rules program; the packet is parked in `FW_PENDING`.
    Rules,
}

/// The outcome of the stages before the rules.
enum Decision {
    Done(Counter),
    /// Parked in `FW_PENDING` for the rules program.
    Rules,
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
    let counter = match decide(ctx, pkt, dir, ifindex) {
        Decision::Done(c) => c,
        Decision::Rules => return Verdict::Rules,
    };
    // A first fragment's verdict is made: if it passed, let the rest of its
    // datagram follow. (Whether this packet was one is parked in
    // `FW_PENDING`: a flag kept live across `decide` would make the
    // verifier walk the whole pipeline twice.)
    settle_fragment(!counter.is_drop());
    let verdict = finish(dir, counter, pkt.len as u64);
    report::after_stateful(dir, counter, pkt.len as u64);
    verdict
}

/// The rules stage, in its own program: classify the packet parked in
/// `FW_PENDING` and carry the decision out.
#[inline(always)]
pub fn rules(dir: Direction) -> Verdict {
    let counter = classify_and_apply(dir);
    settle_fragment(!counter.is_drop());
    let bytes = FW_PENDING.get_ptr(0).map_or(0, |p| {
        // SAFETY: per-CPU slot from a map lookup, used only by this program run.
        unsafe { (*p).bytes }
    });
    let verdict = finish(dir, counter, bytes);
    report::after_rules(dir, counter);
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
        original: bool,
        next: CtState,
        /// TCP: the state table moved the flow, so the segment advances
        /// the sequence windows too.
        window: bool,
        forward: bool,
    },
    /// Starts a connection, or repeats the opener's packet before any reply
    /// (still NEW, as in netfilter): `existing` then says so.
    New {
        key: CtKey,
        existing: bool,
        next: CtState,
        window: bool,
        forward: bool,
    },
    /// An ICMP error about a tracked connection.
    Related {
        forward: bool,
    },
    /// Not trackable on its own (other protocols, ICMP informational
    /// types): NEW, but no state is created.
    Stateless,
    Invalid,
}

#[inline(always)]
fn decide(ctx: *mut core::ffi::c_void, pkt: &Packet, dir: Direction, ifindex: u32) -> Decision {
    let h = match parse::parse(pkt, dir == Direction::Ingress, true) {
        Ok(h) => h,
        Err(ParseError::NotIp) => return Decision::Done(Counter::PassNonIp),
        Err(ParseError::Malformed) => {
            note_unparsed(dir, ifindex);
            return Decision::Done(Counter::DropMalformed);
        }
        Err(ParseError::TinyFragment) => {
            note_unparsed(dir, ifindex);
            return Decision::Done(Counter::DropFragment);
        }
    };
    // Without a policy loaded there is nothing to enforce; fail closed.
    let Some(snap) = policy::snapshot() else {
        return Decision::Done(Counter::DropDefault);
    };
    // A policy that logs verdicts made before the rules needs the headers
    // kept for the event (`report::after_stateful`).
    if snap.header.log_mask != 0 {
        note_packet(&h, dir, ifindex);
    }
    if is_loopback(&h) {
        return Decision::Done(Counter::DropSpoofed);
    }
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() } + snap.clock_offset_ns;
    if h.fragment == Fragment::Later {
        // No layer-4 header: it follows the verdict on its first fragment.
        return Decision::Done(if conntrack::fragment_allowed(&h, now) {
            Counter::AcceptFragment
        } else {
            Counter::DropFragment
        });
    }
    if h.fragment == Fragment::First {
        park_fragment(&h, now);
    }
    decide_tracked(ctx, pkt, &h, dir, ifindex, &snap, now)
}

#[inline(always)]
fn decide_tracked(
    ctx: *mut core::ffi::c_void,
    pkt: &Packet,
    h: &Headers,
    dir: Direction,
    ifindex: u32,
    snap: &policy::Snapshot,
    now: u64,
) -> Decision {
    let nd = h.proto == ipproto::ICMPV6
        && (ICMPV6_ND_FIRST..=ICMPV6_ND_LAST).contains(&h.icmp_type)
        && h.hop_limit == 255;
    let track = if nd {
        Track::Stateless
    } else {
        track(pkt, h, dir, now, snap.header.tcp_syn_only != 0)
    };
    let (forward, has_entry) = match &track {
        Track::Established { forward, .. } | Track::Related { forward } => (*forward, true),
        Track::New {
            forward, existing, ..
        } => (*forward, *existing),
        Track::Stateless | Track::Invalid => (false, false),
    };
    // Routed traffic is judged once, by the forward chain as it arrives;
    // on its way out it passes untouched (as iptables' FORWARD chain).
    if dir == Direction::Egress
        && (forward || (!has_entry && !route::source_is_local(ctx, h, ifindex)))
    {
        return Decision::Done(Counter::PassForwarded);
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
        Track::Related { .. } => (
            PacketState::Related,
            StageAction::from_u8(snap.header.related),
        ),
        Track::New { .. } | Track::Stateless if nd => (
            PacketState::New,
            StageAction::from_u8(snap.header.neighbor_discovery),
        ),
        Track::New { .. } | Track::Stateless => (PacketState::New, StageAction::Rules),
    };
    let counter = match (stage, &track) {
        (StageAction::Accept, Track::Invalid) => Counter::AcceptInvalid,
        (StageAction::Accept, Track::Related { .. }) => Counter::AcceptRelated,
        (StageAction::Accept, _) if nd => Counter::AcceptNeighborDiscovery,
        (
            StageAction::Accept,
            Track::Established {
                key,
                original,
                next,
                window,
                ..
            },
        ) => {
            // Looked up again rather than carried from tracking: a map
            // pointer kept across the stages costs the verifier its
            // tracking of it on some paths.
            conntrack::update(
                key,
                *original,
                *next,
                now,
                &snap.header.ct_timeouts,
                pkt.len as u64,
                if *window {
                    pending_windows(h.tcp_flags & tcp_flags::SYN != 0)
                } else {
                    None
                },
            );
            Counter::AcceptEstablished
        }
        (StageAction::Accept, _) => Counter::AcceptDefault,
        (StageAction::Drop, Track::Invalid) => Counter::DropInvalid,
        (StageAction::Drop, Track::Established { .. }) => Counter::DropEstablished,
        (StageAction::Drop, Track::Related { .. }) => Counter::DropRelated,
        (StageAction::Drop, _) => Counter::DropNeighborDiscovery,
        (StageAction::Rules, _) => {
            // Which chain: the flow's, or (for a packet without state) the
            // routing table's answer for where it is going.
            let chain = match dir {
                Direction::Egress => Chain::Output,
                Direction::Ingress if forward => Chain::Forward,
                Direction::Ingress if !has_entry && !nd && route::is_forwarded(ctx, h, ifindex) => {
                    Chain::Forward
                }
                Direction::Ingress => Chain::Input,
            };
            if hand_over(
                h,
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
                return Decision::Done(Counter::DropDefault);
            }
            return Decision::Rules;
        }
    };
    Decision::Done(counter)
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
    /// The datagram of a first fragment, remembered once it is accepted.
    frag: FragKey,
    seg: TcpSeg,
    /// A TCP flow's windows once this segment is accepted (`tcp_judge`).
    windows: [TcpWindow; 2],
    /// Where a new flow's entry is built (too big for the stack).
    entry: CtEntry,
    pub now: u64,
    pub bytes: u64,
    pub generation: u32,
    /// `PENDING_*`.
    kind: u8,
    original: u8,
    next: u8,
    /// Set by `classify_and_apply`: the `RejectWith` of a REJECT.
    pub reject_with: u8,
    /// `CT_FLAG_*` of an entry to create.
    ct_flags: u8,
    /// The segment advances the TCP windows (`Track::*::window`).
    window: u8,
    /// The packet is TCP: `seg` is meaningful.
    is_tcp: u8,
    /// 1: `frag` holds a first fragment waiting for its verdict.
    frag_parked: u8,
    frag_l4_end: u16,
    /// The classifier's decision (`Action`, 1-based rule).
    action: u8,
    /// The packet's `Counter`, for `report` (volatile).
    pub outcome: u8,
    pub rule: u16,
    _pad3: [u8; 2],
    frag_now: u64,
    /// `action = "log"` rules the packet passed.
    pub trail: LogTrail,
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
    fill_query(&mut p.query, h, chain, ifindex, state);
    p.now = now;
    p.bytes = bytes;
    p.generation = generation;
    p.ct_flags = 0;
    p.seg = tcp_seg(h);
    p.is_tcp = u8::from(h.proto == ipproto::TCP);
    p.window = 0;
    match track {
        Track::Established {
            key,
            original,
            next,
            window,
            ..
        } => {
            // The entry is found again by its key after classification.
            p.kind = PENDING_ESTABLISHED;
            p.original = u8::from(*original);
            p.next = *next as u8;
            p.window = u8::from(*window);
            p.key = *key;
        }
        Track::New {
            key,
            existing,
            next,
            window,
            ..
        } => {
            p.kind = if *existing {
                PENDING_NEW_EXISTING
            } else {
                PENDING_NEW
            };
            p.original = 1;
            p.next = *next as u8;
            p.window = u8::from(*window);
            p.key = *key;
            if chain == Chain::Forward {
                p.ct_flags = CT_FLAG_FORWARD;
            }
        }
        Track::Related { .. } | Track::Stateless => p.kind = PENDING_STATELESS,
        Track::Invalid => p.kind = PENDING_INVALID,
    }
    Some(())
}

/// The windows `tcp_judge` parked for this packet, a SYN (`syn`) or not.
#[inline(always)]
fn pending_windows(syn: bool) -> Option<JudgedWindows<'static>> {
    let p = FW_PENDING.get_ptr(0)?;
    // SAFETY: per-CPU slot from a map lookup, used only by this program run.
    let windows = unsafe { &(*p).windows };
    Some(JudgedWindows { windows, syn })
}

/// The TCP facts the tracker needs (zero for other protocols).
#[inline(always)]
fn tcp_seg(h: &Headers) -> TcpSeg {
    TcpSeg {
        seq: h.tcp_seq,
        ack: h.tcp_ack,
        len: h.tcp_payload,
        win: h.tcp_win,
        flags: h.tcp_flags,
        wscale: h.tcp_wscale,
    }
}

/// Park a first fragment's datagram identity until its verdict is known.
#[inline(always)]
fn park_fragment(h: &Headers, now: u64) {
    let Some(p) = FW_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot from a map lookup, used only by this program run.
    let p = unsafe { &mut *p };
    conntrack::fill_frag_key(&mut p.frag, h);
    p.frag_l4_end = h.frag_l4_end;
    p.frag_now = now;
    p.frag_parked = 1;
}

/// After every packet: if it was a parked first fragment and `passed`,
/// let its later fragments pass too.
#[inline(always)]
fn settle_fragment(passed: bool) {
    let Some(p) = FW_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot from a map lookup, used only by this program run.
    let p = unsafe { &mut *p };
    if p.frag_parked == 0 {
        return;
    }
    p.frag_parked = 0;
    if passed {
        conntrack::remember_fragment(&p.frag, p.frag_l4_end, p.frag_now);
    }
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
    p.trail.clear();
    let d = policy::classify(p.generation, &p.query, p.now, &mut p.trail);
    p.reject_with = d.reject_with;
    // The decision goes through per-CPU memory (volatile, so the compiler
    // keeps it there): the classifier has many ways out, and the verifier
    // should check what follows once, not once per way.
    // SAFETY: fields of the per-CPU slot.
    unsafe {
        core::ptr::write_volatile(&raw mut p.action, d.action as u8);
        core::ptr::write_volatile(&raw mut p.rule, d.rule);
    }
    // SAFETY: as above.
    let (action, rule) = unsafe {
        (
            Action::from_u8(core::ptr::read_volatile(&raw const p.action)),
            core::ptr::read_volatile(&raw const p.rule),
        )
    };
    let by_rule = rule != 0;
    match action {
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
    let Some(header) = FW_POLICY.get(p.generation & 1) else {
        return accepted;
    };
    let timeouts = &header.ct_timeouts;
    match p.kind {
        PENDING_ESTABLISHED | PENDING_NEW_EXISTING => {
            conntrack::update(
                &p.key,
                p.original != 0,
                CtState::from_u8(p.next),
                p.now,
                timeouts,
                p.bytes,
                (p.window != 0).then_some(JudgedWindows {
                    windows: &p.windows,
                    syn: p.seg.flags & tcp_flags::SYN != 0,
                }),
            );
            accepted
        }
        PENDING_NEW => {
            let state = CtState::from_u8(p.next);
            ct_init(
                &mut p.entry,
                dir,
                state,
                rule,
                p.now,
                timeouts,
                p.bytes,
                p.ct_flags,
                (p.is_tcp != 0).then_some(&p.seg),
            );
            if conntrack::create(&p.key, &p.entry, state).is_err() {
                return Counter::DropTableFull;
            }
            accepted
        }
        _ => accepted,
    }
}

/// Keep the headers of a packet decided before the rules, for its event.
#[inline(always)]
fn note_packet(h: &Headers, dir: Direction, ifindex: u32) {
    let Some(p) = FW_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot from a map lookup, used only by this program run.
    let p = unsafe { &mut *p };
    let chain = match dir {
        Direction::Ingress => Chain::Input,
        Direction::Egress => Chain::Output,
    };
    fill_query(&mut p.query, h, chain, ifindex, PacketState::New);
    p.rule = 0;
}

/// A packet whose headers could not be read: its event names only the
/// interface (family 0: no addresses).
#[inline(always)]
fn note_unparsed(dir: Direction, ifindex: u32) {
    let Some(p) = FW_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot from a map lookup, used only by this program run.
    let q = unsafe { &mut (*p).query };
    q.chain = match dir {
        Direction::Ingress => Chain::Input as u8,
        Direction::Egress => Chain::Output as u8,
    };
    q.ifindex = ifindex;
    q.family = 0;
    q.proto = 0;
    q.src = [0; 4];
    q.dst = [0; 4];
    q.sport = 0;
    q.dport = 0;
    q.icmp_type = 0;
    q.tcp_flags = 0;
}

/// Fill the classifier's query in place (no room for a copy on the stack).
#[inline(always)]
fn fill_query(q: &mut Query, h: &Headers, chain: Chain, ifindex: u32, state: PacketState) {
    q.chain = chain as u8;
    q.state = state as u8;
    q.ifindex = ifindex;
    q.family = h.family;
    q.proto = h.proto;
    q.src = h.src;
    q.dst = h.dst;
    q.sport = h.sport;
    q.dport = h.dport;
    q.icmp_type = h.icmp_type;
    q.tcp_flags = h.tcp_flags;
    q._pad = [0; 2];
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
fn track(pkt: &Packet, h: &Headers, dir: Direction, now: u64, tcp_syn_only: bool) -> Track {
    match h.proto {
        ipproto::TCP => track_tcp(h, dir, now, tcp_syn_only),
        ipproto::UDP => {
            let (l, r) = ports(h, dir);
            track_datagram(h, dir, now, l, r, CtState::UdpUnreplied, true)
        }
        _ if parse::is_icmp_error(h) => track_related(pkt, h, dir, now),
        ipproto::ICMP => track_icmp(h, dir, now, ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY),
        ipproto::ICMPV6 => track_icmp(h, dir, now, ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY),
        _ => Track::Stateless,
    }
}

/// An ICMP error is RELATED if the packet it quotes belongs to a tracked
/// flow; about anything else (or with a truncated quote) it is INVALID, as
/// in netfilter. It neither creates nor refreshes an entry.
#[inline(always)]
fn track_related(pkt: &Packet, h: &Headers, dir: Direction, now: u64) -> Track {
    let Some(key) = parse::quoted_key(pkt, h, dir == Direction::Ingress) else {
        return Track::Invalid;
    };
    match conntrack::find(&key, now, dir) {
        Some(f) => Track::Related { forward: f.forward },
        None => Track::Invalid,
    }
}

/// A packet of a flow the table knows, moving it to `next`: until the peer
/// has answered, the opener's packets are still NEW (as in netfilter).
#[inline(always)]
fn known_flow(key: &CtKey, f: &conntrack::Found, flags: u8, next: CtState, window: bool) -> Track {
    let key = if f.reversed {
        conntrack::reversed(key)
    } else {
        *key
    };
    if f.original && flags & CT_FLAG_SEEN_REPLY == 0 {
        Track::New {
            key,
            existing: true,
            next,
            window,
            forward: f.forward,
        }
    } else {
        Track::Established {
            key,
            original: f.original,
            next,
            window,
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
        // The windows the segment would leave are computed into per-CPU
        // space (no room on the stack) and stored if it is accepted.
        let Some(p) = FW_PENDING.get_ptr_mut(0) else {
            return Track::Invalid;
        };
        // SAFETY: per-CPU slot from a map lookup, used only by this program run.
        let windows = unsafe { &mut (*p).windows };
        match tcp_judge(e, &tcp_seg(h), f.original, windows) {
            TcpStep::Invalid => return Track::Invalid,
            TcpStep::Ignore => {
                return known_flow(&key, &f, e.flags, CtState::from_u8(e.state), false);
            }
            TcpStep::To(s) => return known_flow(&key, &f, e.flags, s, true),
            // The old connection is over: this SYN opens a new one, judged
            // by the rules like any other.
            TcpStep::Reopen => {
                if f.reversed {
                    conntrack::forget(&conntrack::reversed(&key));
                } else {
                    conntrack::forget(&key);
                }
            }
        }
    }
    if tcp_is_pure_syn(h.tcp_flags) {
        return Track::New {
            key,
            existing: false,
            next: CtState::TcpSynSent,
            window: false,
            forward: false,
        };
    }
    // With `tcp_syn_only = false`, a mid-stream segment (ACK set, no RST)
    // may be picked up as an established connection, like netfilter's
    // `nf_conntrack_tcp_loose`; its sequence numbers are then not checked.
    if !tcp_syn_only && h.tcp_flags & tcp_flags::ACK != 0 && h.tcp_flags & tcp_flags::RST == 0 {
        return Track::New {
            key,
            existing: false,
            next: CtState::TcpEstablished,
            window: false,
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
        return known_flow(&key, &f, e.flags, next, false);
    }
    if opens {
        Track::New {
            key,
            existing: false,
            next: new_state,
            window: false,
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
        // Informational types (router advertisements …) carry no flow.
        Track::Stateless
    }
}

//! The stages every packet goes through, in the classic server-firewall
//! order: parse, anti-spoof, neighbour discovery, connection tracking
//! (ESTABLISHED accepted, INVALID dropped), then the policy for new flows.
//! `finish` is the one place a verdict becomes counters.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use fw_common::{
    Direction,
    conntrack::{
        CT_FLAG_SEEN_REPLY, CtState, TcpStep, datagram_transition, is_original, tcp_flags_valid,
        tcp_is_pure_syn, tcp_transition_raw,
    },
    counters::Counter,
    family, ipproto,
    policy::Action,
};

use crate::{
    conntrack,
    maps::FW_COUNTERS,
    parse::{self, Fragment, Headers, Packet, ParseError},
    policy::{self, Decision, Snapshot},
};

pub enum Verdict {
    Pass,
    Drop,
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
pub fn process(pkt: &Packet, dir: Direction) -> Verdict {
    let counter = decide(pkt, dir);
    finish(dir, counter, pkt.len as u64)
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

#[inline(always)]
fn decide(pkt: &Packet, dir: Direction) -> Counter {
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
    if h.proto == ipproto::ICMPV6
        && snap.header.accept_neighbor_discovery != 0
        && (ICMPV6_ND_FIRST..=ICMPV6_ND_LAST).contains(&h.icmp_type)
        && h.hop_limit == 255
    {
        return Counter::AcceptNeighborDiscovery;
    }
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() } + snap.clock_offset_ns;
    let bytes = pkt.len as u64;
    match h.proto {
        ipproto::TCP => tcp(&h, dir, &snap, now, bytes),
        ipproto::UDP => datagram(
            &h,
            dir,
            &snap,
            now,
            bytes,
            h.dport,
            h.sport,
            CtState::UdpUnreplied,
            true,
        ),
        ipproto::ICMP => icmp(
            &h,
            dir,
            &snap,
            now,
            bytes,
            ICMP_ECHO_REQUEST,
            ICMP_ECHO_REPLY,
        ),
        ipproto::ICMPV6 => icmp(
            &h,
            dir,
            &snap,
            now,
            bytes,
            ICMPV6_ECHO_REQUEST,
            ICMPV6_ECHO_REPLY,
        ),
        _ => stateless(&h, dir, &snap),
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

/// Counter for a policy decision on a new flow.
#[inline(always)]
fn decision_counter(d: &Decision) -> Counter {
    match (d.action, d.rule) {
        (Action::Accept, 0) => Counter::AcceptDefault,
        (Action::Accept, _) => Counter::AcceptRule,
        (Action::Drop, 0) | (Action::NoMatch, _) => Counter::DropDefault,
        (Action::Drop, _) => Counter::DropRule,
    }
}

#[inline(always)]
fn tcp(h: &Headers, dir: Direction, snap: &Snapshot, now: u64, bytes: u64) -> Counter {
    if !tcp_flags_valid(h.tcp_flags) {
        return Counter::DropInvalid;
    }
    let (local_port, remote_port) = ports(h, dir);
    let key = conntrack::flow_key(h, dir, local_port, remote_port);
    if let Some(entry) = conntrack::lookup(&key, now) {
        // SAFETY: pointer from a map lookup.
        let e = unsafe { &*entry };
        let original = is_original(e, dir);
        let next = match tcp_transition_raw(e.state, original, h.tcp_flags) {
            TcpStep::Invalid => return Counter::DropInvalid,
            TcpStep::Ignore => CtState::from_u8(e.state),
            TcpStep::To(s) => s,
        };
        // Until the peer answers, the opener's packets are still NEW (as in
        // netfilter): a retransmitted SYN meets the policy in force now.
        if original && e.flags & CT_FLAG_SEEN_REPLY == 0 {
            let d = policy::classify(snap, dir, h.proto, h.dport);
            if d.action != Action::Accept {
                return decision_counter(&d);
            }
        }
        conntrack::touch(entry, original, next, now, bytes);
        return Counter::AcceptEstablished;
    }
    // No state: only a pure SYN may start a connection; anything else
    // (ACK scans, stray FIN/RST, SYN+ACK) is INVALID and never reaches the rules.
    if !tcp_is_pure_syn(h.tcp_flags) {
        return Counter::DropInvalid;
    }
    new_flow(h, dir, snap, now, bytes, &key, CtState::TcpSynSent)
}

/// Classify a new flow and, if accepted, track it.
#[inline(always)]
fn new_flow(
    h: &Headers,
    dir: Direction,
    snap: &Snapshot,
    now: u64,
    bytes: u64,
    key: &fw_common::conntrack::CtKey,
    state: CtState,
) -> Counter {
    let d = policy::classify(snap, dir, h.proto, h.dport);
    if d.action != Action::Accept {
        return decision_counter(&d);
    }
    if conntrack::create(key, dir, state, d.rule, now, bytes).is_err() {
        return Counter::DropTableFull;
    }
    decision_counter(&d)
}

/// (local, remote) ports of the packet as seen from `dir`.
#[inline(always)]
fn ports(h: &Headers, dir: Direction) -> (u16, u16) {
    match dir {
        Direction::Ingress => (h.dport, h.sport),
        Direction::Egress => (h.sport, h.dport),
    }
}

/// UDP and ICMP echo: pseudo-connections keyed by ports or echo identifier.
/// `opens`: may a packet without state start a flow (false for an echo reply).
#[expect(
    clippy::too_many_arguments,
    reason = "kept inline for the verifier; a struct would only move the fields"
)]
#[inline(always)]
fn datagram(
    h: &Headers,
    dir: Direction,
    snap: &Snapshot,
    now: u64,
    bytes: u64,
    local_or_id: u16,
    remote_or_id: u16,
    new_state: CtState,
    opens: bool,
) -> Counter {
    let (local_port, remote_port) = match h.proto {
        ipproto::UDP => ports(h, dir),
        _ => (local_or_id, remote_or_id),
    };
    let key = conntrack::flow_key(h, dir, local_port, remote_port);
    if let Some(entry) = conntrack::lookup(&key, now) {
        // SAFETY: pointer from a map lookup.
        let e = unsafe { &*entry };
        let original = is_original(e, dir);
        if original && e.flags & CT_FLAG_SEEN_REPLY == 0 {
            let d = policy::classify(snap, dir, h.proto, h.dport);
            if d.action != Action::Accept {
                return decision_counter(&d);
            }
        }
        let next = datagram_transition(CtState::from_u8(e.state), original);
        conntrack::touch(entry, original, next, now, bytes);
        return Counter::AcceptEstablished;
    }
    if !opens {
        return Counter::DropInvalid;
    }
    new_flow(h, dir, snap, now, bytes, &key, new_state)
}

#[inline(always)]
fn icmp(
    h: &Headers,
    dir: Direction,
    snap: &Snapshot,
    now: u64,
    bytes: u64,
    request: u8,
    reply: u8,
) -> Counter {
    if h.icmp_type == request {
        datagram(
            h,
            dir,
            snap,
            now,
            bytes,
            h.icmp_id,
            h.icmp_id,
            CtState::IcmpUnreplied,
            true,
        )
    } else if h.icmp_type == reply {
        datagram(
            h,
            dir,
            snap,
            now,
            bytes,
            h.icmp_id,
            h.icmp_id,
            CtState::IcmpUnreplied,
            false,
        )
    } else {
        // Errors and other ICMP types carry no flow of their own here;
        // the policy decides them without creating state.
        stateless(h, dir, snap)
    }
}

#[inline(always)]
fn stateless(h: &Headers, dir: Direction, snap: &Snapshot) -> Counter {
    decision_counter(&policy::classify(snap, dir, h.proto, 0))
}

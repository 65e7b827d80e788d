//! Connection tracking: the table layout and the state machine.
//!
//! fw guards a host, so every packet it sees has one local end: the
//! destination on ingress, the source on egress. Keys are therefore stored
//! as (local, remote) rather than (source, destination), and one entry with
//! one lookup serves both directions of a flow.
//!
//! The TCP transitions follow netfilter's `tcp_conntracks` table
//! (`net/netfilter/nf_conntrack_proto_tcp.c`); sequence-window checks are not
//! part of this table.

// The datapath calls these per packet and can afford no BPF-to-BPF call
// (it mixes tail calls with a stack near 512 bytes): they must be inlined.
#[allow(
    clippy::inline_always,
    reason = "kernel programs cannot make BPF-to-BPF calls here"
)]
mod track;
#[allow(
    clippy::inline_always,
    reason = "kernel programs cannot make BPF-to-BPF calls here"
)]
mod window;

pub use track::{JudgedWindows, ZERO_WINDOW, ct_apply, ct_init, tcp_judge};
pub use window::{after, before, seg_end, store_windows, tcp_window, window_open};

use crate::Direction;

/// Key of `FW_CONNTRACK`. Zero-initialise before filling: the padding is
/// part of the hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// Local address; IPv4 uses the first word, the rest stay zero.
    pub local: [u32; 4],
    pub remote: [u32; 4],
    /// Host byte order. For ICMP echo both hold the echo identifier.
    pub local_port: u16,
    pub remote_port: u16,
    pub proto: u8,
    /// `family::IPV4` or `family::IPV6`.
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<CtKey>() == 40);

/// Value of `FW_CONNTRACK` and `FW_CT_TRANSIENT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// Datapath clock (monotonic ns plus `FwConfig::clock_offset_ns`).
    pub created_ns: u64,
    pub last_seen_ns: u64,
    /// When the entry dies without further traffic: `last_seen_ns` plus the
    /// timeout of its state, taken from the policy in force when the last
    /// packet passed (so a reload's new timeouts apply from the next packet).
    pub expires_ns: u64,
    /// `[original, reply]`.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// TCP sequence tracking, `[original sender, reply sender]`; unused
    /// (zero) for other protocols.
    pub tcp: [TcpWindow; 2],
    /// A `CtState`.
    pub state: u8,
    /// The `Direction` of the packet that opened the flow: ingress means a
    /// remote peer connected to us.
    pub origin: u8,
    /// `CT_FLAG_*` bits.
    pub flags: u8,
    pub _pad0: u8,
    /// 1-based rule that admitted the flow, 0 for a default policy.
    pub rule: u16,
    pub _pad1: [u8; 2],
}
const _: () = assert!(size_of::<CtEntry>() == 96);
// `store_windows` swaps the windows a word at a time.
const _: () = assert!(core::mem::offset_of!(CtEntry, tcp) % 8 == 0);

/// What one side of a TCP connection has shown of its sequence space
/// (netfilter's `ip_ct_tcp_state`, without SACK).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpWindow {
    /// Highest sequence number this side has sent, plus its length
    /// (`td_end`).
    pub end: u32,
    /// Highest sequence number the other side has allowed this side to send:
    /// its ack plus its window (`td_maxend`).
    pub maxend: u32,
    /// Largest window this side has advertised, scaled (`td_maxwin`).
    pub maxwin: u32,
    /// Window scale this side announced on its SYN (0 without the option).
    pub scale: u8,
    /// `WIN_FLAG_*`.
    pub flags: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<TcpWindow>() == 16);

/// The side sent the window-scale option on its SYN.
pub const WIN_FLAG_SCALE: u8 = 1;

/// What the TCP tracker needs of a segment, read from its headers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSeg {
    pub seq: u32,
    pub ack: u32,
    /// Bytes of payload (SYN and FIN count one each on top).
    pub len: u32,
    /// The window field as sent (unscaled).
    pub win: u16,
    /// TCP flags byte.
    pub flags: u8,
    /// Window-scale option of a SYN, `NO_WSCALE` when absent.
    pub wscale: u8,
}
const _: () = assert!(size_of::<TcpSeg>() == 16);

/// `TcpSeg::wscale` of a segment without the option.
pub const NO_WSCALE: u8 = 0xff;

/// A packet in the reply direction has been seen (netfilter's `IPS_SEEN_REPLY`).
pub const CT_FLAG_SEEN_REPLY: u8 = 1;
/// Created by the loader from the kernel's socket table, for a connection
/// that was open before the firewall was loaded.
pub const CT_FLAG_ADOPTED: u8 = 2;
/// A flow routed through the host (forward chain). Its key is oriented as
/// the first packet arrived (local = that packet's destination), so its
/// replies are found by the reversed key.
pub const CT_FLAG_FORWARD: u8 = 4;
/// Sequence numbers are not checked: the flow was adopted or picked up
/// mid-stream, so its window scaling is unknown (netfilter's
/// `IP_CT_TCP_FLAG_BE_LIBERAL`). The state machine still applies.
pub const CT_FLAG_LIBERAL: u8 = 8;

/// Which table an entry lives in. Established (replied) flows live in
/// `FW_CONNTRACK`, a plain hash that never evicts; flows being opened
/// (unreplied) or closed live in `FW_CT_TRANSIENT`, an LRU hash, so a flood
/// of new flows can only push out other new or closing flows.
#[must_use]
pub const fn is_transient_state(state: u8) -> bool {
    !matches!(
        CtState::from_u8(state),
        CtState::TcpEstablished | CtState::UdpReplied | CtState::IcmpReplied
    )
}

/// Connection states. TCP values mirror netfilter's names.
///
/// Append-only: never renumber; retire a value by renaming it `Reserved…`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtState {
    None = 0,
    TcpSynSent = 1,
    TcpSynRecv = 2,
    TcpEstablished = 3,
    TcpFinWait = 4,
    TcpCloseWait = 5,
    TcpLastAck = 6,
    TcpTimeWait = 7,
    TcpClose = 8,
    TcpSynSent2 = 9,
    UdpUnreplied = 10,
    UdpReplied = 11,
    IcmpUnreplied = 12,
    IcmpReplied = 13,
}

impl CtState {
    #[must_use]
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::TcpSynSent,
            2 => Self::TcpSynRecv,
            3 => Self::TcpEstablished,
            4 => Self::TcpFinWait,
            5 => Self::TcpCloseWait,
            6 => Self::TcpLastAck,
            7 => Self::TcpTimeWait,
            8 => Self::TcpClose,
            9 => Self::TcpSynSent2,
            10 => Self::UdpUnreplied,
            11 => Self::UdpReplied,
            12 => Self::IcmpUnreplied,
            13 => Self::IcmpReplied,
            _ => Self::None,
        }
    }

    /// netfilter's default idle timeout for this state, in seconds.
    #[must_use]
    pub const fn default_timeout_secs(self) -> u32 {
        match self {
            Self::None => 0,
            Self::TcpSynSent | Self::TcpSynSent2 => 120,
            Self::TcpSynRecv => 60,
            Self::TcpEstablished => 432_000,
            Self::TcpFinWait | Self::TcpTimeWait => 120,
            Self::TcpCloseWait => 60,
            Self::TcpLastAck => 30,
            Self::TcpClose => 10,
            Self::UdpUnreplied => 30,
            Self::UdpReplied => 120,
            Self::IcmpUnreplied | Self::IcmpReplied => 30,
        }
    }

    /// Name as `conntrack -L` prints it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::TcpSynSent => "SYN_SENT",
            Self::TcpSynRecv => "SYN_RECV",
            Self::TcpEstablished => "ESTABLISHED",
            Self::TcpFinWait => "FIN_WAIT",
            Self::TcpCloseWait => "CLOSE_WAIT",
            Self::TcpLastAck => "LAST_ACK",
            Self::TcpTimeWait => "TIME_WAIT",
            Self::TcpClose => "CLOSE",
            Self::TcpSynSent2 => "SYN_SENT2",
            Self::UdpUnreplied => "UNREPLIED",
            Self::UdpReplied => "REPLIED",
            Self::IcmpUnreplied => "UNREPLIED",
            Self::IcmpReplied => "REPLIED",
        }
    }
}

/// Idle timeouts in seconds, indexed by `CtState` value (`& 15`). Part of
/// the policy (`[conntrack]`), so a reload can change them.
pub type Timeouts = [u32; 16];

/// netfilter's defaults for every state.
pub const DEFAULT_TIMEOUTS: Timeouts = {
    let mut t = [0u32; 16];
    let mut i = 0;
    while i < 16 {
        #[expect(clippy::cast_possible_truncation, reason = "i < 16")]
        {
            t[i] = CtState::from_u8(i as u8).default_timeout_secs();
        }
        i += 1;
    }
    t
};

/// When an entry in `state` seen at `now_ns` expires under `timeouts`.
#[must_use]
#[inline(always)]
#[allow(
    clippy::inline_always,
    reason = "kernel programs cannot make BPF-to-BPF calls here"
)]
pub fn expiry(timeouts: &Timeouts, state: u8, now_ns: u64) -> u64 {
    // The index is masked after a volatile read: the compiler knows a state
    // that came from a `CtState` is below 14 and would drop the mask, but
    // the BPF verifier does not know that and must see the bound.
    // SAFETY: a read of a local.
    let i = unsafe { core::ptr::read_volatile(&raw const state) } & 15;
    now_ns + u64::from(timeouts[i as usize]) * 1_000_000_000
}

/// Has `entry` outlived its timeout at `now_ns`?
#[must_use]
pub const fn is_expired(entry: &CtEntry, now_ns: u64) -> bool {
    now_ns > entry.expires_ns
}

/// Key of `FW_FRAGS`: one fragmented datagram (netfilter's and Cilium's
/// reassembly identity).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// IPv4 identification (16 bits) or IPv6 fragment identification.
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FragKey>() == 40);

/// Value of `FW_FRAGS`: the first fragment of this datagram was accepted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragEntry {
    pub expires_ns: u64,
    /// Bytes from the start of the fragmentable part to the end of the
    /// layer-4 header. A later fragment starting before this would rewrite
    /// the header the verdict was made on (RFC 1858): dropped.
    pub l4_end: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<FragEntry>() == 16);

/// How long the later fragments of an accepted first fragment may take
/// (the kernel's `ipfrag_time`).
pub const FRAG_TIMEOUT_NS: u64 = 30 * 1_000_000_000;

/// Is the packet travelling in the flow's original direction?
#[must_use]
pub const fn is_original(entry: &CtEntry, dir: Direction) -> bool {
    entry.origin == dir as u8
}

/// TCP flag bits as they sit in byte 13 of the TCP header.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Is this flag combination one a real TCP stack sends? PSH, ECE and CWR
/// are always allowed; everything else must be one of netfilter's valid
/// combinations. NULL, XMAS, SYN+FIN, SYN+RST and bare FIN are not.
#[must_use]
pub const fn tcp_flags_valid(flags: u8) -> bool {
    use tcp_flags::{ACK, FIN, RST, SYN, URG};
    let f = flags & (FIN | SYN | RST | ACK | URG);
    matches!(
        f,
        x if x == SYN
            || x == SYN | URG
            || x == SYN | ACK
            || x == RST
            || x == RST | ACK
            || x == FIN | ACK
            || x == FIN | ACK | URG
            || x == ACK
            || x == ACK | URG
    )
}

/// May this TCP packet open a new connection? Only a pure SYN (SYN set;
/// ACK, FIN and RST clear), as iptables' `--syn`. ECN bits are allowed.
#[must_use]
pub const fn tcp_is_pure_syn(flags: u8) -> bool {
    use tcp_flags::{ACK, FIN, RST, SYN};
    flags & (SYN | ACK | FIN | RST) == SYN
}

/// The packet classes of netfilter's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpEvent {
    Syn = 0,
    SynAck = 1,
    Fin = 2,
    Ack = 3,
    Rst = 4,
    None = 5,
}

#[must_use]
pub const fn tcp_event(flags: u8) -> TcpEvent {
    use tcp_flags::{ACK, FIN, RST, SYN};
    if flags & RST != 0 {
        TcpEvent::Rst
    } else if flags & SYN != 0 {
        if flags & ACK != 0 {
            TcpEvent::SynAck
        } else {
            TcpEvent::Syn
        }
    } else if flags & FIN != 0 {
        TcpEvent::Fin
    } else if flags & ACK != 0 {
        TcpEvent::Ack
    } else {
        TcpEvent::None
    }
}

/// Outcome of feeding one TCP packet to a flow's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpStep {
    /// Accept and move to this state.
    To(CtState),
    /// Accept without changing state (netfilter's sIG: may be valid, the
    /// receiver will answer with RST or SYN/ACK if it is not).
    Ignore,
    /// Drop without touching the entry.
    Invalid,
    /// A pure SYN on a flow in `TIME_WAIT` or `CLOSE`: the old connection is
    /// over and this is a new one (RFC 1122 4.2.2.13). The caller forgets
    /// the entry and handles the packet as NEW, as netfilter does.
    Reopen,
}

// Shorthands for the transition table. Columns are indexed by the state's
// own value, so netfilter's order sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW,
// sCL, sS2 is columns 0..=9.
const S_SS: u8 = CtState::TcpSynSent as u8;
const S_SR: u8 = CtState::TcpSynRecv as u8;
const S_ES: u8 = CtState::TcpEstablished as u8;
const S_FW: u8 = CtState::TcpFinWait as u8;
const S_CW: u8 = CtState::TcpCloseWait as u8;
const S_LA: u8 = CtState::TcpLastAck as u8;
const S_TW: u8 = CtState::TcpTimeWait as u8;
const S_CL: u8 = CtState::TcpClose as u8;
const S_S2: u8 = CtState::TcpSynSent2 as u8;
const S_IV: u8 = 0xfe;
const S_IG: u8 = 0xff;
/// Columns 10..=15 (non-TCP states) are invalid. Rows are padded to 16 so
/// that any 4-bit index is in bounds: the verifier can prove that, it
/// cannot follow the compiler's range reasoning about `CtState`.
const fn row(cols: [u8; 10]) -> [u8; 16] {
    let mut r = [S_IV; 16];
    let mut i = 0;
    while i < 10 {
        r[i] = cols[i];
        i += 1;
    }
    r
}

/// `[original=0 / reply=1][TcpEvent][state]`.
const TCP_TABLE: [[[u8; 16]; 6]; 2] = [
    // ORIGINAL     sNO   sSS   sSR   sES   sFW   sCW   sLA   sTW   sCL   sS2
    [
        /* syn    */ row([S_SS, S_SS, S_IG, S_IG, S_IG, S_IG, S_IG, S_SS, S_SS, S_S2]),
        /* synack */ row([S_IV, S_IV, S_SR, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_SR]),
        /* fin    */ row([S_IV, S_IV, S_FW, S_FW, S_LA, S_LA, S_LA, S_TW, S_CL, S_IV]),
        /* ack    */ row([S_ES, S_IV, S_ES, S_ES, S_CW, S_CW, S_TW, S_TW, S_CL, S_IV]),
        /* rst    */ row([S_IV, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL]),
        /* none   */ [S_IV; 16],
    ],
    // REPLY        sNO   sSS   sSR   sES   sFW   sCW   sLA   sTW   sCL   sS2
    [
        /* syn    */ row([S_IV, S_S2, S_IV, S_IV, S_IV, S_IV, S_IV, S_SS, S_IV, S_S2]),
        /* synack */ row([S_IV, S_SR, S_IG, S_IG, S_IG, S_IG, S_IG, S_IG, S_IG, S_SR]),
        /* fin    */ row([S_IV, S_IV, S_FW, S_FW, S_LA, S_LA, S_LA, S_TW, S_CL, S_IV]),
        /* ack    */ row([S_IV, S_IG, S_SR, S_ES, S_CW, S_CW, S_TW, S_TW, S_CL, S_IG]),
        /* rst    */ row([S_IV, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL]),
        /* none   */ [S_IV; 16],
    ],
];

/// Feed one packet with TCP `flags`, travelling in the original direction
/// or not, to a flow in `state` (`CtState::None` for a flow not yet known).
#[must_use]
pub const fn tcp_transition(state: CtState, original: bool, flags: u8) -> TcpStep {
    tcp_transition_raw(state as u8, original, flags)
}

/// `tcp_transition` on the state byte as stored in a `CtEntry`. The kernel
/// calls this form: masking a byte of unknown range is something the
/// verifier can follow, a `CtState` the compiler has reasoned about is not.
#[must_use]
pub const fn tcp_transition_raw(state: u8, original: bool, flags: u8) -> TcpStep {
    if !tcp_flags_valid(flags) {
        return TcpStep::Invalid;
    }
    let dir = if original { 0 } else { 1 };
    let next = TCP_TABLE[dir][tcp_event(flags) as usize][(state & 15) as usize];
    match next {
        S_IV => TcpStep::Invalid,
        S_IG => TcpStep::Ignore,
        s => TcpStep::To(CtState::from_u8(s)),
    }
}

/// State of a UDP or ICMP-echo flow after a packet in the given direction.
#[must_use]
pub const fn datagram_transition(state: CtState, original: bool) -> CtState {
    match (state, original) {
        (CtState::UdpUnreplied, false) => CtState::UdpReplied,
        (CtState::IcmpUnreplied, false) => CtState::IcmpReplied,
        (s, _) => s,
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for CtKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtEntry {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for FragKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for FragEntry {}

#[cfg(test)]
mod tests {
    use super::*;
    use tcp_flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};

    #[test]
    fn flag_combinations_match_netfilter() {
        for ok in [
            SYN,
            SYN | ACK,
            ACK,
            ACK | PSH,
            FIN | ACK,
            RST,
            RST | ACK,
            SYN | ECE | CWR,
            ACK | URG,
        ] {
            assert!(tcp_flags_valid(ok), "{ok:#04x} should be valid");
        }
        for bad in [
            0,
            FIN,
            SYN | FIN,
            SYN | RST,
            FIN | PSH | URG,
            0x3f,
            FIN | RST | ACK,
            SYN | FIN | ACK,
        ] {
            assert!(!tcp_flags_valid(bad), "{bad:#04x} should be invalid");
        }
    }

    #[test]
    fn only_a_pure_syn_opens() {
        assert!(tcp_is_pure_syn(SYN));
        assert!(tcp_is_pure_syn(SYN | ECE | CWR));
        assert!(!tcp_is_pure_syn(SYN | ACK));
        assert!(!tcp_is_pure_syn(SYN | FIN));
        assert!(!tcp_is_pure_syn(ACK));
    }

    /// Walk a whole connection: handshake, data, FIN from each side.
    #[test]
    fn full_connection_lifecycle() {
        use CtState::*;
        let mut s = CtState::None;
        let steps: [(bool, u8, CtState); 8] = [
            (true, SYN, TcpSynSent),
            (false, SYN | ACK, TcpSynRecv),
            (true, ACK, TcpEstablished),
            (true, ACK | PSH, TcpEstablished),
            (false, ACK, TcpEstablished),
            (true, FIN | ACK, TcpFinWait),
            (false, FIN | ACK, TcpLastAck),
            (true, ACK, TcpTimeWait),
        ];
        for (orig, flags, want) in steps {
            match tcp_transition(s, orig, flags) {
                TcpStep::To(next) => s = next,
                other => panic!("{s:?} + {flags:#04x} (orig={orig}) gave {other:?}"),
            }
            assert_eq!(s, want);
        }
    }

    #[test]
    fn invalid_and_ignored_packets() {
        use CtState::*;
        // ACK before any state: netfilter would pick it up; we never reach
        // the table for it (only a pure SYN creates state), and SYN_SENT
        // rejects an ACK from the opener.
        assert_eq!(tcp_transition(TcpSynSent, true, ACK), TcpStep::Invalid);
        // The opener cannot send SYN/ACK.
        assert_eq!(
            tcp_transition(TcpSynSent, true, SYN | ACK),
            TcpStep::Invalid
        );
        // A retransmitted SYN/ACK is ignored.
        assert_eq!(
            tcp_transition(TcpEstablished, false, SYN | ACK),
            TcpStep::Ignore
        );
        // SYN inside an established flow is ignored (the peer answers RST).
        assert_eq!(tcp_transition(TcpEstablished, true, SYN), TcpStep::Ignore);
        // Flag garbage is invalid whatever the state.
        assert_eq!(
            tcp_transition(TcpEstablished, true, SYN | FIN),
            TcpStep::Invalid
        );
        assert_eq!(tcp_transition(TcpEstablished, true, 0), TcpStep::Invalid);
    }

    #[test]
    fn rst_closes_and_time_wait_reopens() {
        use CtState::*;
        assert_eq!(
            tcp_transition(TcpEstablished, false, RST),
            TcpStep::To(TcpClose)
        );
        assert_eq!(
            tcp_transition(TcpSynSent, false, RST | ACK),
            TcpStep::To(TcpClose)
        );
        assert_eq!(
            tcp_transition(TcpTimeWait, true, SYN),
            TcpStep::To(TcpSynSent)
        );
        assert_eq!(tcp_transition(TcpClose, true, SYN), TcpStep::To(TcpSynSent));
    }

    #[test]
    fn simultaneous_open() {
        use CtState::*;
        assert_eq!(
            tcp_transition(TcpSynSent, false, SYN),
            TcpStep::To(TcpSynSent2)
        );
        assert_eq!(
            tcp_transition(TcpSynSent2, true, SYN | ACK),
            TcpStep::To(TcpSynRecv)
        );
    }

    #[test]
    fn datagram_flows_become_replied() {
        assert_eq!(
            datagram_transition(CtState::UdpUnreplied, true),
            CtState::UdpUnreplied
        );
        assert_eq!(
            datagram_transition(CtState::UdpUnreplied, false),
            CtState::UdpReplied
        );
        assert_eq!(
            datagram_transition(CtState::IcmpUnreplied, false),
            CtState::IcmpReplied
        );
    }

    #[test]
    fn expiry_uses_the_policy_timeouts() {
        let sec = 1_000_000_000;
        let e = CtEntry {
            state: CtState::TcpSynSent as u8,
            expires_ns: expiry(&DEFAULT_TIMEOUTS, CtState::TcpSynSent as u8, 1_000),
            ..CtEntry::default()
        };
        assert!(!is_expired(&e, 1_000 + 120 * sec));
        assert!(is_expired(&e, 1_001 + 120 * sec));
        let mut short = DEFAULT_TIMEOUTS;
        short[CtState::TcpEstablished as usize] = 5;
        assert_eq!(
            expiry(&short, CtState::TcpEstablished as u8, 7),
            7 + 5 * sec
        );
        assert_eq!(DEFAULT_TIMEOUTS[CtState::TcpEstablished as usize], 432_000);
        assert_eq!(DEFAULT_TIMEOUTS[CtState::UdpUnreplied as usize], 30);
        assert_eq!(DEFAULT_TIMEOUTS[CtState::UdpReplied as usize], 120);
    }

    #[test]
    fn established_flows_live_in_the_table_that_never_evicts() {
        assert!(!is_transient_state(CtState::TcpEstablished as u8));
        assert!(!is_transient_state(CtState::UdpReplied as u8));
        assert!(!is_transient_state(CtState::IcmpReplied as u8));
        for s in [
            CtState::TcpSynSent,
            CtState::TcpSynRecv,
            CtState::TcpFinWait,
            CtState::TcpTimeWait,
            CtState::TcpClose,
            CtState::UdpUnreplied,
            CtState::IcmpUnreplied,
        ] {
            assert!(is_transient_state(s as u8), "{s:?}");
        }
    }
}

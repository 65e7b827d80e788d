//! Classification of new flows against the compiled policy. Rule order was
//! resolved by the compiler, so this is one array lookup.

use fw_common::{
    Direction,
    config::FwConfig,
    ipproto,
    policy::{Action, OtherProto, PolicyHeader, PortProto, PortVerdict, port_index},
};

use crate::maps::{FW_CONFIG, FW_POLICY, FW_PORTS};

/// The policy generation in force and the clock, read once per packet so a
/// packet never mixes two policies.
pub struct Snapshot {
    pub generation: u32,
    pub clock_offset_ns: u64,
    pub header: &'static PolicyHeader,
}

#[inline(always)]
pub fn snapshot() -> Option<Snapshot> {
    let cfg: &FwConfig = FW_CONFIG.get(0)?;
    let generation = cfg.active_gen & 1;
    let header = FW_POLICY.get(generation)?;
    Some(Snapshot {
        generation,
        clock_offset_ns: cfg.clock_offset_ns,
        header,
    })
}

/// The decision for a new flow: the action and the 1-based rule that made
/// it (0: the default policy).
pub struct Decision {
    pub action: Action,
    pub rule: u16,
}

#[inline(always)]
pub fn classify(snap: &Snapshot, dir: Direction, proto: u8, dport: u16) -> Decision {
    let verdict: PortVerdict = match proto {
        ipproto::TCP => port_verdict(snap.generation, dir, PortProto::Tcp, dport),
        ipproto::UDP => port_verdict(snap.generation, dir, PortProto::Udp, dport),
        ipproto::ICMP => snap.header.other[dir as usize][OtherProto::Icmp as usize],
        ipproto::ICMPV6 => snap.header.other[dir as usize][OtherProto::Icmpv6 as usize],
        _ => snap.header.other[dir as usize][OtherProto::Other as usize],
    };
    match Action::from_u8(verdict.action) {
        Action::NoMatch => Decision {
            action: Action::from_u8(snap.header.default_action[dir as usize]),
            rule: 0,
        },
        action => Decision {
            action,
            rule: verdict.rule,
        },
    }
}

#[inline(always)]
fn port_verdict(generation: u32, dir: Direction, proto: PortProto, port: u16) -> PortVerdict {
    FW_PORTS
        .get(port_index(generation, dir, proto, port))
        .copied()
        .unwrap_or(PortVerdict::NO_MATCH)
}

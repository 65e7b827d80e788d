//! Log events: what the datapath reports through the `FW_EVENTS` ring
//! buffer, how their rate is limited, and the counters of what the limit
//! held back.
//!
//! An event is emitted for a packet matched by a rule with `log = true` or
//! `action = "log"`, and for the outcomes `[log] default` and
//! `[log] invalid` select (`PolicyHeader::log_mask`, one bit per
//! `Counter`). Before it is written, the event takes a token from a
//! rate limiter (`rate::rate_take`): the rule's own (`log_rate`) or the
//! policy's (`[log] rate`).
//! An event without a token is counted as suppressed; one the ring buffer
//! has no room for (nobody reading) is counted as lost. Nothing is dropped
//! uncounted.

/// One event, as read from `FW_EVENTS`. Addresses are in network byte
/// order (IPv4 in the first word), ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The datapath clock (`CLOCK_MONOTONIC` plus the test offset).
    pub time_ns: u64,
    /// Stable identity of the rule that logged (`RuleMeta::id`); 0 for an
    /// event of `[log] default` or `[log] invalid`.
    pub rule_id: u64,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub ifindex: u32,
    /// Bytes of the packet as the hook saw it.
    pub len: u32,
    pub sport: u16,
    pub dport: u16,
    /// 1-based rule of `chain` that logged (0: a `[log]` setting did).
    pub log_rule: u16,
    /// 1-based rule that decided the packet (0: a default or a stateful
    /// stage did).
    pub rule: u16,
    /// The packet's outcome: a `Counter` (drop-rule, drop-invalid …), which
    /// also says whether it was accepted, dropped or rejected.
    pub reason: u8,
    /// A `Direction`.
    pub direction: u8,
    /// A `Chain`.
    pub chain: u8,
    /// `family::IPV4`, `family::IPV6`, or 0 when the headers could not be
    /// read (a malformed packet).
    pub family: u8,
    pub proto: u8,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    /// A `PacketState`.
    pub state: u8,
    /// Policy generation in force (0 or 1): which `FW_RULE_INFO` half
    /// describes `log_rule` and `rule`.
    pub generation: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(size_of::<Event>() == 80);

/// Bytes of `FW_EVENTS` (a power of two, as the kernel requires): about
/// 3,000 events of backlog when nobody reads.
pub const RING_BYTES: u32 = 256 * 1024;

/// What happened to the events the datapath wanted to emit; the index
/// into the per-CPU `FW_LOG_STATS`.
///
/// Append-only: never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStat {
    /// Written to the ring buffer.
    Emitted = 0,
    /// Held back by the rate limit.
    Suppressed = 1,
    /// Within the limit, but the ring buffer was full (nobody reading, or
    /// a reader too slow).
    Lost = 2,
}

impl LogStat {
    pub const ENTRIES: u32 = 4;
    pub const ALL: [Self; 3] = [Self::Emitted, Self::Suppressed, Self::Lost];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Emitted => "emitted",
            Self::Suppressed => "suppressed",
            Self::Lost => "lost",
        }
    }
}

/// Index in `FW_LOG_BUCKETS` of the policy-wide limiter (`[log] rate`);
/// the slots before it belong to rules with their own `log_rate`, at the
/// rule's `FW_RULES` index.
pub const GLOBAL_BUCKET: u32 = crate::policy::RULE_ENTRIES;
/// Entries of `FW_LOG_BUCKETS`.
pub const BUCKET_ENTRIES: u32 = GLOBAL_BUCKET + 1;

/// Identity in `FW_RULE_STATS` of `chain`'s default policy. Rule
/// identities (`RuleMeta::id`) never take these values.
#[must_use]
pub const fn default_stats_id(chain: crate::policy::Chain) -> u64 {
    u64::MAX - chain as u64
}

/// Entries of `FW_RULE_STATS`: every rule slot of both generations, and
/// the chain defaults, with room for identities in transit during a reload.
pub const RULE_STATS_ENTRIES: u32 = 2 * crate::policy::RULE_ENTRIES;

/// Bytes of the texts kept in a `RuleInfo`.
pub const RULE_NAME_BYTES: usize = 48;
pub const RULE_PREFIX_BYTES: usize = 32;
pub const RULE_TEXT_BYTES: usize = 160;

/// What `status`, `events` and the metrics show of a rule: written by the
/// loader next to the rule's `RuleMeta` (same index) and never read by the
/// datapath. Kept in a map, so any `fw-user` can describe the rules in
/// force without the policy file. Texts are UTF-8, NUL padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    /// `RuleMeta::id`.
    pub id: u64,
    /// Line of the rule in its policy file.
    pub line: u32,
    pub _pad: u32,
    /// `name`, if the rule has one.
    pub name: [u8; RULE_NAME_BYTES],
    /// The prefix of its log lines (`log_prefix`, else `[log] prefix`).
    pub prefix: [u8; RULE_PREFIX_BYTES],
    /// The match, as `status` prints it (cut at a character boundary).
    pub text: [u8; RULE_TEXT_BYTES],
}
const _: () = assert!(size_of::<RuleInfo>() == 256);

impl RuleInfo {
    pub const EMPTY: Self = Self {
        id: 0,
        line: 0,
        _pad: 0,
        name: [0; RULE_NAME_BYTES],
        prefix: [0; RULE_PREFIX_BYTES],
        text: [0; RULE_TEXT_BYTES],
    };
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::RuleInfo {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_are_distinct() {
        use crate::policy::Chain;
        let ids = Chain::ALL.map(default_stats_id);
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    }
}

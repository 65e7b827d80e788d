//! What the datapath tells the operator once a packet's verdict is made:
//! packets and bytes per rule and chain default (`FW_RULE_STATS`, keyed by
//! the rule's stable identity so counters outlive reloads), and log events
//! through the `FW_EVENTS` ring buffer, rate limited here in the kernel so
//! a flood cannot become a flood of events.
//!
//! Both entry points read the packet from `FW_PENDING` and take the
//! outcome through per-CPU memory, so the verifier checks this code once
//! rather than once per way a verdict was reached.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};
use fw_common::{
    Direction,
    counters::{Counter, CounterValue},
    events::{Event, GLOBAL_BUCKET, LogStat, default_stats_id},
    policy::{Chain, PacketState, PolicyHeader, RULE_FLAG_LOG, RuleMeta, rule_index, rule_number},
};

use crate::{
    maps::{FW_EVENTS, FW_LOG_BUCKETS, FW_LOG_STATS, FW_PENDING, FW_RULE_STATS, FW_RULES},
    pipeline::Pending,
    policy,
};

/// `action = "log"` rules remembered per packet (each logs and counts).
pub const MAX_LOGGED: usize = 4;

/// The `log` rules a packet passed on its way to the deciding rule, as
/// `FW_RULES` indexes, in rule order.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LogTrail {
    pub slots: [u32; MAX_LOGGED],
    pub count: u32,
    pub _pad: u32,
}

impl LogTrail {
    /// Remember one more `log` rule (beyond `MAX_LOGGED` they are passed
    /// over unlogged, which `docs/policy.md` states).
    #[inline(always)]
    pub fn push(&mut self, slot: u32) {
        // SAFETY: a field of per-CPU map memory; volatile keeps the count
        // out of the verifier's state (see the module comment).
        let n = unsafe { core::ptr::read_volatile(&raw const self.count) };
        if n < MAX_LOGGED as u32 {
            self.slots[(n as usize) % MAX_LOGGED] = slot;
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(&raw mut self.count, n + 1) };
        }
    }

    #[inline(always)]
    pub fn clear(&mut self) {
        // SAFETY: as in `push`.
        unsafe { core::ptr::write_volatile(&raw mut self.count, 0) };
    }
}

/// After the rules stage decided `counter` for the packet in `FW_PENDING`.
#[inline(always)]
pub fn after_rules(dir: Direction, counter: Counter) {
    let Some(p) = FW_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot from a map lookup, used only by this program run.
    let p = unsafe { &mut *p };
    let reason = through_memory(p, counter);
    let Some(header) = crate::maps::FW_POLICY.get(p.generation & 1) else {
        return;
    };
    let chain = chain_of(p.query.chain);
    let generation = p.generation & 1;
    let base = header.chains.get(chain as usize).map_or(0, |c| c.rule_base);
    // SAFETY: a field of the per-CPU slot, written by the classifier.
    let rule = unsafe { core::ptr::read_volatile(&raw const p.rule) };
    // SAFETY: as above.
    let logged = unsafe { core::ptr::read_volatile(&raw const p.trail.count) };
    for i in 0..MAX_LOGGED {
        if i as u32 >= logged {
            break;
        }
        let slot = p.trail.slots[i];
        if let Some(meta) = FW_RULES.get(slot) {
            count(meta.id, p.bytes);
            let number = rule_number(slot, base) as u16 + 1;
            emit_for_rule(p, header, dir, reason, number, rule, meta, slot);
        }
    }
    if rule == 0 {
        count(default_stats_id(chain), p.bytes);
        if header.log_mask & (1 << (reason & 31)) != 0 {
            let limiter = Limiter::global(header);
            emit(p, dir, reason, 0, 0, rule, p.query.state, &limiter, p.now);
        }
        return;
    }
    let slot = rule_index(generation, base, u32::from(rule) - 1);
    let Some(meta) = FW_RULES.get(slot) else {
        return;
    };
    count(meta.id, p.bytes);
    if meta.flags & RULE_FLAG_LOG != 0 {
        emit_for_rule(p, header, dir, reason, rule, rule, meta, slot);
    } else if header.log_mask & (1 << (reason & 31)) != 0 {
        // A rule accepted the packet but its connection could not be
        // tracked (table full): `[log] invalid` asks for that.
        let limiter = Limiter::global(header);
        emit(p, dir, reason, 0, 0, rule, p.query.state, &limiter, p.now);
    }
}

/// After a verdict made before the rules (malformed, spoofed, invalid …):
/// an event if `[log] default`/`[log] invalid` asked for this outcome. The
/// packet's headers are in `FW_PENDING` (`note_packet`) whenever the
/// policy logs any such outcome.
#[inline(always)]
pub fn after_stateful(dir: Direction, counter: Counter, bytes: u64) {
    let Some(snap) = policy::snapshot() else {
        return;
    };
    if snap.header.log_mask == 0 {
        return;
    }
    let Some(p) = FW_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot from a map lookup, used only by this program run.
    let p = unsafe { &mut *p };
    let reason = through_memory(p, counter);
    if snap.header.log_mask & (1 << (reason & 31)) == 0 {
        return;
    }
    p.bytes = bytes;
    p.generation = snap.generation;
    let state = match reason {
        r if r == Counter::DropInvalid as u8 || r == Counter::AcceptInvalid as u8 => {
            PacketState::Invalid
        }
        r if r == Counter::DropEstablished as u8 => PacketState::Established,
        r if r == Counter::DropRelated as u8 || r == Counter::AcceptRelated as u8 => {
            PacketState::Related
        }
        _ => PacketState::New,
    };
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() } + snap.clock_offset_ns;
    let limiter = Limiter::global(snap.header);
    emit(p, dir, reason, 0, 0, 0, state as u8, &limiter, now);
}

/// The outcome, stored and read back through per-CPU memory so that the
/// code after it is verified once for every outcome.
#[inline(always)]
fn through_memory(p: &mut Pending, counter: Counter) -> u8 {
    // SAFETY: a field of the per-CPU slot.
    unsafe {
        core::ptr::write_volatile(&raw mut p.outcome, counter as u8);
        core::ptr::read_volatile(&raw const p.outcome)
    }
}

#[inline(always)]
fn chain_of(v: u8) -> Chain {
    match v {
        0 => Chain::Input,
        1 => Chain::Output,
        _ => Chain::Forward,
    }
}

/// Add the packet to the counters of the rule (or default) `id`.
#[inline(always)]
fn count(id: u64, bytes: u64) {
    match FW_RULE_STATS.get_ptr_mut(id) {
        // SAFETY: this CPU's value of a per-CPU hash entry.
        Some(v) => unsafe {
            (*v).packets += 1;
            (*v).bytes += bytes;
        },
        None => {
            // Only a rule whose entry the loader has not created yet (a
            // reload in progress) gets here. On a per-CPU map this sets
            // this CPU's value and zeroes the others.
            let first = CounterValue { packets: 1, bytes };
            let _ = FW_RULE_STATS.insert(id, first, u64::from(BPF_NOEXIST));
        }
    }
}

#[inline(always)]
fn log_stat(s: LogStat) {
    if let Some(c) = FW_LOG_STATS.get_ptr_mut(s as u32) {
        // SAFETY: per-CPU slot from a map lookup.
        unsafe { *c += 1 };
    }
}

/// Which limiter an event takes its token from.
struct Limiter {
    slot: u32,
    interval_ns: u64,
    tolerance_ns: u64,
}

impl Limiter {
    #[inline(always)]
    fn global(header: &PolicyHeader) -> Self {
        Self {
            slot: GLOBAL_BUCKET,
            interval_ns: header.log_interval_ns,
            tolerance_ns: header.log_tolerance_ns,
        }
    }
}

#[expect(clippy::too_many_arguments, reason = "the event's fields")]
#[inline(always)]
fn emit_for_rule(
    p: &Pending,
    header: &PolicyHeader,
    dir: Direction,
    reason: u8,
    log_rule: u16,
    rule: u16,
    meta: &RuleMeta,
    slot: u32,
) {
    // A rule with its own `log_rate` has its own limiter, in its slot.
    let limiter = if meta.log_interval_ns != 0 {
        Limiter {
            slot,
            interval_ns: meta.log_interval_ns,
            tolerance_ns: meta.log_tolerance_ns,
        }
    } else {
        Limiter::global(header)
    };
    emit(
        p,
        dir,
        reason,
        log_rule,
        meta.id,
        rule,
        p.query.state,
        &limiter,
        p.now,
    );
}

/// Take a token from `limiter` and write one event: counted as emitted,
/// suppressed (no token) or lost (no room in the ring).
#[expect(clippy::too_many_arguments, reason = "the event's fields")]
#[inline(always)]
fn emit(
    p: &Pending,
    dir: Direction,
    reason: u8,
    log_rule: u16,
    rule_id: u64,
    rule: u16,
    state: u8,
    limiter: &Limiter,
    now: u64,
) {
    let Some(tat) = FW_LOG_BUCKETS.get_ptr_mut(limiter.slot) else {
        return;
    };
    // SAFETY: an 8-byte aligned word of map memory that lives as long as
    // the map; every CPU updates it only through `rate_take`.
    if !unsafe { fw_common::rate::rate_take(tat, now, limiter.interval_ns, limiter.tolerance_ns) } {
        log_stat(LogStat::Suppressed);
        return;
    }
    let Some(mut entry) = FW_EVENTS.reserve::<Event>(0) else {
        log_stat(LogStat::Lost);
        return;
    };
    let q = &p.query;
    // Field by field into the ring's memory: an `Event` built on the stack
    // first would not fit beside the pipeline's frame. Every byte is
    // written, padding too, so no stale ring contents reach the reader.
    let e: *mut Event = entry.as_mut_ptr();
    // SAFETY: `e` points at a reserved, exclusively owned ring slot of
    // `size_of::<Event>()` bytes.
    unsafe {
        (*e).time_ns = now;
        (*e).rule_id = rule_id;
        (*e).src = q.src;
        (*e).dst = q.dst;
        (*e).ifindex = q.ifindex;
        #[expect(clippy::cast_possible_truncation, reason = "packets are < 4 GiB")]
        let len = p.bytes as u32;
        (*e).len = len;
        (*e).sport = q.sport;
        (*e).dport = q.dport;
        (*e).log_rule = log_rule;
        (*e).rule = rule;
        (*e).reason = reason;
        (*e).direction = dir as u8;
        (*e).chain = q.chain;
        (*e).family = q.family;
        (*e).proto = q.proto;
        (*e).tcp_flags = q.tcp_flags;
        (*e).icmp_type = q.icmp_type;
        (*e).state = state;
        (*e).generation = (p.generation & 1) as u8;
        (*e)._pad = [0; 7];
    }
    entry.submit(0);
    log_stat(LogStat::Emitted);
}

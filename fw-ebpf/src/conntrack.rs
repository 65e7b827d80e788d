//! The connection tables in the datapath: key building, lookup with lazy
//! expiry, entry creation, and moving entries between the two tables. The
//! per-packet logic itself (state machine, windows, expiry) is in
//! `fw_common::conntrack`, shared with the host tests.
//!
//! Established flows live in `FW_CONNTRACK`, which never evicts; flows
//! being opened or closed live in `FW_CT_TRANSIENT`, an LRU, so a flood of
//! new flows only pushes out other new or closing ones.

use aya_ebpf::bindings::{BPF_ANY, BPF_NOEXIST};
use fw_common::{
    Direction,
    conntrack::{
        CT_FLAG_FORWARD, CtEntry, CtKey, CtState, FRAG_TIMEOUT_NS, FragEntry, FragKey,
        JudgedWindows, Timeouts, ct_apply, is_expired, is_original, is_transient_state,
    },
};

use crate::{
    maps::{FW_CONNTRACK, FW_CT_TRANSIENT, FW_FRAGS},
    parse::Headers,
};

/// `-EEXIST`, as map helpers return it.
const NEG_EEXIST: i32 = -17;

/// Build the (local, remote) key of the flow `h` belongs to, seen from `dir`.
#[inline(always)]
pub fn flow_key(h: &Headers, dir: Direction, local_port: u16, remote_port: u16) -> CtKey {
    let mut key = CtKey::default();
    let (local, remote) = match dir {
        Direction::Ingress => (h.dst, h.src),
        Direction::Egress => (h.src, h.dst),
    };
    key.local = local;
    key.remote = remote;
    key.local_port = local_port;
    key.remote_port = remote_port;
    key.proto = h.proto;
    key.family = h.family;
    key
}

/// A flow found for a packet.
pub struct Found {
    pub entry: *mut CtEntry,
    /// The entry is keyed by the packet's key reversed (the far side of a
    /// routed flow).
    pub reversed: bool,
    /// The packet travels in the flow's original direction.
    pub original: bool,
    /// A flow routed through the host.
    pub forward: bool,
}

/// The flow the packet keyed `key` (as seen from `dir`) belongs to. Routed
/// (forward) flows keep the key of their first packet, so their other
/// direction is found by the reversed key.
#[inline(always)]
pub fn find(key: &CtKey, now: u64, dir: Direction) -> Option<Found> {
    if let Some((e, _)) = lookup(key, now) {
        // SAFETY: pointer from a map lookup.
        let entry = unsafe { &*e };
        return Some(Found {
            entry: e,
            reversed: false,
            original: is_original(entry, dir),
            forward: entry.flags & CT_FLAG_FORWARD != 0,
        });
    }
    let rev = reversed(key);
    let (e, _) = lookup(&rev, now)?;
    // SAFETY: pointer from a map lookup.
    if unsafe { (*e).flags } & CT_FLAG_FORWARD == 0 {
        return None;
    }
    // The reversed key matched: on ingress this is the reply direction; on
    // egress it is the original packet leaving by the other interface.
    Some(Found {
        entry: e,
        reversed: true,
        original: dir == Direction::Egress,
        forward: true,
    })
}

/// The key of the same flow seen from its other end.
#[inline(always)]
pub fn reversed(key: &CtKey) -> CtKey {
    let mut rev = *key;
    rev.local = key.remote;
    rev.remote = key.local;
    rev.local_port = key.remote_port;
    rev.remote_port = key.local_port;
    rev
}

/// The entry for `key` and whether it is in the transient table.
#[inline(always)]
fn slot(key: &CtKey) -> Option<(*mut CtEntry, bool)> {
    if let Some(e) = FW_CONNTRACK.get_ptr_mut(key) {
        return Some((e, false));
    }
    FW_CT_TRANSIENT.get_ptr_mut(key).map(|e| (e, true))
}

/// The live entry for `key` in either table (and whether it is the
/// transient one), reclaiming it if expired.
#[inline(always)]
pub fn lookup(key: &CtKey, now: u64) -> Option<(*mut CtEntry, bool)> {
    let (entry, transient) = slot(key)?;
    // SAFETY: the map returned a valid pointer to a value of this type.
    if is_expired(unsafe { &*entry }, now) {
        if transient {
            let _ = FW_CT_TRANSIENT.remove(key);
        } else {
            let _ = FW_CONNTRACK.remove(key);
        }
        return None;
    }
    Some((entry, transient))
}

/// Forget a flow (a TCP connection reopened from TIME_WAIT or CLOSE).
#[inline(always)]
pub fn forget(key: &CtKey) {
    let _ = FW_CONNTRACK.remove(key);
    let _ = FW_CT_TRANSIENT.remove(key);
}

/// Record an accepted packet on the entry of `key`, looked up again (the
/// rules program cannot inherit a pointer across the tail call, and the
/// entry may have moved or expired meanwhile).
#[inline(always)]
pub fn update(
    key: &CtKey,
    original: bool,
    next: CtState,
    now: u64,
    timeouts: &Timeouts,
    bytes: u64,
    windows: Option<JudgedWindows<'_>>,
) {
    // Evicted or expired meanwhile: nothing to update.
    if let Some((entry, transient)) = slot(key) {
        update_at(
            key, entry, transient, original, next, now, timeouts, bytes, windows,
        );
    }
}

/// Record an accepted packet on `entry` (of `key`, in the transient table
/// or not), and move the entry to the table its new state belongs in.
#[expect(clippy::too_many_arguments, reason = "one packet's worth of facts")]
#[inline(always)]
fn update_at(
    key: &CtKey,
    entry: *mut CtEntry,
    was_transient: bool,
    original: bool,
    next: CtState,
    now: u64,
    timeouts: &Timeouts,
    bytes: u64,
    windows: Option<JudgedWindows<'_>>,
) {
    // SAFETY: pointer from a map lookup. Another CPU may update the same
    // entry concurrently: the windows are folded in atomically
    // (`store_windows`); a counter may come out slightly stale.
    let e = unsafe { &mut *entry };
    ct_apply(e, original, next, now, timeouts, bytes, windows);
    if is_transient_state(next as u8) == was_transient {
        return;
    }
    // The helpers copy the value straight from the old table's memory.
    let e: &CtEntry = e;
    if was_transient {
        // Established: into the table that never evicts. If that table is
        // full, the flow stays where it is (still tracked, evictable).
        if FW_CONNTRACK.insert(key, e, u64::from(BPF_ANY)).is_ok() {
            let _ = FW_CT_TRANSIENT.remove(key);
        }
    } else if FW_CT_TRANSIENT.insert(key, e, u64::from(BPF_ANY)).is_ok() {
        // Closing: from now on it may be evicted before established flows.
        let _ = FW_CONNTRACK.remove(key);
    }
}

/// Insert `entry` (built by `ct_init` in scratch space) for a new flow in
/// state `state`, into the table that state belongs in. `Err` when no
/// table took it.
#[inline(always)]
pub fn create(key: &CtKey, entry: &CtEntry, state: CtState) -> Result<(), ()> {
    let flags = u64::from(BPF_NOEXIST);
    let res = if is_transient_state(state as u8) {
        FW_CT_TRANSIENT.insert(key, entry, flags)
    } else {
        match FW_CONNTRACK.insert(key, entry, flags) {
            Ok(()) => Ok(()),
            Err(NEG_EEXIST) => Err(NEG_EEXIST),
            // The established table is full: track it as evictable.
            Err(_) => FW_CT_TRANSIENT.insert(key, entry, flags),
        }
    };
    match res {
        // Ok, or another CPU created the same flow a moment ago: tracked.
        Ok(()) | Err(NEG_EEXIST) => Ok(()),
        Err(_) => Err(()),
    }
}

/// Fill `key` with the `FW_FRAGS` key of a fragment's datagram (in
/// place: the key is built in per-CPU space, not on the stack).
#[inline(always)]
pub fn fill_frag_key(key: &mut FragKey, h: &Headers) {
    key.src = h.src;
    key.dst = h.dst;
    key.id = h.frag_id;
    key.proto = h.proto;
    key.family = h.family;
    key._pad = [0; 2];
}

/// Remember that the first fragment of a datagram was accepted.
#[inline(always)]
pub fn remember_fragment(key: &FragKey, l4_end: u16, now: u64) {
    let entry = FragEntry {
        expires_ns: now + FRAG_TIMEOUT_NS,
        l4_end,
        _pad: [0; 6],
    };
    let _ = FW_FRAGS.insert(key, entry, u64::from(BPF_ANY));
}

/// May this later fragment pass: was its datagram's first fragment
/// accepted, recently, and does it stay clear of the layer-4 header?
#[inline(always)]
pub fn fragment_allowed(h: &Headers, now: u64) -> bool {
    let mut key = FragKey::default();
    fill_frag_key(&mut key, h);
    let key = &key;
    let frag_off = h.frag_off;
    let Some(e) = FW_FRAGS.get_ptr(key) else {
        return false;
    };
    // SAFETY: pointer from a map lookup.
    let e = unsafe { &*e };
    if now > e.expires_ns {
        let _ = FW_FRAGS.remove(key);
        return false;
    }
    frag_off >= e.l4_end
}

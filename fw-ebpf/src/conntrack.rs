//! The connection table in the datapath: key building, lookup with lazy
//! expiry, and entry creation. The state machine itself is in
//! `fw_common::conntrack`, shared with the host tests.

use aya_ebpf::bindings::BPF_NOEXIST;
use fw_common::{
    Direction,
    conntrack::{
        CT_FLAG_FORWARD, CT_FLAG_SEEN_REPLY, CtEntry, CtKey, CtState, TcpWindow, is_expired,
        is_original,
    },
};

use crate::{maps::FW_CONNTRACK, parse::Headers};

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
    /// The entry's key (the reversed one for the far side of a routed flow).
    pub key: CtKey,
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
    if let Some(e) = lookup(key, now) {
        // SAFETY: pointer from a map lookup.
        let entry = unsafe { &*e };
        return Some(Found {
            entry: e,
            key: *key,
            original: is_original(entry, dir),
            forward: entry.flags & CT_FLAG_FORWARD != 0,
        });
    }
    let mut rev = *key;
    rev.local = key.remote;
    rev.remote = key.local;
    rev.local_port = key.remote_port;
    rev.remote_port = key.local_port;
    let e = lookup(&rev, now)?;
    // SAFETY: pointer from a map lookup.
    if unsafe { (*e).flags } & CT_FLAG_FORWARD == 0 {
        return None;
    }
    // The reversed key matched: on ingress this is the reply direction; on
    // egress it is the original packet leaving by the other interface.
    Some(Found {
        entry: e,
        key: rev,
        original: dir == Direction::Egress,
        forward: true,
    })
}

/// The live entry for `key`, reclaiming it if it has expired.
#[inline(always)]
pub fn lookup(key: &CtKey, now: u64) -> Option<*mut CtEntry> {
    let entry = FW_CONNTRACK.get_ptr_mut(key)?;
    // SAFETY: the map returned a valid pointer to a value of this type.
    if is_expired(unsafe { &*entry }, now) {
        let _ = FW_CONNTRACK.remove(key);
        return None;
    }
    Some(entry)
}

/// Record a packet on an existing entry.
#[inline(always)]
pub fn touch(entry: *mut CtEntry, original: bool, state: CtState, now: u64, bytes: u64) {
    // SAFETY: pointer from a map lookup. Concurrent updates from other CPUs
    // may race; the worst outcome is a slightly stale counter or timestamp.
    let e = unsafe { &mut *entry };
    let i = if original { 0 } else { 1 };
    e.packets[i] += 1;
    e.bytes[i] += bytes;
    e.last_seen_ns = now;
    e.expires_ns =
        fw_common::conntrack::expiry(&fw_common::conntrack::DEFAULT_TIMEOUTS, state as u8, now);
    e.state = state as u8;
    if !original {
        e.flags |= CT_FLAG_SEEN_REPLY;
    }
}

/// Create the entry for a new flow the policy accepted. `Err` when the
/// table refused the insert.
#[inline(always)]
pub fn create(
    key: &CtKey,
    dir: Direction,
    state: CtState,
    rule: u16,
    now: u64,
    bytes: u64,
    flags: u8,
) -> Result<(), ()> {
    let entry = CtEntry {
        created_ns: now,
        last_seen_ns: now,
        expires_ns: fw_common::conntrack::expiry(
            &fw_common::conntrack::DEFAULT_TIMEOUTS,
            state as u8,
            now,
        ),
        packets: [1, 0],
        bytes: [bytes, 0],
        tcp: [TcpWindow::default(); 2],
        state: state as u8,
        origin: dir as u8,
        flags,
        _pad0: 0,
        rule,
        _pad1: [0; 2],
    };
    match FW_CONNTRACK.insert(key, entry, u64::from(BPF_NOEXIST)) {
        // Ok, or another CPU created the same flow a moment ago: tracked.
        Ok(()) | Err(NEG_EEXIST) => Ok(()),
        Err(_) => Err(()),
    }
}

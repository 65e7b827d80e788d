//! Adopting connections that were open before the firewall was loaded.
//!
//! Only a pure SYN may create state in the datapath, so without this step a
//! first `load` would cut every open TCP session, the operator's SSH
//! included. netfilter avoids that by picking up mid-stream connections;
//! fw instead reads the kernel's socket table once at load time and enters
//! each established connection as ESTABLISHED.

use std::{collections::HashSet, fs};

use fw_common::{
    Direction,
    conntrack::{
        CT_FLAG_ADOPTED, CT_FLAG_LIBERAL, CT_FLAG_SEEN_REPLY, CtEntry, CtKey, CtState, Timeouts,
        expiry,
    },
    family, ipproto,
};

/// `st` values of `/proc/net/tcp` (`include/net/tcp_states.h`).
const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0a;

#[derive(Debug, PartialEq, Eq)]
struct Socket {
    local: [u32; 4],
    local_port: u16,
    remote: [u32; 4],
    remote_port: u16,
    family: u8,
    state: u8,
}

/// Parse `ADDR:PORT` as /proc/net/tcp{,6} prints it: the address as 32-bit
/// words in host order (so the bytes in memory are network order), the port
/// in hex.
pub(crate) fn parse_endpoint(s: &str) -> Option<([u32; 4], u16, u8)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut words = [0u32; 4];
    let family = match addr.len() {
        8 => {
            words[0] = u32::from_str_radix(addr, 16).ok()?;
            family::IPV4
        }
        32 => {
            for (i, w) in words.iter_mut().enumerate() {
                *w = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
            }
            family::IPV6
        }
        _ => return None,
    };
    Some((words, port, family))
}

fn parse_table(text: &str) -> Vec<Socket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let _slot = f.next()?;
            let (local, local_port, family) = parse_endpoint(f.next()?)?;
            let (remote, remote_port, _) = parse_endpoint(f.next()?)?;
            let state = u8::from_str_radix(f.next()?, 16).ok()?;
            Some(Socket {
                local,
                local_port,
                remote,
                remote_port,
                family,
                state,
            })
        })
        .collect()
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) travels as IPv4 on the wire.
pub(crate) fn unmap(addr: [u32; 4], fam: u8) -> ([u32; 4], u8) {
    if fam == family::IPV6 && addr[0] == 0 && addr[1] == 0 && addr[2] == u32::from_be(0xffff) {
        ([addr[3], 0, 0, 0], family::IPV4)
    } else {
        (addr, fam)
    }
}

fn is_loopback(addr: [u32; 4], fam: u8) -> bool {
    if fam == family::IPV4 {
        addr[0].to_ne_bytes()[0] == 127
    } else {
        addr == [0, 0, 0, u32::from_be(1)]
    }
}

fn entries_from(sockets: &[Socket], now_ns: u64, timeouts: &Timeouts) -> Vec<(CtKey, CtEntry)> {
    let listening: HashSet<u16> = sockets
        .iter()
        .filter(|s| s.state == TCP_LISTEN)
        .map(|s| s.local_port)
        .collect();
    sockets
        .iter()
        .filter(|s| s.state == TCP_ESTABLISHED)
        .filter_map(|s| {
            let (local, fam) = unmap(s.local, s.family);
            let (remote, _) = unmap(s.remote, s.family);
            if is_loopback(local, fam) || is_loopback(remote, fam) {
                return None;
            }
            let key = CtKey {
                local,
                remote,
                local_port: s.local_port,
                remote_port: s.remote_port,
                proto: ipproto::TCP,
                family: fam,
                _pad: [0; 2],
            };
            // A connection to one of our listening ports was opened by the peer.
            let origin = if listening.contains(&s.local_port) {
                Direction::Ingress
            } else {
                Direction::Egress
            };
            let entry = CtEntry {
                created_ns: now_ns,
                last_seen_ns: now_ns,
                expires_ns: expiry(timeouts, CtState::TcpEstablished as u8, now_ns),
                state: CtState::TcpEstablished as u8,
                origin: origin as u8,
                // The sequence numbers and window scaling of a connection
                // opened before we watched are unknown: track it liberally.
                flags: CT_FLAG_SEEN_REPLY | CT_FLAG_ADOPTED | CT_FLAG_LIBERAL,
                ..CtEntry::default()
            };
            Some((key, entry))
        })
        .collect()
}

/// Connection-table entries for every established TCP connection of this
/// network namespace, stamped with the datapath clock `now_ns` and expiring
/// by the policy's `timeouts`.
#[must_use]
pub fn established_connections(now_ns: u64, timeouts: &Timeouts) -> Vec<(CtKey, CtEntry)> {
    let mut sockets = Vec::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = fs::read_to_string(path) {
            sockets.extend(parse_table(&text));
        }
    }
    entries_from(&sockets, now_ns, timeouts)
}

#[cfg(test)]
mod tests {
    use fw_common::conntrack::DEFAULT_TIMEOUTS;

    use super::*;

    const TCP4: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0B0200C0:0016 0A0200C0:D431 01 00000000:00000000 02:000A7D2C 00000000     0        0 2 4 0000000000000000 20 4 29 10 -1
   2: 0B0200C0:A2F0 0A0200C0:0050 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 29 10 -1
   3: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 20 4 29 10 -1
";

    #[test]
    fn established_ipv4_sockets_become_entries() {
        let entries = entries_from(&parse_table(TCP4), 7, &DEFAULT_TIMEOUTS);
        assert_eq!(entries.len(), 2, "the loopback connection is skipped");
        let (k, e) = &entries[0];
        assert_eq!(k.local[0].to_ne_bytes(), [192, 0, 2, 11]);
        assert_eq!(k.remote[0].to_ne_bytes(), [192, 0, 2, 10]);
        assert_eq!((k.local_port, k.remote_port), (22, 0xd431));
        assert_eq!(
            e.origin,
            Direction::Ingress as u8,
            "port 22 is listening: the peer connected to us"
        );
        assert_eq!(e.state, CtState::TcpEstablished as u8);
        assert_eq!(e.last_seen_ns, 7);
        let (k, e) = &entries[1];
        assert_eq!((k.local_port, k.remote_port), (0xa2f0, 80));
        assert_eq!(e.origin, Direction::Egress as u8);
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let text = "header\n   0: B80D0120000000000000000011000000:0016 B80D0120000000000000000010000000:9C40 01 0\n   1: 0000000000000000FFFF00000B0200C0:0050 0000000000000000FFFF00000A0200C0:9C41 01 0\n";
        let entries = entries_from(&parse_table(text), 0, &DEFAULT_TIMEOUTS);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0.family, family::IPV6);
        let bytes: Vec<u8> = entries[0]
            .0
            .local
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        assert_eq!(
            bytes,
            [
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11
            ]
        );
        assert_eq!(
            entries[1].0.family,
            family::IPV4,
            "IPv4-mapped is IPv4 on the wire"
        );
        assert_eq!(entries[1].0.local[0].to_ne_bytes(), [192, 0, 2, 11]);
    }
}

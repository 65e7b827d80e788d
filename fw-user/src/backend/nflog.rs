//! Log events of the iptables backend: its LOG rules are NFLOG rules
//! (group `iptables::NFLOG_GROUP`), read here from a netfilter netlink
//! socket (messages built and parsed by `netlink-packet-netfilter`) and
//! turned into the same `EventRecord`s the eBPF datapath's events become.
//!
//! NFLOG, unlike the LOG target, works in every network namespace, and the
//! kernel hands over the packet's first bytes, so the addresses and ports
//! are read from the packet itself rather than parsed out of syslog text.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::SystemTime,
};

use fw_common::ipproto;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::{
    NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    nflog::{ConfigCmd, ConfigMode, PacketNla, ULogMessage, config_request},
};
use netlink_sys::{Socket, constants::NETLINK_NETFILTER};

use crate::{
    error::{Error, Result},
    events::EventRecord,
    policy::icmp,
};

/// Bytes of each packet the kernel copies to us: enough for IPv6 and TCP
/// headers.
const COPY_BYTES: u16 = 128;

/// A socket bound to NFLOG group `group`.
pub struct Reader {
    socket: Socket,
    buf: Vec<u8>,
}

fn send(socket: &Socket, msg: &NetlinkMessage<NetfilterMessage>) -> std::io::Result<()> {
    let mut buf = vec![0; msg.header.length as usize];
    msg.serialize(&mut buf[..]);
    socket.send(&buf, 0).map(|_| ())
}

impl Reader {
    /// Bind to `group` (both families).
    ///
    /// # Errors
    /// The socket cannot be opened or the kernel refuses the binding
    /// (another process holds the group).
    pub fn bind(group: u16) -> Result<Self> {
        let io = |what: &str, e: std::io::Error| Error::io(what.to_string(), e);
        let mut socket =
            Socket::new(NETLINK_NETFILTER).map_err(|e| io("cannot open a netfilter socket", e))?;
        socket
            .bind_auto()
            .map_err(|e| io("cannot bind the netfilter socket", e))?;
        let msg = config_request(
            NetfilterProtoFamily::Unspec,
            group,
            vec![
                ConfigCmd::Bind.into(),
                ConfigMode::new_packet(u32::from(COPY_BYTES)).into(),
            ],
        );
        send(&socket, &msg).map_err(|e| io("cannot bind the NFLOG group", e))?;
        let mut reader = Self {
            socket,
            buf: vec![0; 65_536],
        };
        // The acknowledgement (an error message with code 0, or an error).
        let n = reader
            .socket
            .recv(&mut &mut reader.buf[..], 0)
            .map_err(|e| io("no answer to the NFLOG binding", e))?;
        if let Ok(m) = NetlinkMessage::<NetfilterMessage>::deserialize(&reader.buf[..n])
            && let NetlinkPayload::Error(e) = m.payload
            && let Some(code) = e.code
        {
            return Err(Error::io(
                format!("the kernel refused NFLOG group {group} (is another fw-user reading it?)"),
                std::io::Error::from_raw_os_error(-code.get()),
            ));
        }
        Ok(reader)
    }

    /// Wait for the next batch of logged packets.
    ///
    /// # Errors
    /// The socket failed.
    pub fn next_batch(&mut self) -> Result<Vec<EventRecord>> {
        let n = self
            .socket
            .recv(&mut &mut self.buf[..], 0)
            .map_err(|e| Error::io("cannot read NFLOG", e))?;
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < n {
            let Ok(m) = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[offset..n])
            else {
                break;
            };
            let len = m.header.length as usize;
            if let NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                ..
            }) = &m.payload
            {
                out.push(record(nlas));
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
        Ok(out)
    }
}

fn ifname(index: u32) -> String {
    nix::net::if_::if_indextoname(index).map_or_else(
        |_| format!("if{index}"),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// One logged packet as an event.
fn record(nlas: &[PacketNla]) -> EventRecord {
    let (mut indev, mut outdev, mut prefix, mut payload) = (None, None, String::new(), &[][..]);
    for nla in nlas {
        match nla {
            PacketNla::IfIndexInDev(i) => indev = Some(*i),
            PacketNla::IfIndexOutDev(i) => outdev = Some(*i),
            PacketNla::Prefix(p) => prefix = p.to_string_lossy().into_owned(),
            PacketNla::Payload(p) => payload = p,
            _ => {}
        }
    }
    let (direction, chain, iface) = match (indev, outdev) {
        (Some(i), Some(_)) => ("input", "forward", ifname(i)),
        (Some(i), None) => ("input", "input", ifname(i)),
        (None, Some(o)) => ("output", "output", ifname(o)),
        (None, None) => ("input", "input", String::new()),
    };
    let h = headers(payload);
    EventRecord {
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        prefix,
        direction,
        chain,
        interface: iface,
        verdict: "log",
        reason: "iptables-log",
        rule: None,
        rule_name: None,
        log_rule: None,
        log_rule_name: None,
        family: h.as_ref().map(|h| h.family),
        proto: h.as_ref().map(|h| icmp::proto_name(h.proto)),
        src: h.as_ref().map(|h| h.src),
        dst: h.as_ref().map(|h| h.dst),
        sport: h.as_ref().and_then(|h| h.ports.map(|p| p.0)),
        dport: h.as_ref().and_then(|h| h.ports.map(|p| p.1)),
        tcp_flags: h.as_ref().map_or_else(Vec::new, |h| {
            crate::events::tcp_flag_names(h.tcp_flags.unwrap_or(0))
        }),
        icmp_type: h.as_ref().and_then(|h| h.icmp_type),
        state: "new",
        len: h.as_ref().map_or(0, |h| h.len),
    }
}

/// What an event shows of a packet's IP and transport headers.
struct Headers {
    family: &'static str,
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    ports: Option<(u16, u16)>,
    tcp_flags: Option<u8>,
    icmp_type: Option<u8>,
    len: u32,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Read the headers of an IP packet (no IPv6 extension headers walked:
/// their protocol is then shown as the next header).
fn headers(p: &[u8]) -> Option<Headers> {
    let version = p.first()? >> 4;
    let (family, proto, src, dst, l4, len) = match version {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let s: [u8; 4] = p.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            (
                "ipv4",
                *p.get(9)?,
                IpAddr::V4(Ipv4Addr::from(s)),
                IpAddr::V4(Ipv4Addr::from(d)),
                ihl,
                u32::from(be16(p, 2)?),
            )
        }
        6 => {
            let s: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            (
                "ipv6",
                *p.get(6)?,
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                40,
                u32::from(be16(p, 4)?) + 40,
            )
        }
        _ => return None,
    };
    let ports = matches!(proto, ipproto::TCP | ipproto::UDP)
        .then(|| Some((be16(p, l4)?, be16(p, l4 + 2)?)))
        .flatten();
    Some(Headers {
        family,
        proto,
        src,
        dst,
        ports,
        tcp_flags: (proto == ipproto::TCP)
            .then(|| p.get(l4 + 13).copied())
            .flatten(),
        icmp_type: matches!(proto, ipproto::ICMP | ipproto::ICMPV6)
            .then(|| p.get(l4).copied())
            .flatten(),
        len,
    })
}

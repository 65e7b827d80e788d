//! Anti-spoof: loopback addresses never arrive on (or leave through) a
//! guarded interface, whatever the policy says.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fw_common::{Direction, conntrack::tcp_flags::SYN, counters::Counter};
use fw_tests::{
    datapath::{Datapath, assert_table},
    lacks_privileges,
    packet::{CLIENT_MAC, CLIENT4, CLIENT6, L4, SERVER_MAC, SERVER4, SERVER6, Vlan, frame_between},
};

#[test]
fn loopback_addresses_are_dropped_on_guarded_interfaces() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy("[defaults]\ninput = \"accept\"\noutput = \"accept\"\n");
    let syn = |src: IpAddr, dst: IpAddr| {
        frame_between(
            src,
            dst,
            CLIENT_MAC,
            SERVER_MAC,
            Vlan::None,
            L4::Tcp {
                sport: 1234,
                dport: 22,
                flags: SYN,
            },
        )
    };
    let lo4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let rows = vec![
        (
            "source 127.0.0.1",
            syn(lo4, SERVER4.into()),
            Counter::DropSpoofed,
        ),
        (
            "source 127.255.0.9",
            syn(Ipv4Addr::new(127, 255, 0, 9).into(), SERVER4.into()),
            Counter::DropSpoofed,
        ),
        (
            "destination 127.0.0.1",
            syn(CLIENT4.into(), lo4),
            Counter::DropSpoofed,
        ),
        (
            "source ::1",
            syn(Ipv6Addr::LOCALHOST.into(), SERVER6.into()),
            Counter::DropSpoofed,
        ),
        (
            "destination ::1",
            syn(CLIENT6.into(), Ipv6Addr::LOCALHOST.into()),
            Counter::DropSpoofed,
        ),
        (
            "128.0.0.1 is not loopback",
            syn(Ipv4Addr::new(128, 0, 0, 1).into(), SERVER4.into()),
            Counter::AcceptDefault,
        ),
    ];
    assert_table(&mut dp, Direction::Ingress, &rows);
    let out = frame_between(
        SERVER4.into(),
        lo4,
        SERVER_MAC,
        CLIENT_MAC,
        Vlan::None,
        L4::Udp { sport: 1, dport: 2 },
    );
    assert_table(
        &mut dp,
        Direction::Egress,
        &[("egress to 127.0.0.1", out, Counter::DropSpoofed)],
    );
}

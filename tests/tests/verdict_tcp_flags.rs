//! New TCP: only a pure SYN to an allowed port opens a connection; every
//! other flag combination without state is INVALID and never reaches the
//! rules. Checked for IPv4 and IPv6, under both default policies.

use fw_common::{
    Direction,
    conntrack::tcp_flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG},
    counters::Counter,
};
use fw_tests::{
    datapath::{Datapath, assert_table},
    lacks_privileges,
    packet::{L4, Vlan, Way, frame},
};

const POLICY: &str = r#"
[defaults]
input = "drop"
output = "accept"
[[input]]
proto = "tcp"
dport = [22, 80, "8000-8100"]
action = "accept"
"#;

/// Each row uses its own source port: a row must not land in a flow an
/// earlier row opened.
fn tcp(v6: bool, dport: u16, flags: u8) -> Vec<u8> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static SPORT: AtomicU16 = AtomicU16::new(40_000);
    frame(
        v6,
        Way::In,
        Vlan::None,
        L4::Tcp {
            sport: SPORT.fetch_add(1, Ordering::Relaxed),
            dport,
            flags,
        },
    )
}

#[test]
fn syn_and_invalid_flags_table() {
    if lacks_privileges() {
        return;
    }
    for v6 in [false, true] {
        let mut dp = Datapath::with_policy(POLICY);
        let rows = vec![
            ("SYN to allowed 22", tcp(v6, 22, SYN), Counter::AcceptRule),
            (
                "SYN+ECE+CWR (ECN setup) to allowed 80",
                tcp(v6, 80, SYN | ECE | CWR),
                Counter::AcceptRule,
            ),
            (
                "SYN to range start 8000",
                tcp(v6, 8000, SYN),
                Counter::AcceptRule,
            ),
            (
                "SYN to range end 8100",
                tcp(v6, 8100, SYN),
                Counter::AcceptRule,
            ),
            (
                "SYN to 8101 just past the range",
                tcp(v6, 8101, SYN),
                Counter::DropDefault,
            ),
            ("SYN to denied 23", tcp(v6, 23, SYN), Counter::DropDefault),
            ("ACK without state", tcp(v6, 22, ACK), Counter::DropInvalid),
            (
                "FIN+ACK without state",
                tcp(v6, 22, FIN | ACK),
                Counter::DropInvalid,
            ),
            ("RST without state", tcp(v6, 22, RST), Counter::DropInvalid),
            (
                "SYN+ACK without state",
                tcp(v6, 22, SYN | ACK),
                Counter::DropInvalid,
            ),
            ("SYN+FIN", tcp(v6, 22, SYN | FIN), Counter::DropInvalid),
            ("SYN+RST", tcp(v6, 22, SYN | RST), Counter::DropInvalid),
            ("NULL (no flags)", tcp(v6, 22, 0), Counter::DropInvalid),
            (
                "XMAS (FIN+PSH+URG)",
                tcp(v6, 22, FIN | PSH | URG),
                Counter::DropInvalid,
            ),
            ("all flags", tcp(v6, 22, 0xff), Counter::DropInvalid),
            ("bare FIN", tcp(v6, 22, FIN), Counter::DropInvalid),
        ];
        assert_table(&mut dp, Direction::Ingress, &rows);
        // Only the accepted SYNs created state: 22, 80, 8000, 8100.
        assert_eq!(dp.conntrack().len(), 4, "v6={v6}");
    }
}

#[test]
fn invalid_is_dropped_even_with_default_accept() {
    if lacks_privileges() {
        return;
    }
    let mut dp = Datapath::with_policy("[defaults]\ninput = \"accept\"\n");
    let rows = vec![
        (
            "SYN to any port",
            tcp(false, 4444, SYN),
            Counter::AcceptDefault,
        ),
        (
            "ACK without state",
            tcp(false, 4444, ACK),
            Counter::DropInvalid,
        ),
        ("NULL", tcp(false, 4444, 0), Counter::DropInvalid),
        ("SYN+FIN", tcp(true, 4444, SYN | FIN), Counter::DropInvalid),
    ];
    assert_table(&mut dp, Direction::Ingress, &rows);
}

#[test]
fn egress_has_the_same_shape() {
    if lacks_privileges() {
        return;
    }
    let out = |dport, flags| {
        frame(
            false,
            Way::Out,
            Vlan::None,
            L4::Tcp {
                sport: 50_000,
                dport,
                flags,
            },
        )
    };
    let mut dp = Datapath::with_policy(
        "[defaults]\noutput = \"drop\"\n[[output]]\nproto = \"tcp\"\ndport = [443]\naction = \"accept\"\n",
    );
    let rows = vec![
        (
            "outbound SYN to allowed 443",
            out(443, SYN),
            Counter::AcceptRule,
        ),
        (
            "outbound SYN to 25 (default drop)",
            out(25, SYN),
            Counter::DropDefault,
        ),
        (
            "outbound ACK without state",
            out(25, ACK),
            Counter::DropInvalid,
        ),
        (
            "outbound SYN+FIN",
            out(443, SYN | FIN),
            Counter::DropInvalid,
        ),
    ];
    assert_table(&mut dp, Direction::Egress, &rows);
}

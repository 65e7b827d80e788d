//! The import against the corpus in `testdata/` (realistic `iptables-save`
//! files, each loadable by `iptables-restore`) and small rulesets for the
//! corner cases. Every imported policy is parsed back with fw's own parser
//! and its meaning checked.

use fw_common::{
    conntrack::tcp_flags as tf,
    ipproto,
    policy::{PacketState, RejectWith},
};

use std::fmt::Write as _;

use super::*;
use crate::policy::{
    self, Families, Policy, PortRange, Rule, RuleAction, Stage, TcpFlagsMatch, Verdict,
};

pub(super) const WEB_V4: &str = include_str!("../testdata/web-server.v4");
pub(super) const WEB_V6: &str = include_str!("../testdata/web-server.v6");
pub(super) const DATABASE: &str = include_str!("../testdata/database.v4");
pub(super) const PRIVATE: &str = include_str!("../testdata/private-server.v4");
pub(super) const BASTION: &str = include_str!("../testdata/bastion.v4");
pub(super) const EGRESS: &str = include_str!("../testdata/egress-dns.v4");
pub(super) const RC_FIREWALL: &str = include_str!("../testdata/rc-firewall.v4");
pub(super) const UNSUPPORTED: &str = include_str!("../testdata/unsupported.v4");

/// Every corpus file, by name.
pub(super) const CORPUS: [(&str, &str); 8] = [
    ("web-server.v4", WEB_V4),
    ("web-server.v6", WEB_V6),
    ("database.v4", DATABASE),
    ("private-server.v4", PRIVATE),
    ("bastion.v4", BASTION),
    ("egress-dns.v4", EGRESS),
    ("rc-firewall.v4", RC_FIREWALL),
    ("unsupported.v4", UNSUPPORTED),
];

const STRICT: ImportOptions = ImportOptions {
    skip_unsupported: false,
};
const SKIP: ImportOptions = ImportOptions {
    skip_unsupported: true,
};

/// Import, parse the policy back, return both.
fn import_ok(v4: Option<(&str, &str)>, v6: Option<(&str, &str)>) -> (Imported, Policy) {
    let imported = import(v4, v6, &STRICT).unwrap_or_else(|e| panic!("import failed:\n{e}"));
    let policy = parse_back(&imported.toml);
    (imported, policy)
}

fn parse_back(toml: &str) -> Policy {
    policy::parse(toml, "imported.toml")
        .unwrap_or_else(|e| panic!("the imported policy does not parse: {e}\n{toml}"))
}

fn v4_only(name: &str, text: &str) -> (Imported, Policy) {
    import_ok(Some((name, text)), None)
}

/// A minimal filter table around `rules` (policies INPUT DROP, OUTPUT
/// ACCEPT, FORWARD DROP), with `chains` declared.
fn table(chains: &[&str], rules: &str) -> String {
    let mut t =
        String::from("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for c in chains {
        let _ = writeln!(t, ":{c} - [0:0]");
    }
    t.push_str(rules);
    t.push_str("COMMIT\n");
    t
}

fn named<'a>(rules: &'a [Rule], name: &str) -> Vec<&'a Rule> {
    rules
        .iter()
        .filter(|r| r.name.as_deref() == Some(name))
        .collect()
}

fn port(p: u16) -> PortRange {
    PortRange { first: p, last: p }
}

fn range(first: u16, last: u16) -> PortRange {
    PortRange { first, last }
}

const SYN: TcpFlagsMatch = TcpFlagsMatch {
    mask: tf::FIN | tf::SYN | tf::RST | tf::ACK,
    comp: tf::SYN,
};

/// Which rules a packet class meets first, in a chain: the index of the
/// first rule whose match `pred` accepts.
fn first_index(rules: &[Rule], pred: impl Fn(&Rule) -> bool) -> Option<usize> {
    rules.iter().position(pred)
}

/// An ip6tables file of the corpus.
pub(super) fn is_v6(name: &str) -> bool {
    std::path::Path::new(name)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("v6"))
}

fn warned(imported: &Imported, line: usize, text: &str) -> bool {
    imported
        .warnings
        .iter()
        .any(|w| w.line == line && w.message.contains(text))
}

// ---- the corpus ----

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, checked rule by rule")]
fn web_server_prologue_becomes_the_stages_and_protocol_chains_are_inlined() {
    let (imported, p) = import_ok(
        Some(("web-server.v4", WEB_V4)),
        Some(("web-server.v6", WEB_V6)),
    );
    assert_eq!(
        (p.defaults.input, p.defaults.output, p.defaults.forward),
        (Verdict::Drop, Verdict::Accept, Verdict::Drop)
    );
    // ESTABLISHED,RELATED accept at the top, INVALID drop: fw's stages.
    assert_eq!(p.stateful.established, Stage::Accept);
    assert_eq!(p.stateful.related, Stage::Accept);
    assert_eq!(p.stateful.invalid, Stage::Drop);
    // A lone ACK is NEW in netfilter and meets `-p tcp -j REJECT --reject-with tcp-reset`.
    assert!(!p.stateful.tcp_syn_only);
    assert_eq!(p.stateful.neighbor_discovery, Stage::Accept);
    assert!(
        p.input
            .iter()
            .all(|r| r.state.iter().all(|s| *s == PacketState::New)),
        "no rule left for the states the stages decide"
    );
    // The TCP chain's rules: identical in both files, so for both families,
    // with the jump's SYN match ANDed in.
    for (name, dport) in [("ssh", 22), ("http", 80), ("https", 443)] {
        let rules = named(&p.input, name);
        assert_eq!(rules.len(), 1, "{name}");
        let r = rules[0];
        assert_eq!(r.families, Families::BOTH, "{name}");
        assert_eq!(r.proto, Some(ipproto::TCP));
        assert_eq!(r.dport, vec![port(dport)]);
        assert_eq!(r.tcp_flags, Some(SYN));
        assert_eq!(r.action, RuleAction::Accept);
    }
    let quic = named(&p.input, "HTTP/3 (QUIC)");
    assert_eq!(quic.len(), 1);
    assert_eq!(
        (quic[0].proto, quic[0].families),
        (Some(ipproto::UDP), Families::BOTH)
    );
    // ICMP: echo request per family; the ICMPv6 chain also has neighbour discovery.
    let ping = named(&p.input, "ping");
    assert_eq!(ping.len(), 2);
    assert_eq!(
        (ping[0].proto, ping[0].icmp_type.as_slice()),
        (Some(ipproto::ICMP), &[8][..])
    );
    assert_eq!(
        (ping[1].proto, ping[1].icmp_type.as_slice()),
        (Some(ipproto::ICMPV6), &[128][..])
    );
    // Protocol-specific REJECTs, in order, after the accepts.
    let rejects: Vec<(Option<u8>, Families, RuleAction)> = p
        .input
        .iter()
        .filter(|r| matches!(r.action, RuleAction::Reject(_)) && r.state.is_empty())
        .map(|r| (r.proto, r.families, r.action))
        .collect();
    assert_eq!(
        rejects,
        vec![
            (
                Some(ipproto::UDP),
                Families::BOTH,
                RuleAction::Reject(RejectWith::PortUnreachable)
            ),
            (
                Some(ipproto::TCP),
                Families::BOTH,
                RuleAction::Reject(RejectWith::TcpReset)
            ),
            (
                None,
                Families::IPV4,
                RuleAction::Reject(RejectWith::ProtoUnreachable)
            ),
            (
                None,
                Families::IPV6,
                RuleAction::Reject(RejectWith::AdminProhibited)
            ),
        ]
    );
    let last_accept = p
        .input
        .iter()
        .rposition(|r| r.action == RuleAction::Accept)
        .unwrap();
    let first_reject = p
        .input
        .iter()
        .position(|r| r.state.is_empty() && matches!(r.action, RuleAction::Reject(_)))
        .unwrap();
    assert!(last_accept < first_reject);
    // SYN/ACK and FIN/ACK without a connection: INVALID (dropped) in
    // netfilter, NEW in fw, so rules at the top drop them.
    let top = &p.input[0];
    assert_eq!(
        (top.proto, top.state.as_slice(), top.action),
        (
            Some(ipproto::TCP),
            &[PacketState::New][..],
            RuleAction::Drop
        )
    );
    // Each rule keeps its source lines; the header says where from.
    assert!(imported.toml.starts_with("# fw policy imported by `fw-user import` from web-server.v4 (IPv4) and web-server.v6 (IPv6)."));
    assert!(imported.toml.contains("# web-server.v4:21: -A TCP -p tcp -m tcp --dport 22 -m comment --comment ssh -j ACCEPT\n# web-server.v6:16: "));
    assert!(imported.toml.contains(
        "#   web-server.v4:11: -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    ));
    assert_eq!(imported.warnings, Vec::new());
    assert_eq!(imported.skipped, Vec::new());
}

#[test]
fn database_is_reachable_on_one_interface_from_the_web_servers_only() {
    let (imported, p) = v4_only("database.v4", DATABASE);
    let mysql: Vec<&Rule> = p
        .input
        .iter()
        .filter(|r| r.dport == vec![port(3306)] && r.action == RuleAction::Accept)
        .collect();
    assert_eq!(mysql.len(), 2);
    for (r, host) in mysql.iter().zip(["192.0.2.11/32", "192.0.2.12/32"]) {
        assert_eq!(r.iface, vec!["eth1".to_string()]);
        let src = r.src.as_ref().unwrap();
        assert!(!src.negated);
        assert_eq!(src.nets, vec![host.parse().unwrap()]);
        assert_eq!(r.state, vec![PacketState::New]);
        assert_eq!(r.families, Families::IPV4);
    }
    let ssh = named(&p.input, "ssh from the private network")[0];
    assert_eq!(
        ssh.src.as_ref().unwrap().nets,
        vec!["192.0.2.0/24".parse().unwrap()]
    );
    // No INVALID rule: INVALID packets meet the rules as in iptables.
    assert_eq!(p.stateful.invalid, Stage::Rules);
    assert_eq!(p.stateful.established, Stage::Accept);
    let icmp: Vec<u8> = p
        .input
        .iter()
        .filter(|r| r.proto == Some(ipproto::ICMP))
        .flat_map(|r| r.icmp_type.clone())
        .collect();
    assert_eq!(icmp, vec![8, 3, 11]);
    // No IPv6 file: IPv6 is accepted as on the original host, and said so.
    let v6 = p
        .input
        .iter()
        .find(|r| r.families == Families::IPV6)
        .unwrap();
    assert_eq!(
        (v6.action, v6.proto, &v6.src),
        (RuleAction::Accept, None, &None)
    );
    assert!(warned(
        &imported,
        6,
        "no IPv6 ruleset was given, so IPv6 traffic is accepted"
    ));
    assert!(imported.toml.contains(
        "# No IPv6 file was given: IPv6 traffic is accepted, as on a host without such rules."
    ));
}

#[test]
fn private_network_return_whitelists_become_negated_sources() {
    let (imported, p) = v4_only("private-server.v4", PRIVATE);
    // `-A ssh-bastion -s 192.0.2.10 -j RETURN` then `-j DROP`, reached
    // through `-p tcp --dport 22`: SSH from anyone but the bastion is dropped.
    let ssh: Vec<&Rule> = named(&p.input, "ssh only through the bastion")
        .into_iter()
        .filter(|r| r.tcp_flags.is_none())
        .collect();
    assert_eq!(ssh.len(), 1);
    let src = ssh[0].src.as_ref().unwrap();
    assert!(src.negated);
    assert_eq!(src.nets, vec!["192.0.2.10/32".parse().unwrap()]);
    assert_eq!(
        (ssh[0].proto, ssh[0].dport.as_slice()),
        (Some(ipproto::TCP), &[port(22)][..])
    );
    // Peers, in order, after it.
    let peers: Vec<String> = p
        .input
        .iter()
        .filter(|r| r.action == RuleAction::Accept && r.src.is_some() && r.proto.is_none())
        .map(|r| r.src.as_ref().unwrap().shown.clone())
        .collect();
    assert_eq!(peers, ["192.0.2.10", "192.0.2.21", "192.0.2.22"]);
    // Outsiders: two RETURNs, so the log and the drop exclude both networks
    // through a set (fw negates a set, not a list).
    assert_eq!(
        p.sets["excluded_1"],
        vec![
            "192.0.2.0/24".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap()
        ]
    );
    let tail: Vec<&Rule> = p
        .input
        .iter()
        .filter(|r| {
            r.families == Families::IPV4
                && r.src.as_ref().is_some_and(|s| s.shown == "!@excluded_1")
                && r.tcp_flags.is_none()
        })
        .collect();
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[0].action, RuleAction::Log);
    assert_eq!(tail[0].log_prefix.as_deref(), Some("outsider: "));
    assert_eq!(
        tail[0].limit,
        Some(policy::Limit {
            interval_ns: 10_000_000_000,
            burst: 5
        })
    );
    assert_eq!(tail[1].action, RuleAction::Drop);
    assert!(imported.toml.contains("#   without the packets of private-server.v4:25: -A ssh-bastion -s 192.0.2.10/32 -m comment --comment \"the bastion\" -j RETURN"));
}

#[test]
fn bastion_keeps_its_syn_rule_and_leaves_the_loopback_spoof_rule_to_fw() {
    let (imported, p) = v4_only("bastion.v4", BASTION);
    // `-s 127.0.0.0/8 ! -i lo -j DROP` is fw's own first stage: left out, noted.
    assert!(
        p.input
            .iter()
            .all(|r| r.src.as_ref().is_none_or(|s| !s.shown.starts_with("127.")))
    );
    assert!(imported.toml.contains(
        "#   bastion.v4:10: -A INPUT -s 127.0.0.0/8 ! -i lo -j DROP (fw drops loopback addresses"
    ));
    // Without an IPv6 file, IPv6 accepts INVALID packets: so INVALID meets
    // the rules, and `! --syn` with NEW stays a rule, in its place.
    assert_eq!(p.stateful.invalid, Stage::Rules);
    assert!(!p.stateful.tcp_syn_only);
    let inv = first_index(&p.input, |r| {
        r.state == [PacketState::Invalid] && r.proto.is_none()
    })
    .unwrap();
    let not_syn = first_index(&p.input, |r| {
        r.proto == Some(ipproto::TCP)
            && r.state == [PacketState::New]
            && r.action == RuleAction::Drop
            && r.tcp_flags
                == Some(TcpFlagsMatch {
                    mask: tf::SYN,
                    comp: 0,
                })
    })
    .expect("the ! --syn rule");
    let ssh = first_index(&p.input, |r| r.name.as_deref() == Some("ssh from anywhere")).unwrap();
    assert!(inv < not_syn && not_syn < ssh);
    assert_eq!(imported.skipped, Vec::new());
}

#[test]
fn restrictive_egress_allows_dns_only() {
    type Summary = (Option<String>, Option<u8>, Vec<PortRange>, RuleAction);
    let (_, p) = v4_only("egress-dns.v4", EGRESS);
    assert_eq!(p.defaults.output, Verdict::Drop);
    // Both chains accept ESTABLISHED first: the stage.
    assert_eq!(p.stateful.established, Stage::Accept);
    let out: Vec<Summary> = p
        .output
        .iter()
        .filter(|r| r.families == Families::IPV4)
        .map(|r| (r.name.clone(), r.proto, r.dport.clone(), r.action))
        .collect();
    assert_eq!(
        out,
        vec![
            (
                Some("dns".into()),
                Some(ipproto::UDP),
                vec![port(53)],
                RuleAction::Accept
            ),
            (
                Some("dns over tcp".into()),
                Some(ipproto::TCP),
                vec![port(53)],
                RuleAction::Accept
            ),
            (
                None,
                None,
                vec![],
                RuleAction::Reject(RejectWith::PortUnreachable)
            ),
        ]
    );
    let web = p.input.iter().find(|r| r.dport.len() == 3).unwrap();
    assert_eq!(web.dport, vec![port(22), port(80), port(443)]);
}

#[test]
fn rc_firewall_allowed_chain_ports_and_log() {
    let (imported, p) = v4_only("rc-firewall.v4", RC_FIREWALL);
    // Not every chain takes ESTABLISHED first (OUTPUT only via eth0).
    assert_eq!(p.stateful.established, Stage::Rules);
    assert_eq!(p.defaults.output, Verdict::Drop);
    // The `allowed` chain inlined for SSH: SYN accepted, ESTABLISHED and
    // RELATED accepted, the rest dropped; only on eth0.
    let ssh: Vec<&Rule> = named(&p.input, "ssh")
        .into_iter()
        .filter(|r| r.state != [PacketState::New])
        .collect();
    assert_eq!(ssh.len(), 3);
    assert_eq!(
        (ssh[0].tcp_flags, ssh[0].action),
        (Some(SYN), RuleAction::Accept)
    );
    assert_eq!(
        (ssh[1].state.as_slice(), ssh[1].action),
        (
            &[PacketState::Established, PacketState::Related][..],
            RuleAction::Accept
        )
    );
    assert_eq!((ssh[2].tcp_flags, ssh[2].action), (None, RuleAction::Drop));
    assert!(
        ssh.iter()
            .all(|r| r.iface == ["eth0"] && r.dport == [port(22)])
    );
    // multiport and source-port ranges.
    let mail = named(
        &p.input,
        "mail: smtp, submission, pop3, imap and their TLS ports",
    );
    assert!(mail.iter().all(|r| r.dport
        == [
            port(25),
            port(110),
            port(143),
            port(587),
            port(993),
            port(995)
        ]
        && r.sport == [range(1024, 65535)]));
    let ftp = named(&p.input, "ftp passive data");
    assert!(ftp.iter().all(|r| r.dport == [range(62000, 64000)]));
    // DNS over UDP, and the classic source-port-53 hole, warned about.
    let udp: Vec<&Rule> = p
        .input
        .iter()
        .filter(|r| r.proto == Some(ipproto::UDP))
        .collect();
    assert_eq!(udp.len(), 3);
    assert_eq!(udp[1].sport, vec![port(53)]);
    assert!(warned(&imported, 40, "accepts UDP from source port 53"));
    // The LOG before the policy: a log rule with its own limit.
    let died = p
        .input
        .iter()
        .rfind(|r| r.action == RuleAction::Log)
        .unwrap();
    assert_eq!(died.log_prefix.as_deref(), Some("IPT INPUT packet died: "));
    assert_eq!(
        died.limit,
        Some(policy::Limit {
            interval_ns: 20_000_000_000,
            burst: 3
        })
    );
    assert!(
        imported
            .toml
            .contains("not kept (fw's events have no such options): --log-level 7")
    );
    // LOG then DROP with the same match: one rule that logs.
    let not_syn = p
        .input
        .iter()
        .find(|r| r.log_prefix.as_deref() == Some("New not syn:"))
        .unwrap();
    assert_eq!((not_syn.action, not_syn.log), (RuleAction::Drop, true));
    // `--tcp-flags SYN,ACK SYN,ACK` with NEW cannot match (netfilter finds
    // such a segment INVALID): left out, said so.
    assert!(imported.toml.contains("# Left out because no packet reaches them with the TCP flags they match:\n#   rc-firewall.v4:29:"));
}

#[test]
fn unsupported_corpus_reports_every_construct_with_its_line() {
    let err = import(Some(("unsupported.v4", UNSUPPORTED)), None, &STRICT).unwrap_err();
    let expected: [(usize, &str); 26] = [
        (10, "the `nat` table is not translated"),
        (11, "the `nat` table is not translated"),
        (19, "the `mangle` table is not translated"),
        (24, "the `raw` table is not translated"),
        (33, "state `UNTRACKED` is not supported"),
        (34, "`-m string` is not supported"),
        (35, "`-m recent` is not supported"),
        (36, "`-m recent` is not supported"),
        (37, "`-m hashlimit` is not supported"),
        (38, "`-m mac` is not supported"),
        (40, "`-f` (later fragments) is not supported"),
        (41, "`-m tos` is not supported"),
        (42, "`-m dscp` is not supported"),
        (43, "`! -i eth0` is not supported"),
        (44, "`-i eth+` (an interface wildcard) is not supported"),
        (45, "ICMP type `3/4` is not supported"),
        (46, "`-g checks` (goto) is not supported"),
        (47, "`-m connlimit` is not supported"),
        (48, "`-j NFQUEUE` is not supported"),
        (49, "`! -p tcp` is not supported"),
        (50, "the rule filters loopback traffic (`lo`)"),
        (51, "`-m limit` here ends up in 2 fw rules"),
        (53, "`-j TCPMSS` is not supported"),
        (54, "`-o eth1` in FORWARD"),
        (55, "`-m owner` is not supported"),
        (56, "this RETURN cannot be expressed"),
    ];
    let got: Vec<(usize, String)> = err
        .diagnostics
        .iter()
        .map(|d| (d.line, d.message.clone()))
        .collect();
    assert_eq!(got.len(), expected.len(), "{err}");
    for ((line, message), (want_line, want)) in got.iter().zip(expected) {
        assert_eq!(*line, want_line, "{err}");
        assert!(message.starts_with(want), "line {line}: {message}");
        assert!(message.contains("(hint: "), "line {line}: {message}");
    }
    assert!(err.diagnostics.iter().all(|d| d.file == "unsupported.v4"));
    // Display: one per line, file:line: message.
    let text = err.to_string();
    assert_eq!(text.lines().count(), expected.len());
    assert_eq!(
        text.lines().nth(13).unwrap(),
        "unsupported.v4:43: `! -i eth0` is not supported: fw's `iface` cannot be negated (hint: name the interfaces the rule is for (`-i eth1`), in rules of their own; or import with --skip-unsupported to leave the rule out)"
    );
    assert_eq!(
        text.lines().last().unwrap(),
        "unsupported.v4:56: this RETURN cannot be expressed: the rule at line 57 after it would have to leave out the returned packets, which takes negating a protocol (`-p`); fw can negate one address set, port set, state, ICMP type or TCP flags (hint: make the RETURN match only addresses, e.g. `-s 192.0.2.0/24 -j RETURN`, or test the protocol in the rule that jumps to `checks`; or import with --skip-unsupported to leave the rule out)"
    );

    // With --skip-unsupported: the same list, left out, and the rest imported.
    let imported = import(Some(("unsupported.v4", UNSUPPORTED)), None, &SKIP).unwrap();
    assert_eq!(imported.skipped, err.diagnostics);
    let p = parse_back(&imported.toml);
    assert!(imported.toml.contains("# Left out as unsupported (--skip-unsupported):\n#   unsupported.v4:10: -A PREROUTING -i eth0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.80:80\n#     the `nat` table is not translated"));
    // What is left: the RETURN left out, so `checks` accepts 192.0.2.0/24 on eth1.
    let v4: Vec<&Rule> = p
        .input
        .iter()
        .filter(|r| r.families == Families::IPV4 && r.action == RuleAction::Accept)
        .collect();
    assert_eq!(v4.len(), 1);
    assert_eq!(
        (
            v4[0].iface.as_slice(),
            v4[0].src.as_ref().unwrap().shown.as_str()
        ),
        (&["eth1".to_string()][..], "192.0.2.0/24")
    );
    // The loopback-source accept is a warning, not unsupported.
    assert!(warned(
        &imported,
        39,
        "accepts loopback addresses (127.0.0.0/8, ::1) on every interface"
    ));
}

// ---- mapping rules ----

#[test]
fn ipv4_and_ipv6_policies_must_agree() {
    let v4 = table(&[], "");
    let v6 = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
    let err = import(Some(("rules.v4", &v4)), Some(("rules.v6", v6)), &STRICT).unwrap_err();
    assert_eq!(
        err.to_string(),
        "rules.v6:2: the INPUT policy is ACCEPT here but DROP in rules.v4:2: fw has one default per chain for both families (hint: make the policies agree, and end the other file's INPUT chain with `-A INPUT -j ACCEPT` to keep its meaning)"
    );
}

#[test]
fn a_classic_stateful_prologue_maps_to_fw_defaults_for_both_families() {
    let rules = "-A INPUT -i lo -j ACCEPT\n\
                 -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
                 -A INPUT -m conntrack --ctstate INVALID -j DROP\n\
                 -A INPUT -p tcp ! --syn -m state --state NEW -j DROP\n\
                 -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n";
    let t = table(&[], rules);
    let (imported, p) = import_ok(Some(("rules.v4", &t)), Some(("rules.v6", &t)));
    // The IPv6 INPUT chain drops neighbour discovery (nothing accepts
    // ICMPv6), OUTPUT accepts it: that stage stays with the rules.
    assert_eq!(
        p.stateful,
        policy::Stateful {
            neighbor_discovery: Stage::Rules,
            ..policy::Stateful::default()
        }
    );
    // Only SSH is left, for both families.
    assert_eq!(p.input.len(), 1, "{}", imported.toml);
    assert_eq!(
        (
            p.input[0].families,
            p.input[0].dport.as_slice(),
            p.input[0].state.as_slice()
        ),
        (Families::BOTH, &[port(22)][..], &[][..])
    );
    assert!(imported.toml.contains("tcp_syn_only = true"));
}

#[test]
fn a_prologue_below_other_rules_stays_a_rule_in_its_place() {
    // An accept before the ESTABLISHED rule sees established packets first.
    let rules = "-A INPUT -s 192.0.2.0/24 -j ACCEPT\n\
                 -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
                 -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n";
    let t = table(&[], rules);
    let (imported, p) = import_ok(
        Some(("rules.v4", &t)),
        Some((
            "rules.v6",
            &table(
                &[],
                "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n",
            ),
        )),
    );
    assert_eq!(p.stateful.established, Stage::Rules);
    assert_eq!(p.stateful.related, Stage::Rules);
    let est = first_index(&p.input, |r| r.state.contains(&PacketState::Established)).unwrap();
    let net = first_index(&p.input, |r| r.src.is_some()).unwrap();
    assert!(net < est);
    assert!(imported.toml.contains(
        "# established = rules: rules.v4 INPUT: line 5 sees some ESTABLISHED packets first"
    ));
}

#[test]
fn a_stateless_ruleset_keeps_established_packets_in_the_rules() {
    // No ESTABLISHED accept: fw's default stage would accept more.
    let rules = "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -p tcp -m tcp --sport 80 ! --syn -j ACCEPT\n";
    let t = table(&[], rules);
    let (imported, p) = import_ok(Some(("rules.v4", &t)), Some(("rules.v6", &t)));
    assert_eq!(p.stateful.established, Stage::Rules);
    assert_eq!(p.stateful.related, Stage::Rules);
    assert!(warned(
        &imported,
        2,
        "no INPUT rule accepts every ESTABLISHED packet"
    ));
    // `! --syn -j ACCEPT` without state: the classic ACK hole.
    assert!(warned(
        &imported,
        6,
        "accepts TCP segments with ACK set whatever their connection state"
    ));
    // INVALID packets meet the rules too, so any flags may arrive: `! --syn`
    // takes four disjoint fw rules (fw's `tcp_flags` is one mask and value).
    let replies: Vec<TcpFlagsMatch> = p
        .input
        .iter()
        .filter(|r| r.sport == [port(80)])
        .filter_map(|r| r.tcp_flags)
        .collect();
    assert_eq!(replies.len(), 4, "{}", imported.toml);
    for flags in 0..=255u8 {
        let matched = replies.iter().filter(|m| flags & m.mask == m.comp).count();
        let syn = flags & (tf::FIN | tf::SYN | tf::RST | tf::ACK) == tf::SYN;
        assert_eq!(matched, usize::from(!syn), "flags {flags:#04x}");
    }
}

#[test]
fn classic_holes_are_warned_with_their_lines() {
    let rules = "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
                 -A INPUT -p tcp -m tcp --tcp-flags ACK ACK -j ACCEPT\n\
                 -A INPUT -p udp -m udp --sport 53 -j ACCEPT\n\
                 -A INPUT -s 127.0.0.0/8 -j ACCEPT\n\
                 -A INPUT -p udp -m udp --sport 53 -m state --state ESTABLISHED -j ACCEPT\n";
    let t = table(&[], rules);
    let (imported, p) = import_ok(
        Some(("rules.v4", &t)),
        Some((
            "rules.v6",
            &table(
                &[],
                "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n",
            ),
        )),
    );
    assert!(warned(&imported, 6, "accepts TCP segments with ACK set"));
    assert!(warned(&imported, 7, "accepts UDP from source port 53"));
    assert!(warned(
        &imported,
        8,
        "accepts loopback addresses (127.0.0.0/8, ::1) on every interface, not only `lo`"
    ));
    assert!(
        !imported.warnings.iter().any(|w| w.line == 9),
        "state ESTABLISHED is no hole"
    );
    assert_eq!(imported.warnings.len(), 3, "{:?}", imported.warnings);
    // The ACK rule and the DNS rule are imported faithfully anyway.
    assert!(p.input.iter().any(|r| r.tcp_flags
        == Some(TcpFlagsMatch {
            mask: tf::ACK,
            comp: tf::ACK
        })));
    assert!(
        p.input
            .iter()
            .any(|r| r.sport == [port(53)] && r.state.is_empty())
    );
}

#[test]
fn jumps_and_conjunctions() {
    let rules = "-A INPUT -p tcp -j TCP\n\
                 -A INPUT -s 192.0.2.0/24 -j NETS\n\
                 -A TCP -p tcp -m tcp --dport 22 -j ACCEPT\n\
                 -A TCP -p udp -m udp --dport 53 -j ACCEPT\n\
                 -A NETS -s 192.0.2.128/25 -p tcp -m tcp --dport 1000:2000 -j DROP\n\
                 -A NETS -s 198.51.100.0/24 -j DROP\n\
                 -A NETS -i eth1 -j ACCEPT\n";
    let t = table(&["TCP", "NETS"], rules);
    let (imported, p) = v4_only("rules.v4", &t);
    let v4: Vec<&Rule> = p
        .input
        .iter()
        .filter(|r| r.families == Families::IPV4 && r.tcp_flags.is_none())
        .collect();
    // `-p tcp` AND `-p udp`: nothing. 192.0.2.0/24 AND 198.51.100.0/24: nothing.
    assert_eq!(v4.len(), 3, "{}", imported.toml);
    assert_eq!(
        (v4[0].proto, v4[0].dport.as_slice()),
        (Some(ipproto::TCP), &[port(22)][..])
    );
    assert_eq!(v4[1].src.as_ref().unwrap().shown, "192.0.2.128/25");
    assert_eq!(v4[1].dport, vec![range(1000, 2000)]);
    assert_eq!(
        (
            v4[2].src.as_ref().unwrap().shown.as_str(),
            v4[2].iface.as_slice()
        ),
        ("192.0.2.0/24", &["eth1".to_string()][..])
    );
}

#[test]
fn return_in_a_builtin_chain_is_its_policy_and_a_chain_end_returns() {
    let rules = "-A INPUT -s 192.0.2.0/24 -j RETURN\n\
                 -A INPUT -j CHECK\n\
                 -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n\
                 -A CHECK -s 203.0.113.0/24 -j DROP\n";
    let t = table(&["CHECK"], rules);
    let (_, p) = v4_only("rules.v4", &t);
    let v4: Vec<(String, RuleAction)> = p
        .input
        .iter()
        .filter(|r| r.families == Families::IPV4 && r.tcp_flags.is_none() && r.state.is_empty())
        .map(|r| (r.match_text(), r.action))
        .collect();
    assert_eq!(
        v4,
        vec![
            ("ipv4 src 192.0.2.0/24".to_string(), RuleAction::Drop),
            ("ipv4 src 203.0.113.0/24".to_string(), RuleAction::Drop),
            ("proto tcp ipv4 dport 22".to_string(), RuleAction::Accept),
        ]
    );
}

#[test]
fn return_on_ports_within_a_protocol_chain_negates_the_ports() {
    let rules = "-A INPUT -p tcp -j SERVICES\n\
                 -A SERVICES -p tcp -m multiport --dports 80,443 -j RETURN\n\
                 -A SERVICES -s 192.0.2.0/24 -j ACCEPT\n";
    let t = table(&["SERVICES"], rules);
    let (imported, p) = v4_only("rules.v4", &t);
    let r = p
        .input
        .iter()
        .find(|r| r.src.is_some() && r.tcp_flags.is_none())
        .unwrap();
    assert_eq!(
        r.dport,
        vec![range(1, 79), range(81, 442), range(444, 65535)]
    );
    // Port 0 cannot be written: said so.
    assert!(warned(&imported, 8, "fw's ports start at 1"));
}

#[test]
fn a_jump_loop_is_an_error() {
    let t = table(&["A", "B"], "-A INPUT -j A\n-A A -j B\n-A B -p tcp -j A\n");
    let err = import(Some(("rules.v4", &t)), None, &SKIP).unwrap_err();
    assert_eq!(
        err.to_string(),
        "rules.v4:9: chain `A` is jumped to again while it is running (A -> B -> A): iptables refuses such loops (hint: break the loop)"
    );
}

#[test]
fn log_and_reject_details() {
    let rules = "-A INPUT -p tcp -m tcp --dport 23 -j LOG --log-prefix \"telnet: \"\n\
                 -A INPUT -p tcp -m tcp --dport 23 -j REJECT\n\
                 -A INPUT -p udp -m udp --dport 514 -j NFLOG --nflog-prefix syslog --nflog-group 2\n\
                 -A INPUT -p tcp -m tcp --dport 25 -j REJECT --reject-with icmp-host-prohibited\n\
                 -A INPUT -p icmp -m icmp --icmp-type echo-request -m limit --limit 2/s --limit-burst 4 -j ACCEPT\n";
    let t = table(&[], rules);
    let (imported, p) = v4_only("rules.v4", &t);
    let v4: Vec<&Rule> = p
        .input
        .iter()
        .filter(|r| r.families == Families::IPV4 && r.state.is_empty())
        .collect();
    // LOG then REJECT with the same match: one rule; REJECT without
    // --reject-with is port unreachable for every protocol.
    assert_eq!(
        (v4[0].action, v4[0].log, v4[0].log_prefix.as_deref()),
        (
            RuleAction::Reject(RejectWith::PortUnreachable),
            true,
            Some("telnet: ")
        )
    );
    assert!(
        imported
            .toml
            .contains("reject_with = \"icmp-port-unreachable\"")
    );
    assert_eq!(
        (v4[1].action, v4[1].log_prefix.as_deref()),
        (RuleAction::Log, Some("syslog"))
    );
    assert!(warned(
        &imported,
        7,
        "`-j NFLOG` is imported as action = \"log\""
    ));
    assert_eq!(
        v4[2].action,
        RuleAction::Reject(RejectWith::AdminProhibited)
    );
    assert!(warned(&imported, 8, "imported as icmp-admin-prohibited"));
    assert_eq!(
        v4[3].limit,
        Some(policy::Limit {
            interval_ns: 500_000_000,
            burst: 4
        })
    );
}

#[test]
fn unsupported_details_outside_the_corpus() {
    // Constructs iptables-restore cannot load here (a set that does not
    // exist, ULOG gone from the kernel, host names resolved at load).
    let cases = [
        (
            "-A INPUT -m set --match-set blocklist src -j DROP\n",
            "`-m set` is not supported: an ipset lives in the kernel",
        ),
        ("-A INPUT -p udp -j ULOG\n", "`-j ULOG` is not supported"),
        (
            "-A INPUT -s www.example.com -j ACCEPT\n",
            "`-s www.example.com` is not supported: `www.example.com` is a host name",
        ),
        (
            "-A INPUT -p sctp --dport 80 -j ACCEPT\n",
            "ports of protocol 132 is not supported",
        ),
        (
            "-A INPUT -m physdev --physdev-in eth1 -j ACCEPT\n",
            "`-m physdev` is not supported",
        ),
        (
            "-A INPUT -m conntrack --ctstate NEW --ctorigdst 192.0.2.1 -j ACCEPT\n",
            "`-m conntrack --ctorigdst` is not supported",
        ),
        (
            "-A INPUT -j LOG --log-prefix \"a prefix that is far too long for fw\"\n",
            "the log prefix \"a prefix that is far too long for fw\" is not supported",
        ),
        (
            "-A INPUT -m limit --limit 1/s -j LOGDROP\n",
            "`-m limit` here ends up in 2 fw rules",
        ),
    ];
    for (rule, want) in cases {
        let t = table(
            &["LOGDROP"],
            &format!("-A LOGDROP -j LOG\n-A LOGDROP -s 192.0.2.1 -j DROP\n{rule}"),
        );
        let err = import(Some(("rules.v4", &t)), None, &STRICT).unwrap_err();
        assert_eq!(err.diagnostics.len(), 1, "{rule}: {err}");
        assert!(
            err.diagnostics[0].message.starts_with(want),
            "{rule}: {err}"
        );
    }
}

#[test]
fn invalid_files_are_errors_even_when_skipping() {
    let cases = [
        (
            "*filter\n:INPUT DROP [0:0]\n-A INPUT -j ACCEPT\n",
            "rules.v4:1: table `filter` is not ended by `COMMIT`",
        ),
        (
            "-A INPUT -j ACCEPT\n",
            "rules.v4:1: `-A INPUT -j ACCEPT` is outside a table",
        ),
        (
            "*filter\n-A INPUT -j NOWHERE\nCOMMIT\n",
            "rules.v4:2: `-j NOWHERE`: no chain of that name",
        ),
        (
            "*filter\n-A MISSING -j ACCEPT\nCOMMIT\n",
            "rules.v4:2: chain `MISSING` is not declared",
        ),
        (
            "*filter\n-A INPUT -p tcp --dport 99999 -j ACCEPT\nCOMMIT\n",
            "rules.v4:2: `--dport 99999`: port 99999 is out of range",
        ),
        (
            "*filter\n-A INPUT --dport 22 -j ACCEPT\nCOMMIT\n",
            "rules.v4:2: `--dport` needs `-p tcp` or `-p udp`",
        ),
        (
            "*filter\n-A INPUT -s 2001:db8::1 -j ACCEPT\nCOMMIT\n",
            "rules.v4:2: `-s 2001:db8::1`: `2001:db8::1` is an IPv6 address in an IPv4 ruleset",
        ),
        (
            "*filter\n-A INPUT -m comment --comment \"open -j ACCEPT\nCOMMIT\n",
            "rules.v4:2: a quote is not closed",
        ),
        (
            "*filter\n-I INPUT 3 -j ACCEPT\nCOMMIT\n",
            "rules.v4:2: `-I INPUT 3`",
        ),
        (
            "*filter\n:INPUT REJECT [0:0]\nCOMMIT\n",
            "rules.v4:2: the policy of `INPUT` is `REJECT`",
        ),
    ];
    for (text, want) in cases {
        let err = import(Some(("rules.v4", text)), None, &SKIP).unwrap_err();
        assert!(err.to_string().starts_with(want), "{text}: {err}");
    }
    assert_eq!(
        import(None, None, &STRICT).unwrap_err().diagnostics[0].message,
        "no ruleset to import (hint: name the `iptables-save` file, and the `ip6tables-save` one with --ipv6)"
    );
}

#[test]
fn insert_counters_quotes_and_old_negation() {
    let rules = "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT\n\
                 -I INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n\
                 -I INPUT 2 -s ! 203.0.113.0/24 -p tcp -m tcp --dport 25 -m comment --comment \"mail \\\"relay\\\"\" -j ACCEPT\n\
                 [5:300] -A INPUT -p udp -m udp --dport 53 -c 1 2 -j ACCEPT\n";
    let t = table(&[], rules);
    let (_, p) = v4_only("rules.v4", &t);
    let ports: Vec<(Vec<PortRange>, Option<String>)> = p
        .input
        .iter()
        .filter(|r| r.families == Families::IPV4 && r.tcp_flags.is_none())
        .map(|r| (r.dport.clone(), r.name.clone()))
        .collect();
    assert_eq!(
        ports,
        vec![
            (vec![port(22)], None),
            (vec![port(25)], Some("mail \"relay\"".into())),
            (vec![port(80)], None),
            (vec![port(53)], None),
        ]
    );
    let mail = named(&p.input, "mail \"relay\"")[0];
    assert!(mail.src.as_ref().unwrap().negated);
}

#[test]
fn protocol_zero_and_all_are_any_protocol() {
    let t = table(
        &[],
        "-A INPUT -p 0 -s 192.0.2.1 -j ACCEPT\n-A INPUT -p all -s 192.0.2.2 -j ACCEPT\n",
    );
    let (_, p) = v4_only("rules.v4", &t);
    let any: Vec<Option<u8>> = p
        .input
        .iter()
        .filter(|r| r.src.is_some())
        .map(|r| r.proto)
        .collect();
    assert_eq!(any, vec![None, None]);
}

#[test]
fn ports_either_side_multiport() {
    let t = table(
        &[],
        "-A INPUT -p tcp -m multiport --ports 6000,6001 -j ACCEPT\n",
    );
    let (_, p) = v4_only("rules.v4", &t);
    let v4: Vec<(Vec<PortRange>, Vec<PortRange>)> = p
        .input
        .iter()
        .filter(|r| r.families == Families::IPV4 && r.tcp_flags.is_none())
        .map(|r| (r.sport.clone(), r.dport.clone()))
        .collect();
    assert_eq!(
        v4,
        vec![
            (vec![], vec![range(6000, 6001)]),
            (
                vec![range(6000, 6001)],
                vec![range(1, 5999), range(6002, 65535)]
            ),
        ]
    );
}

#[test]
fn icmpv6_neighbour_discovery_without_an_accept_meets_the_rules() {
    let v6 = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
              -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
              -A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type echo-request -m conntrack --ctstate NEW -j ACCEPT\n\
              COMMIT\n";
    let v4 = table(
        &[],
        "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n",
    );
    let (_, p) = import_ok(Some(("rules.v4", &v4)), Some(("rules.v6", v6)));
    // INPUT drops neighbour discovery, OUTPUT accepts it: the rules decide.
    assert_eq!(p.stateful.neighbor_discovery, Stage::Rules);
}

#[test]
fn every_generated_policy_is_valid_for_fw() {
    for (name, text) in CORPUS {
        let (v4, v6) = if is_v6(name) {
            (None, Some((name, text)))
        } else {
            (Some((name, text)), None)
        };
        let imported = import(v4, v6, &SKIP).unwrap_or_else(|e| panic!("{name}: {e}"));
        parse_back(&imported.toml);
        assert!(imported.toml.lines().all(|l| l.len() < 1000));
    }
}

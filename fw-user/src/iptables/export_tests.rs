use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use super::*;
use crate::policy::{parse, parse_file};

fn policy(text: &str) -> Policy {
    parse(text, "t.toml").unwrap_or_else(|e| panic!("test policy does not parse: {e}"))
}

/// The lines under the comment that starts with `head` in fw chain
/// `chain`'s part of `out`, up to the next comment (notes included).
fn section<'a>(out: &'a str, chain: &str, head: &str) -> Vec<&'a str> {
    let mut lines = out
        .lines()
        .skip_while(|l| !l.starts_with(&format!("# {chain}:")))
        .skip_while(|l| !l.starts_with(head));
    assert!(lines.next().is_some(), "no `{head}` in {chain}:\n{out}");
    lines
        .take_while(|l| (!l.starts_with("# ") || l.starts_with("# note:")) && *l != "COMMIT")
        .collect()
}

/// The lines of rule `n` of `chain` (`# rule N …` and what follows).
fn rule<'a>(out: &'a str, chain: &str, n: usize) -> Vec<&'a str> {
    section(out, chain, &format!("# rule {n} "))
}

/// Every chain `out` declares.
fn declared(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

const WEB_SERVER: &str = r#"
[defaults]
input = "drop"
output = "accept"

[[input]]
name = "ssh"
proto = "tcp"
dport = 22
action = "accept"

[[input]]
name = "web"
proto = "tcp"
dport = [80, 443]
action = "accept"

[[input]]
name = "quic"
proto = "udp"
dport = 443
action = "accept"

[[input]]
name = "ping"
proto = "icmp"
action = "accept"

[[input]]
name = "ping6"
proto = "icmpv6"
action = "accept"
"#;

#[test]
fn web_server_is_the_classic_server_ruleset() {
    let out = chains(&policy(WEB_SERVER), IpFamily::V4);
    let expected = "\
*filter
:FW-INPUT - [0:0]
:FW-OUTPUT - [0:0]
:FW-FORWARD - [0:0]
# FW-INPUT: loopback addresses on a guarded interface are spoofed
-A FW-INPUT -s 127.0.0.0/8 -j DROP
-A FW-INPUT -d 127.0.0.0/8 -j DROP
# connection state: [stateful] established, related, invalid
-A FW-INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT
-A FW-INPUT -m conntrack --ctstate RELATED -j ACCEPT
-A FW-INPUT -m conntrack --ctstate INVALID -j DROP
# tcp_syn_only: new TCP that is not a pure SYN is INVALID
-A FW-INPUT -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP
# rule 1 (ssh) line 6
-A FW-INPUT -p tcp -m tcp --dport 22 -j ACCEPT
# rule 2 (web) line 12
-A FW-INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT
# rule 3 (quic) line 18
-A FW-INPUT -p udp -m udp --dport 443 -j ACCEPT
# rule 4 (ping) line 24
-A FW-INPUT -p icmp -j ACCEPT
# rule 5 (ping6) line 29: ipv6 only, not in the ipv4 rules
# input default: drop
-A FW-INPUT -j DROP
# FW-OUTPUT: loopback addresses on a guarded interface are spoofed
-A FW-OUTPUT -s 127.0.0.0/8 -j DROP
-A FW-OUTPUT -d 127.0.0.0/8 -j DROP
# connection state: [stateful] established, related, invalid
-A FW-OUTPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT
-A FW-OUTPUT -m conntrack --ctstate RELATED -j ACCEPT
-A FW-OUTPUT -m conntrack --ctstate INVALID -j DROP
# tcp_syn_only: new TCP that is not a pure SYN is INVALID
-A FW-OUTPUT -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP
# output default: accept
-A FW-OUTPUT -j ACCEPT
# FW-FORWARD: loopback addresses on a guarded interface are spoofed
-A FW-FORWARD -s 127.0.0.0/8 -j DROP
-A FW-FORWARD -d 127.0.0.0/8 -j DROP
# connection state: [stateful] established, related, invalid
-A FW-FORWARD -m conntrack --ctstate ESTABLISHED -j ACCEPT
-A FW-FORWARD -m conntrack --ctstate RELATED -j ACCEPT
-A FW-FORWARD -m conntrack --ctstate INVALID -j DROP
# tcp_syn_only: new TCP that is not a pure SYN is INVALID
-A FW-FORWARD -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP
# forward default: drop
-A FW-FORWARD -j DROP
COMMIT
";
    assert_eq!(out, expected);
}

#[test]
fn ipv6_has_neighbour_discovery_and_leaves_out_ipv4_only_rules() {
    let out = chains(&policy(WEB_SERVER), IpFamily::V6);
    assert_eq!(
        section(&out, "FW-INPUT", "# FW-INPUT:"),
        [
            "-A FW-INPUT -s ::1/128 -j DROP",
            "-A FW-INPUT -d ::1/128 -j DROP",
        ]
    );
    let nd: Vec<String> = (133..=137)
        .map(|t| {
            format!(
                "-A FW-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type {t} -m hl --hl-eq 255 -j ACCEPT"
            )
        })
        .collect();
    assert_eq!(section(&out, "FW-INPUT", "# neighbour discovery"), nd);
    assert_eq!(
        rule(&out, "FW-INPUT", 4),
        Vec::<&str>::new(),
        "ping (icmp) is not an ipv6 rule"
    );
    assert!(out.contains("# rule 4 (ping) line 24: ipv4 only, not in the ipv6 rules\n"));
    assert_eq!(
        rule(&out, "FW-INPUT", 5),
        ["-A FW-INPUT -p ipv6-icmp -j ACCEPT"]
    );

    // A rule whose addresses are all IPv4 is not in the IPv6 rules, nor
    // the other way round; a family-only rule neither.
    let p = policy(
        r#"
[sets]
v4 = ["192.0.2.0/24"]
[[input]]
src = "@v4"
action = "accept"
[[input]]
family = "ipv6"
proto = "tcp"
dport = 25
action = "drop"
"#,
    );
    let v6 = chains(&p, IpFamily::V6);
    assert_eq!(rule(&v6, "FW-INPUT", 1), Vec::<&str>::new());
    assert!(
        v6.contains("# rule 1 line 4: no ipv6 address in its src/dst, so it cannot match here\n")
    );
    assert_eq!(
        rule(&v6, "FW-INPUT", 2),
        ["-A FW-INPUT -p tcp -m tcp --dport 25 -j DROP"]
    );
    let v4 = chains(&p, IpFamily::V4);
    assert_eq!(
        rule(&v4, "FW-INPUT", 1),
        ["-A FW-INPUT -s 192.0.2.0/24 -j ACCEPT"]
    );
    assert!(v4.contains("# rule 2 line 7: ipv6 only, not in the ipv4 rules\n"));
}

#[test]
fn sets_expand_to_one_rule_per_prefix_of_the_family() {
    let p = policy(
        r#"
[sets]
web = ["192.0.2.11", "192.0.2.12", "2001:db8::11"]
private = ["192.0.2.0/24", "2001:db8::/64"]
[[input]]
name = "mysql"
proto = "tcp"
dport = 3306
iface = ["eth1", "eth2"]
src = "@web"
dst = "@private"
action = "accept"
"#,
    );
    assert_eq!(
        rule(&chains(&p, IpFamily::V4), "FW-INPUT", 1),
        [
            "-A FW-INPUT -s 192.0.2.11/32 -d 192.0.2.0/24 -i eth1 -p tcp -m tcp --dport 3306 -j ACCEPT",
            "-A FW-INPUT -s 192.0.2.12/32 -d 192.0.2.0/24 -i eth1 -p tcp -m tcp --dport 3306 -j ACCEPT",
            "-A FW-INPUT -s 192.0.2.11/32 -d 192.0.2.0/24 -i eth2 -p tcp -m tcp --dport 3306 -j ACCEPT",
            "-A FW-INPUT -s 192.0.2.12/32 -d 192.0.2.0/24 -i eth2 -p tcp -m tcp --dport 3306 -j ACCEPT",
        ]
    );
    assert_eq!(
        rule(&chains(&p, IpFamily::V6), "FW-INPUT", 1),
        [
            "-A FW-INPUT -s 2001:db8::11/128 -d 2001:db8::/64 -i eth1 -p tcp -m tcp --dport 3306 -j ACCEPT",
            "-A FW-INPUT -s 2001:db8::11/128 -d 2001:db8::/64 -i eth2 -p tcp -m tcp --dport 3306 -j ACCEPT",
        ]
    );
}

#[test]
fn a_negated_set_returns_for_each_prefix_in_a_helper_chain() {
    let p = policy(
        r#"
[sets]
bastion = ["192.0.2.10"]
admins = ["192.0.2.10", "198.51.100.0/24", "2001:db8::10"]
[[input]]
name = "ssh only through the bastion"
proto = "tcp"
dport = 22
src = "!@bastion"
action = "drop"
[[output]]
name = "nothing to the admins but ssh"
proto = "tcp"
dst = "!@admins"
action = "reject"
"#,
    );
    let v4 = chains(&p, IpFamily::V4);
    // One prefix: iptables' own negation.
    assert_eq!(
        rule(&v4, "FW-INPUT", 1),
        ["-A FW-INPUT ! -s 192.0.2.10/32 -p tcp -m tcp --dport 22 -j DROP"]
    );
    // Several: each RETURNs, then the rule acts.
    assert_eq!(
        rule(&v4, "FW-OUTPUT", 1),
        [
            "-A FW-OUTPUT -p tcp -j FW-OUT-R1",
            "-A FW-OUT-R1 -d 192.0.2.10/32 -j RETURN",
            "-A FW-OUT-R1 -d 198.51.100.0/24 -j RETURN",
            "-A FW-OUT-R1 -p tcp -j REJECT --reject-with tcp-reset",
        ]
    );
    assert_eq!(
        declared(&v4),
        ["FW-INPUT", "FW-OUTPUT", "FW-FORWARD", "FW-OUT-R1"]
    );
    // In IPv6 the set has one prefix, and `bastion` none: the negation
    // then matches every IPv6 address, as in fw.
    let v6 = chains(&p, IpFamily::V6);
    assert_eq!(
        rule(&v6, "FW-INPUT", 1),
        ["-A FW-INPUT -p tcp -m tcp --dport 22 -j DROP"]
    );
    assert_eq!(
        rule(&v6, "FW-OUTPUT", 1),
        ["-A FW-OUTPUT ! -d 2001:db8::10/128 -p tcp -j REJECT --reject-with tcp-reset"]
    );
    assert_eq!(declared(&v6), ["FW-INPUT", "FW-OUTPUT", "FW-FORWARD"]);
}

#[test]
fn long_port_lists_are_split_for_multiport() {
    let p = policy(
        r#"
[[input]]
proto = "udp"
sport = "1024-65535"
dport = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, "20-29", 11, 12, 13, 14, 15, "30-39"]
action = "accept"
"#,
    );
    // 10 ports, a range (2), 3 ports = 15; then 2 more and a range.
    assert_eq!(
        rule(&chains(&p, IpFamily::V4), "FW-INPUT", 1),
        [
            "-A FW-INPUT -p udp -m udp --sport 1024:65535 -m multiport --dports 1,2,3,4,5,6,7,8,9,10,20:29,11,12,13 -j ACCEPT",
            "-A FW-INPUT -p udp -m udp --sport 1024:65535 -m multiport --dports 14,15,30:39 -j ACCEPT",
        ]
    );
    assert_eq!(
        port_chunks(&[PortRange { first: 1, last: 2 }; 8])
            .iter()
            .map(Vec::len)
            .collect::<Vec<_>>(),
        [7, 1]
    );
}

#[test]
fn logging_rules_log_before_their_verdict() {
    let p = policy(
        r#"
[log]
rate = "10/minute"
burst = 3
prefix = "fw: "
[[input]]
name = "ssh"
proto = "tcp"
dport = 22
log = true
action = "accept"
[[input]]
name = "telnet"
proto = "tcp"
dport = 23
action = "log"
log_rate = "1/hour"
log_burst = 2
log_prefix = "telnet \"probe\" \\ seen by fw: !!"
[[input]]
name = "smtp"
proto = "tcp"
dport = 25
log = true
log_prefix = "smtp: "
action = "drop"
"#,
    );
    let out = chains(&p, IpFamily::V4);
    assert_eq!(
        rule(&out, "FW-INPUT", 1),
        [
            "-A FW-INPUT -p tcp -m tcp --dport 22 -j FW-LOG",
            "-A FW-INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
        ]
    );
    // Its own rate and prefix (cut to iptables' 29 bytes, quoted).
    assert_eq!(
        rule(&out, "FW-INPUT", 2),
        [
            r#"# note: log prefix "telnet \"probe\" \\ seen by fw: !!" cut to 29 bytes (iptables' limit): "telnet \"probe\" \\ seen by fw: ""#,
            r#"-A FW-INPUT -p tcp -m tcp --dport 23 -m limit --limit 1/hour --limit-burst 2 -j LOG --log-prefix "telnet \"probe\" \\ seen by fw: ""#,
        ]
    );
    // Its own prefix at the [log] rate.
    assert_eq!(
        rule(&out, "FW-INPUT", 3),
        [
            r#"-A FW-INPUT -p tcp -m tcp --dport 25 -m limit --limit 10/minute --limit-burst 3 -j LOG --log-prefix "smtp: ""#,
            "-A FW-INPUT -p tcp -m tcp --dport 25 -j DROP",
        ]
    );
    assert_eq!(
        section(&out, "FW-FORWARD", "# FW-LOG:"),
        [r#"-A FW-LOG -m limit --limit 10/minute --limit-burst 3 -j LOG --log-prefix "fw: ""#]
    );
    assert_eq!(
        declared(&out),
        ["FW-INPUT", "FW-OUTPUT", "FW-FORWARD", "FW-LOG"]
    );
}

#[test]
fn a_limited_rule_keeps_one_token_bucket() {
    let p = policy(
        r#"
[[input]]
name = "ping, limited"
proto = "icmp"
icmp_type = ["echo-request", "timestamp-request"]
limit = "10/second"
limit_burst = 20
action = "accept"
[[input]]
name = "ssh, limited and logged"
proto = "tcp"
dport = 22
limit = "3/minute"
log = true
action = "accept"
[[input]]
name = "one rule, one limit"
proto = "udp"
dport = 53
limit = "100/second"
action = "accept"
[[input]]
name = "web, limited, logged, on two interfaces"
proto = "tcp"
dport = [80, 443]
iface = ["eth0", "eth1"]
limit = "7/minute"
log = true
action = "accept"
"#,
    );
    let out = chains(&p, IpFamily::V4);
    // Two expansions: both jump to the helper, which holds the limit.
    assert_eq!(
        rule(&out, "FW-INPUT", 1),
        [
            "-A FW-INPUT -p icmp -m icmp --icmp-type 8 -j FW-IN-R1",
            "-A FW-INPUT -p icmp -m icmp --icmp-type 13 -j FW-IN-R1",
            "-A FW-IN-R1 -m limit --limit 10/second --limit-burst 20 -j ACCEPT",
        ]
    );
    // One expansion, two steps: the jump carries the limit.
    assert_eq!(
        rule(&out, "FW-INPUT", 2),
        [
            "-A FW-INPUT -p tcp -m tcp --dport 22 -m limit --limit 3/minute --limit-burst 5 -j FW-IN-R2",
            "-A FW-IN-R2 -j FW-LOG",
            "-A FW-IN-R2 -j ACCEPT",
        ]
    );
    assert_eq!(
        rule(&out, "FW-INPUT", 3),
        [
            "-A FW-INPUT -p udp -m udp --dport 53 -m limit --limit 100/second --limit-burst 5 -j ACCEPT"
        ]
    );
    // Both: the limit in the helper, what the rule does in its -HIT chain.
    assert_eq!(
        rule(&out, "FW-INPUT", 4),
        [
            "-A FW-INPUT -i eth0 -p tcp -m multiport --dports 80,443 -j FW-IN-R4",
            "-A FW-INPUT -i eth1 -p tcp -m multiport --dports 80,443 -j FW-IN-R4",
            "-A FW-IN-R4 -m limit --limit 7/minute --limit-burst 5 -j FW-IN-R4-HIT",
            "-A FW-IN-R4-HIT -j FW-LOG",
            "-A FW-IN-R4-HIT -j ACCEPT",
        ]
    );
    assert_eq!(
        declared(&out),
        [
            "FW-INPUT",
            "FW-OUTPUT",
            "FW-FORWARD",
            "FW-LOG",
            "FW-IN-R1",
            "FW-IN-R2",
            "FW-IN-R4",
            "FW-IN-R4-HIT"
        ]
    );
}

#[test]
fn reject_answers_per_protocol() {
    let p = policy(
        r#"
[defaults]
input = "reject"
forward = "reject"
[[input]]
name = "any protocol from the lab"
src = "192.0.2.0/24"
action = "reject"
[[input]]
proto = "udp"
action = "reject"
[[input]]
proto = 47
action = "reject"
[[input]]
proto = "tcp"
dport = 8080
action = "reject"
reject_with = "icmp-admin-prohibited"
[[input]]
proto = "tcp"
dport = 8081
action = "reject"
reject_with = "icmp-host-unreachable"
"#,
    );
    let v4 = chains(&p, IpFamily::V4);
    assert_eq!(
        rule(&v4, "FW-INPUT", 1),
        [
            "-A FW-INPUT -s 192.0.2.0/24 -p tcp -j REJECT --reject-with tcp-reset",
            "-A FW-INPUT -s 192.0.2.0/24 -p udp -j REJECT --reject-with icmp-port-unreachable",
            "-A FW-INPUT -s 192.0.2.0/24 -j REJECT --reject-with icmp-proto-unreachable",
        ]
    );
    assert_eq!(
        rule(&v4, "FW-INPUT", 2),
        ["-A FW-INPUT -p udp -j REJECT --reject-with icmp-port-unreachable"]
    );
    assert_eq!(
        rule(&v4, "FW-INPUT", 3),
        ["-A FW-INPUT -p 47 -j REJECT --reject-with icmp-proto-unreachable"]
    );
    assert_eq!(
        rule(&v4, "FW-INPUT", 4),
        ["-A FW-INPUT -p tcp -m tcp --dport 8080 -j REJECT --reject-with icmp-admin-prohibited"]
    );
    let default = [
        "-A FW-INPUT -p tcp -j REJECT --reject-with tcp-reset",
        "-A FW-INPUT -p udp -j REJECT --reject-with icmp-port-unreachable",
        "-A FW-INPUT -j REJECT --reject-with icmp-proto-unreachable",
    ];
    assert_eq!(section(&v4, "FW-INPUT", "# input default: reject"), default);

    let v6 = chains(&p, IpFamily::V6);
    assert_eq!(
        rule(&v6, "FW-INPUT", 3),
        ["-A FW-INPUT -p 47 -j REJECT --reject-with icmp6-port-unreachable"]
    );
    assert_eq!(
        rule(&v6, "FW-INPUT", 4),
        ["-A FW-INPUT -p tcp -m tcp --dport 8080 -j REJECT --reject-with icmp6-adm-prohibited"]
    );
    assert_eq!(
        rule(&v6, "FW-INPUT", 5),
        ["-A FW-INPUT -p tcp -m tcp --dport 8081 -j REJECT --reject-with icmp6-addr-unreachable"]
    );
    assert_eq!(
        section(&v6, "FW-FORWARD", "# forward default: reject"),
        [
            "-A FW-FORWARD -p tcp -j REJECT --reject-with tcp-reset",
            "-A FW-FORWARD -p udp -j REJECT --reject-with icmp6-port-unreachable",
            "-A FW-FORWARD -j REJECT --reject-with icmp6-port-unreachable",
        ]
    );
}

#[test]
fn stateful_stages_follow_the_policy() {
    let p = policy(
        r#"
[stateful]
established = "rules"
related = "drop"
invalid = "accept"
icmpv6_neighbor_discovery = "drop"
[log]
stateful = true
invalid = true
default = true
[[input]]
state = "established"
action = "accept"
"#,
    );
    let v6 = chains(&p, IpFamily::V6);
    assert_eq!(
        section(&v6, "FW-INPUT", "# FW-INPUT:"),
        [
            "-A FW-INPUT -s ::1/128 -j FW-LOG",
            "-A FW-INPUT -s ::1/128 -j DROP",
            "-A FW-INPUT -d ::1/128 -j FW-LOG",
            "-A FW-INPUT -d ::1/128 -j DROP",
        ]
    );
    assert_eq!(
        section(&v6, "FW-INPUT", "# neighbour discovery")[..2],
        [
            "-A FW-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 133 -m hl --hl-eq 255 -j FW-LOG",
            "-A FW-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 133 -m hl --hl-eq 255 -j DROP",
        ]
    );
    // No ESTABLISHED stage: the rule sees the state. Accepting INVALID
    // accepts what tcp_syn_only makes INVALID too.
    assert_eq!(
        section(&v6, "FW-INPUT", "# connection state"),
        [
            "-A FW-INPUT -m conntrack --ctstate RELATED -j FW-LOG",
            "-A FW-INPUT -m conntrack --ctstate RELATED -j DROP",
            "-A FW-INPUT -m conntrack --ctstate INVALID -j ACCEPT",
        ]
    );
    assert_eq!(
        section(&v6, "FW-INPUT", "# tcp_syn_only"),
        [
            "-A FW-INPUT -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j ACCEPT"
        ]
    );
    assert_eq!(
        rule(&v6, "FW-INPUT", 1),
        ["-A FW-INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT"]
    );
    assert_eq!(
        section(&v6, "FW-INPUT", "# input default: drop"),
        ["-A FW-INPUT -j FW-LOG", "-A FW-INPUT -j DROP"]
    );
    // An accepting default is not logged.
    assert_eq!(
        section(&v6, "FW-OUTPUT", "# output default: accept"),
        ["-A FW-OUTPUT -j ACCEPT"]
    );

    // Neighbour discovery meets the rules: nothing before them.
    let p = policy("[stateful]\nicmpv6_neighbor_discovery = \"rules\"\ntcp_syn_only = false\n");
    let v6 = chains(&p, IpFamily::V6);
    assert!(!v6.contains("--hl-eq"), "{v6}");
    assert!(!v6.contains("--tcp-flags"), "{v6}");
}

#[test]
fn with_invalid_rules_the_state_match_follows_fws_invalid() {
    let p = policy(
        r#"
[stateful]
invalid = "rules"
[[input]]
name = "new"
proto = "tcp"
dport = 22
state = "new"
action = "accept"
[[input]]
name = "invalid, any protocol"
state = "invalid"
action = "drop"
[[input]]
name = "udp is never the TCP case"
proto = "udp"
state = "new"
action = "accept"
[[input]]
name = "both"
proto = "tcp"
state = ["new", "invalid"]
action = "accept"
"#,
    );
    let out = chains(&p, IpFamily::V4);
    assert!(section(&out, "FW-INPUT", "# connection state").len() == 2);
    assert!(!out.contains("# tcp_syn_only"));
    assert_eq!(
        rule(&out, "FW-INPUT", 1),
        [
            "-A FW-INPUT -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW,UNTRACKED -j FW-IN-R1",
            "-A FW-IN-R1 -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j RETURN",
            "-A FW-IN-R1 -j ACCEPT",
        ]
    );
    assert_eq!(
        rule(&out, "FW-INPUT", 2),
        [
            "-A FW-INPUT -m conntrack --ctstate INVALID -j DROP",
            "-A FW-INPUT -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP",
        ]
    );
    assert_eq!(
        rule(&out, "FW-INPUT", 3),
        ["-A FW-INPUT -p udp -m conntrack --ctstate NEW,UNTRACKED -j ACCEPT"]
    );
    assert_eq!(
        rule(&out, "FW-INPUT", 4),
        ["-A FW-INPUT -p tcp -m conntrack --ctstate NEW,UNTRACKED,INVALID -j ACCEPT"]
    );
}

#[test]
fn tcp_flags_use_names_and_the_ecn_match() {
    let p = policy(
        r#"
[[input]]
proto = "tcp"
tcp_flags = "syn"
dport = 80
action = "accept"
[[input]]
proto = "tcp"
tcp_flags = { mask = ["fin", "syn", "rst", "psh", "ack", "urg"], set = [] }
action = "drop"
[[input]]
proto = "tcp"
tcp_flags = { mask = ["syn", "ece", "cwr"], set = ["syn", "ece"] }
action = "drop"
[[input]]
proto = "tcp"
tcp_flags = { mask = ["cwr"], set = ["cwr"] }
action = "drop"
"#,
    );
    let out = chains(&p, IpFamily::V4);
    assert_eq!(
        rule(&out, "FW-INPUT", 1),
        ["-A FW-INPUT -p tcp -m tcp --dport 80 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT"]
    );
    assert_eq!(
        rule(&out, "FW-INPUT", 2),
        ["-A FW-INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE -j DROP"]
    );
    assert_eq!(
        rule(&out, "FW-INPUT", 3),
        [
            "-A FW-INPUT -p tcp -m tcp --tcp-flags SYN SYN -m ecn --ecn-tcp-ece ! --ecn-tcp-cwr -j DROP"
        ]
    );
    assert_eq!(
        rule(&out, "FW-INPUT", 4),
        ["-A FW-INPUT -p tcp -m ecn --ecn-tcp-cwr -j DROP"]
    );
}

#[test]
fn protocol_zero_is_left_out() {
    let p = policy("[[input]]\nproto = 0\naction = \"drop\"\n");
    let out = chains(&p, IpFamily::V4);
    assert_eq!(rule(&out, "FW-INPUT", 1), Vec::<&str>::new());
    assert!(out.contains("# rule 1 line 1: left out: -p 0 means every protocol"));
}

#[test]
fn rates_come_back_in_iptables_units() {
    let l = |interval_ns, burst| Limit { interval_ns, burst };
    assert_eq!(rate_text(l(1_000_000_000, 5)), ("1/second".into(), None));
    assert_eq!(rate_text(l(100_000_000, 5)), ("10/second".into(), None));
    // 7/minute as fw parses it: 60 s / 7, truncated.
    assert_eq!(
        rate_text(l(60_000_000_000 / 7, 5)),
        ("7/minute".into(), None)
    );
    assert_eq!(rate_text(l(120_000_000_000, 5)), ("30/hour".into(), None));
    assert_eq!(rate_text(l(86_400_000_000_000, 5)), ("1/day".into(), None));
    assert_eq!(
        rate_text(l(86_400_000_000_000 / 3, 5)),
        ("3/day".into(), None)
    );
    let (text, note) = rate_text(l(10_000, 5));
    assert_eq!(text, "10000/second");
    assert!(note.is_some_and(|n| n.contains("100000/second")));
    let (text, note) = rate_text(l(2 * 86_400_000_000_000, 5));
    assert_eq!(text, "1/day");
    assert!(note.is_some());
}

#[test]
fn hooks_send_guarded_interfaces_to_fws_chains() {
    let own = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        hooks(&Target { ifaces: None }),
        [
            ("INPUT", own(&["!", "-i", "lo", "-j", "FW-INPUT"])),
            ("OUTPUT", own(&["!", "-o", "lo", "-j", "FW-OUTPUT"])),
            ("FORWARD", own(&["!", "-i", "lo", "-j", "FW-FORWARD"])),
        ]
    );
    assert_eq!(
        hooks(&Target {
            ifaces: Some(vec!["eth0".into(), "eth1".into()])
        }),
        [
            ("INPUT", own(&["-i", "eth0", "-j", "FW-INPUT"])),
            ("INPUT", own(&["-i", "eth1", "-j", "FW-INPUT"])),
            ("OUTPUT", own(&["-o", "eth0", "-j", "FW-OUTPUT"])),
            ("OUTPUT", own(&["-o", "eth1", "-j", "FW-OUTPUT"])),
            ("FORWARD", own(&["-i", "eth0", "-j", "FW-FORWARD"])),
            ("FORWARD", own(&["-i", "eth1", "-j", "FW-FORWARD"])),
        ]
    );
}

#[test]
fn standalone_is_a_whole_filter_table() {
    let p = policy(&format!(
        "{WEB_SERVER}\n[conntrack]\ntcp_established = \"1d\"\nicmp = 10\nmax_entries = 131072\n"
    ));
    let target = Target {
        ifaces: Some(vec!["eth0".into()]),
    };
    let out = standalone(&p, IpFamily::V6, &target);
    assert_eq!(out, standalone(&p, IpFamily::V6, &target), "deterministic");
    let (head, table) = out.split_at(out.find("*filter\n").expect("a table"));
    assert!(head.lines().all(|l| l.starts_with('#')), "{head}");
    assert!(head.starts_with(&format!(
        "# fw policy {:016x}, ipv6 rules for ip6tables-restore",
        p.hash
    )));
    assert!(head.contains("# Guarded interfaces: eth0.\n"));
    for sysctl in [
        "net.netfilter.nf_conntrack_tcp_timeout_established=86400",
        "net.netfilter.nf_conntrack_icmpv6_timeout=10",
        "net.netfilter.nf_conntrack_max=131072",
    ] {
        assert!(
            head.contains(&format!("#   sysctl -w {sysctl}\n")),
            "{head}"
        );
    }
    assert!(!head.contains("udp_timeout"), "only what the policy sets");
    assert!(table.starts_with(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:FW-INPUT - [0:0]\n"
    ));
    assert!(table.ends_with(
        "# the guarded interfaces\n\
         -A INPUT -i eth0 -j FW-INPUT\n\
         -A OUTPUT -o eth0 -j FW-OUTPUT\n\
         -A FORWARD -i eth0 -j FW-FORWARD\n\
         COMMIT\n"
    ));
    // The fw chains are exactly what `chains` gives the backend.
    let own = chains(&p, IpFamily::V6);
    let own_body = own
        .strip_prefix("*filter\n")
        .and_then(|s| s.strip_suffix("COMMIT\n"))
        .expect("a table");
    assert!(table.contains(own_body));
}

/// A policy that uses every feature the export knows, twice over with
/// different `[stateful]` settings.
const EVERYTHING: &str = r#"
interfaces = ["eth0", "eth1"]
[defaults]
input = "reject"
output = "drop"
forward = "reject"
[log]
rate = "7/minute"
burst = 10000
prefix = "a prefix \"quoted\" \\ 30 bytes.."
default = true
invalid = true
stateful = true
[conntrack]
tcp_established = "1d"
udp_stream = "3m"
[sets]
mixed = ["192.0.2.0/25", "198.51.100.7", "2001:db8::/48", "2001:db8:1::1"]
v6only = ["2001:db8:2::/64"]
[[input]]
name = "negated mixed set, limited, logged, auto reject"
src = "!@mixed"
limit = "1/day"
limit_burst = 10000
log = true
action = "reject"
[[input]]
proto = "tcp"
sport = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, "100-200"]
dport = ["1000-2000", "3000-4000", 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34]
iface = ["eth0", "eth1"]
tcp_flags = { mask = ["syn", "ack", "ece", "cwr"], set = ["syn", "cwr"] }
state = ["new", "established"]
log = true
log_rate = "10000/second"
log_prefix = "ports: "
action = "accept"
[[input]]
proto = "icmp"
icmp_type = ["echo-request", "destination-unreachable", 200]
state = "related"
limit = "5/second"
action = "log"
[[input]]
proto = "icmpv6"
icmp_type = ["echo-request", "packet-too-big"]
dst = "@v6only"
action = "accept"
[[input]]
proto = "sctp"
dport = [5000, 5001]
action = "reject"
reject_with = "icmp-net-unreachable"
[[input]]
proto = 47
family = "ipv4"
state = "invalid"
action = "reject"
reject_with = "icmp-proto-unreachable"
[[input]]
proto = 0
action = "drop"
[[input]]
proto = "udp"
state = ["new", "invalid"]
action = "reject"
reject_with = "icmp-port-unreachable"
[[output]]
dst = "@mixed"
state = "new"
action = "reject"
reject_with = "icmp-admin-prohibited"
[[output]]
proto = "tcp"
dport = 25
action = "reject"
reject_with = "tcp-reset"
[[forward]]
name = "web to the server"
proto = "tcp"
dst = ["198.51.100.2", "2001:db8:2::2"]
dport = 8080
iface = "eth1"
action = "accept"
[[forward]]
src = "@mixed"
state = "invalid"
limit = "2/hour"
action = "reject"
reject_with = "icmp-host-unreachable"
"#;

/// `EVERYTHING` with each stage in the other modes.
fn everything_variants() -> Vec<(String, Policy)> {
    let rules = EVERYTHING.replace(
        "[conntrack]",
        "[stateful]\nestablished = \"rules\"\nrelated = \"rules\"\ninvalid = \"rules\"\n\
         icmpv6_neighbor_discovery = \"rules\"\n[conntrack]",
    );
    let drops = EVERYTHING.replace(
        "[conntrack]",
        "[stateful]\nestablished = \"drop\"\nrelated = \"drop\"\ninvalid = \"accept\"\n\
         tcp_syn_only = false\nicmpv6_neighbor_discovery = \"drop\"\n[conntrack]",
    );
    [
        ("everything", EVERYTHING),
        ("everything, stages \"rules\"", &rules),
        ("everything, stages dropping", &drops),
    ]
    .into_iter()
    .map(|(name, text)| (name.to_string(), policy(text)))
    .collect()
}

#[test]
fn everything_writes_what_it_should() {
    for (name, p) in everything_variants() {
        for family in [IpFamily::V4, IpFamily::V6] {
            let out = chains(&p, family);
            // Every jump goes to a declared chain, every declared helper is
            // used.
            let decl = declared(&out);
            for l in out.lines().filter(|l| l.starts_with("-A ")) {
                let words: Vec<&str> = l.split_whitespace().collect();
                assert!(decl.contains(&words[1]), "{name}: {l}");
                if let Some(t) = l.split(" -j ").nth(1).and_then(|t| t.split(' ').next())
                    && t.starts_with("FW-")
                {
                    assert!(decl.contains(&t), "{name}: {l}");
                }
            }
            for d in &decl[3..] {
                assert!(out.contains(&format!(" -j {d}\n")), "{name}: {d} unused");
            }
            // One bucket per fw rule: a limit appears in one line per rule.
            let day_limits = out.matches("--limit 1/day").count();
            assert_eq!(day_limits, 1, "{name} {family:?}:\n{out}");
            assert!(
                out.contains(r#"-j LOG --log-prefix "a prefix \"quoted\" \\ 30 bytes.""#),
                "{name}: [log] prefix cut to 29 bytes"
            );
        }
    }
}

/// A fresh network namespace, deleted when dropped (also when the test
/// fails): iptables never runs in the host's own namespace.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("fw-export-{}-{nanos}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot create network namespace {name}");
        Self(name)
    }

    /// Run `cmd args` in the namespace with `input` on stdin.
    fn run(&self, cmd: &str, args: &[&str], input: &str) -> Result<String, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, cmd])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {cmd}: {e}"))?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .map_err(|e| format!("cannot feed {cmd}: {e}"))?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Can this test run iptables in a namespace of its own?
fn can_run_iptables() -> bool {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to create a network namespace");
        return false;
    }
    for cmd in ["ip", "iptables-restore", "ip6tables-restore"] {
        let found = Command::new(cmd)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            eprintln!("skipped: `{cmd}` is not installed");
            return false;
        }
    }
    true
}

/// Every example policy, the built-in one and `EVERYTHING`, both
/// families, as `iptables-restore --test` reads them; then really
/// restored (in the test's own namespace), and fw's chains replaced with
/// `--noflush` as the backend does.
#[test]
fn iptables_restore_accepts_every_export() {
    if !can_run_iptables() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    let mut policies: Vec<(String, Policy)> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("example readable");
            let p = parse_file(&text, f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (f.display().to_string(), p)
        })
        .collect();
    policies.push(("built-in".into(), policy(crate::policy::DEFAULT_POLICY)));
    policies.extend(everything_variants());

    let ns = Netns::new();
    let targets = [
        Target { ifaces: None },
        Target {
            ifaces: Some(vec!["eth0".into(), "eth1".into()]),
        },
    ];
    let mut checked = 0;
    for (name, p) in &policies {
        for family in [IpFamily::V4, IpFamily::V6] {
            let cmd = family.restore_command();
            for target in &targets {
                let text = standalone(p, family, target);
                if let Err(e) = ns.run(cmd, &["--test"], &text) {
                    panic!("{cmd} --test refuses {name}: {e}\n{text}");
                }
                checked += 1;
            }
            let text = standalone(p, family, &targets[1]);
            if let Err(e) = ns.run(cmd, &[], &text) {
                panic!("{cmd} refuses {name}: {e}\n{text}");
            }
            let own = chains(p, family);
            if let Err(e) = ns.run(cmd, &["--noflush"], &own) {
                panic!("{cmd} --noflush refuses {name}: {e}\n{own}");
            }
        }
    }
    assert_eq!(checked, policies.len() * 4);
}

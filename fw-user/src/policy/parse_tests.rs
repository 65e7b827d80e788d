use super::*;

fn ok(text: &str) -> Policy {
    parse(text, "t.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    parse(text, "t.toml")
        .expect_err("policy should be rejected")
        .to_string()
}

#[test]
fn foundation_example_parses() {
    let p = ok(r#"
interfaces = ["eth0"]
[defaults]
input = "drop"
output = "accept"
[[input]]
proto = "tcp"
dport = [22, 80, "8000-8100"]
action = "accept"
"#);
    assert_eq!(p.interfaces.as_deref(), Some(&["eth0".to_string()][..]));
    assert_eq!(
        p.defaults,
        Defaults {
            input: Verdict::Drop,
            output: Verdict::Accept,
            forward: Verdict::Drop
        }
    );
    let r = &p.input[0];
    assert_eq!(r.proto, Some(ipproto::TCP));
    assert_eq!(
        r.dport,
        vec![
            PortRange {
                first: 22,
                last: 22
            },
            PortRange {
                first: 80,
                last: 80
            },
            PortRange {
                first: 8000,
                last: 8100
            }
        ]
    );
    assert_eq!(r.line, 6);
    assert_eq!(r.families, Families::BOTH);
    assert_eq!(p.stateful, Stateful::default());
}

#[test]
fn issue_language_example_parses() {
    let dir = std::env::temp_dir().join(format!("fw-parse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("blocklist.txt"),
        "# abusers\n203.0.113.0/24\n198.51.100.7 # one host\n\n2001:db8:bad::/48\n",
    )
    .unwrap();
    let text = r#"
interfaces = ["eth0", "eth1"]

[defaults]
input = "drop"
output = "accept"
forward = "drop"

[stateful]
established = "accept"
invalid = "drop"
tcp_syn_only = true
icmpv6_neighbor_discovery = "accept"

[sets]
web_servers = ["192.0.2.11", "192.0.2.12", "2001:db8::11"]
private_net = ["192.0.2.0/24"]
blocklist = { file = "blocklist.txt" }

[[input]]
name = "blocklist"
src = "@blocklist"
action = "drop"

[[input]]
name = "mysql from web"
proto = "tcp"
dport = 3306
iface = "eth1"
src = "@web_servers"
dst = "192.0.2.30"
action = "accept"

[[input]]
proto = "tcp"
dport = [25, 110, 143, "62000-64000"]
sport = "1024-65535"
action = "accept"

[[input]]
proto = "icmp"
icmp_type = ["echo-request", "time-exceeded", "destination-unreachable"]
action = "accept"

[[input]]
proto = "udp"
action = "reject"

[[output]]
proto = "udp"
dport = 53
action = "accept"

[[forward]]
action = "drop"
"#;
    let p = parse_file(text, &dir.join("policy.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.sets["blocklist"].len(), 3);
    assert_eq!(p.input[0].src.as_ref().unwrap().nets.len(), 3);
    let mysql = &p.input[1];
    assert_eq!(mysql.families, Families::IPV4, "dst 192.0.2.30 pins IPv4");
    assert_eq!(mysql.iface, vec!["eth1".to_string()]);
    assert_eq!(
        p.input[2].sport,
        vec![PortRange {
            first: 1024,
            last: 65535
        }]
    );
    assert_eq!(p.input[3].icmp_type, vec![8, 11, 3]);
    assert_eq!(p.input[3].families, Families::IPV4);
    assert_eq!(p.input[4].action, RuleAction::Reject(RejectWith::Auto));
    assert_eq!(p.forward.len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn empty_file_is_the_safe_baseline() {
    let p = ok("");
    assert_eq!(
        p.defaults,
        Defaults {
            input: Verdict::Drop,
            output: Verdict::Accept,
            forward: Verdict::Drop
        }
    );
    assert!(p.interfaces.is_none());
    assert!(p.input.is_empty() && p.output.is_empty() && p.forward.is_empty());
}

#[test]
fn built_in_default_policy_is_valid() {
    let p = ok(super::super::DEFAULT_POLICY);
    assert_eq!(p.input.len(), 1);
    assert_eq!(
        p.input[0].dport,
        vec![PortRange {
            first: 22,
            last: 22
        }]
    );
}

#[test]
fn unknown_keys_are_errors_with_location() {
    let e = err("[defaults]\ninput = \"drop\"\ninptu = \"x\"\n");
    assert!(e.starts_with("t.toml:3:1:"), "{e}");
    assert!(e.contains("inptu"), "{e}");
    let e = err("[[input]]\nproto = \"tcp\"\ndports = 22\naction = \"accept\"\n");
    assert!(e.starts_with("t.toml:3:1:"), "{e}");
}

#[test]
fn bad_values_point_at_the_value() {
    let e = err("[defaults]\ninput = \"dorp\"\n");
    assert!(e.starts_with("t.toml:2:9:"), "{e}");
    let e = err("[[input]]\nproto = \"tcp\"\ndport = \"9000-8000\"\naction = \"accept\"\n");
    assert!(
        e.starts_with("t.toml:3:9:") && e.contains("reversed"),
        "{e}"
    );
    for bad in ["0", "65536", "\"http\"", "\"1-2-3\"", "[]", "-5"] {
        let e = err(&format!(
            "[[input]]\nproto = \"tcp\"\ndport = {bad}\naction = \"accept\"\n"
        ));
        assert!(e.starts_with("t.toml:3:9:"), "{bad}: {e}");
    }
    let e = err("[[input]]\nproto = \"sctpx\"\naction = \"accept\"\n");
    assert!(e.starts_with("t.toml:2:9:"), "{e}");
    let e = err("interfaces = [\"lo\"]\n");
    assert!(e.contains("loopback"), "{e}");
}

#[test]
fn contradictions_are_rejected() {
    let cases = [
        (
            "[[input]]\nproto = \"icmp\"\ndport = 22\naction = \"accept\"\n",
            "needs a protocol with ports",
        ),
        (
            "[[input]]\ndport = 22\naction = \"accept\"\n",
            "needs a protocol with ports",
        ),
        (
            "[[input]]\nsrc = \"@nope\"\naction = \"drop\"\n",
            "set `nope`, which is not defined",
        ),
        (
            "[[input]]\nfamily = \"ipv6\"\nsrc = \"192.0.2.0/24\"\naction = \"drop\"\n",
            "IPv4 address in an IPv6-only rule",
        ),
        (
            "[[input]]\nproto = \"icmpv6\"\nsrc = \"192.0.2.1\"\naction = \"drop\"\n",
            "IPv4 address in an IPv6-only rule",
        ),
        (
            "[[input]]\nsrc = \"192.0.2.1\"\ndst = \"2001:db8::1\"\naction = \"drop\"\n",
            "another address family",
        ),
        (
            "[[input]]\nproto = \"tcp\"\nicmp_type = 8\naction = \"accept\"\n",
            "needs proto = \"icmp\"",
        ),
        (
            "[[input]]\nproto = \"icmp\"\nicmp_type = \"packet-too-big\"\naction = \"accept\"\n",
            "unknown ICMP type",
        ),
        (
            "[[input]]\nproto = \"udp\"\ntcp_flags = \"syn\"\naction = \"accept\"\n",
            "needs proto = \"tcp\"",
        ),
        (
            "[[input]]\nproto = \"udp\"\naction = \"reject\"\nreject_with = \"tcp-reset\"\n",
            "only answers TCP",
        ),
        (
            "[[input]]\naction = \"drop\"\nreject_with = \"icmp-port-unreachable\"\n",
            "needs action = \"reject\"",
        ),
        (
            "[[input]]\nsrc = [\"!192.0.2.1\", \"192.0.2.2\"]\naction = \"drop\"\n",
            "negation applies to a whole match",
        ),
        (
            "[[input]]\nstate = \"closed\"\naction = \"drop\"\n",
            "unknown state",
        ),
        (
            "[stateful]\nestablished = \"maybe\"\n",
            "stateful.established",
        ),
        ("[sets]\nx = [\"192.0.2.300\"]\n", "not an address"),
        (
            "[sets]\nx = { file = \"/nonexistent/list.txt\" }\n",
            "cannot read",
        ),
        (
            "[[input]]\nproto = \"tcp\"\nlimit = \"10/fortnight\"\naction = \"accept\"\n",
            "unknown unit",
        ),
        (
            "[[input]]\nproto = \"tcp\"\nlimit_burst = 3\naction = \"accept\"\n",
            "needs `limit`",
        ),
    ];
    for (text, want) in cases {
        let e = err(text);
        assert!(e.contains(want), "{text:?} gave {e}");
        assert!(e.starts_with("t.toml:"), "no location: {e}");
    }
}

#[test]
fn icmp_names_follow_the_protocol_family() {
    let p = ok(
        "[[input]]\nproto = \"icmpv6\"\nicmp_type = [\"echo-request\", \"packet-too-big\", 135]\naction = \"accept\"\n",
    );
    assert_eq!(p.input[0].icmp_type, vec![128, 2, 135]);
    assert_eq!(p.input[0].families, Families::IPV6);
}

#[test]
fn negation_sets_and_family_inference() {
    let p = ok(
        "[sets]\nmixed = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n[[input]]\nsrc = \"!@mixed\"\naction = \"drop\"\n[[input]]\nsrc = \"!198.51.100.0/24\"\naction = \"drop\"\n",
    );
    let a = p.input[0].src.as_ref().unwrap();
    assert!(a.negated);
    assert_eq!(a.nets.len(), 2);
    assert_eq!(
        p.input[0].families,
        Families::BOTH,
        "a set reference does not pin the family"
    );
    assert_eq!(
        p.input[1].families,
        Families::IPV4,
        "a literal IPv4 prefix does"
    );
    // A host address with a prefix means its network, as in iptables.
    let p = ok("[[input]]\nsrc = \"192.0.2.77/24\"\naction = \"drop\"\n");
    assert_eq!(
        p.input[0].src.as_ref().unwrap().nets[0].to_string(),
        "192.0.2.0/24"
    );
}

#[test]
fn tcp_flags_forms() {
    let p = ok(
        "[[input]]\nproto = \"tcp\"\ntcp_flags = \"syn\"\naction = \"accept\"\n[[input]]\nproto = \"tcp\"\ntcp_flags = { mask = [\"syn\", \"ack\"], set = [\"syn\", \"ack\"] }\naction = \"accept\"\n",
    );
    assert_eq!(
        p.input[0].tcp_flags,
        Some(TcpFlagsMatch {
            mask: 0x17,
            comp: 0x02
        })
    );
    assert_eq!(
        p.input[1].tcp_flags,
        Some(TcpFlagsMatch {
            mask: 0x12,
            comp: 0x12
        })
    );
}

#[test]
fn stages_and_actions() {
    let p = ok(
        "[stateful]\nestablished = \"rules\"\ninvalid = \"accept\"\ntcp_syn_only = false\nicmpv6_neighbor_discovery = \"drop\"\nrelated = \"rules\"\n[defaults]\ninput = \"reject\"\n[[output]]\nproto = \"tcp\"\nsport = [22, 80, 443]\nstate = [\"established\", \"related\"]\naction = \"accept\"\nlog = true\n[[output]]\naction = \"log\"\n",
    );
    assert_eq!(
        p.stateful,
        Stateful {
            established: Stage::Rules,
            invalid: Stage::Accept,
            tcp_syn_only: false,
            neighbor_discovery: Stage::Drop,
            related: Stage::Rules,
        }
    );
    assert_eq!(p.defaults.input, Verdict::Reject(RejectWith::Auto));
    assert_eq!(
        p.output[0].state,
        vec![PacketState::Established, PacketState::Related]
    );
    assert!(p.output[0].log);
    assert_eq!(p.output[1].action, RuleAction::Log);
}

#[test]
fn too_many_rules_is_an_error() {
    let text = "[[input]]\naction = \"drop\"\n".repeat(MAX_RULES + 1);
    let e = err(&text);
    assert!(e.contains("at most 16384"), "{e}");
}

#[test]
fn line_col_counts_from_one() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
}

#[test]
fn limits() {
    let p = ok(
        "[[input]]\nproto = \"icmp\"\nlimit = \"2/second\"\naction = \"accept\"\n[[input]]\nlimit = \"60/minute\"\nlimit_burst = 10\naction = \"log\"\n",
    );
    assert_eq!(
        p.input[0].limit,
        Some(super::super::Limit {
            interval_ns: 500_000_000,
            burst: 5
        })
    );
    assert_eq!(
        p.input[1].limit,
        Some(super::super::Limit {
            interval_ns: 1_000_000_000,
            burst: 10
        })
    );
}

#[test]
fn every_shipped_example_is_valid_and_compiles() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let p = parse_file(&text, &path).unwrap_or_else(|e| panic!("{e}"));
            let names = ["eth0", "eth1"];
            crate::policy::compile(&p, "example", &|n| {
                names
                    .iter()
                    .position(|&x| x == n)
                    .map(|i| u32::try_from(i).unwrap() + 2)
            })
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 7, "examples found: {seen}");
}

#[test]
fn related_stage_defaults_to_accept_and_takes_every_stage() {
    assert_eq!(ok("").stateful.related, Stage::Accept);
    for (text, want) in [
        ("accept", Stage::Accept),
        ("drop", Stage::Drop),
        ("rules", Stage::Rules),
    ] {
        let p = ok(&format!("[stateful]\nrelated = \"{text}\"\n"));
        assert_eq!(p.stateful.related, want);
    }
    let e = err("[stateful]\nrelated = \"reject\"\n");
    assert!(
        e.starts_with("t.toml:2:11:") && e.contains("stateful.related"),
        "{e}"
    );
}

#[test]
fn conntrack_defaults_are_netfilters() {
    let p = ok("");
    assert_eq!(p.conntrack, ConntrackSettings::default());
    assert_eq!(p.conntrack.max_entries(), 65_536);
    assert_eq!(p.conntrack.timeouts, fw_common::conntrack::DEFAULT_TIMEOUTS);
    // An empty section changes nothing either.
    assert_eq!(ok("[conntrack]\n").conntrack, ConntrackSettings::default());
}

#[test]
fn conntrack_timeouts_as_seconds_or_durations() {
    use fw_common::conntrack::{CtState::*, DEFAULT_TIMEOUTS};
    let p = ok(r#"
[conntrack]
max_entries = 262_144
tcp_syn_sent = 30
tcp_syn_recv = "45s"
tcp_established = "12h"
tcp_fin_wait = "2m"
tcp_close_wait = "1m30s"
tcp_last_ack = "10"
tcp_time_wait = "1 min"
tcp_close = 5
udp = "20s"
udp_stream = "3m"
icmp = "5d"
"#);
    let c = p.conntrack;
    assert_eq!(c.max_entries, Some(262_144));
    assert_eq!(c.max_entries(), 262_144);
    let t = |s: fw_common::conntrack::CtState| c.timeouts[s as usize];
    assert_eq!(t(TcpSynSent), 30);
    assert_eq!(t(TcpSynSent2), 30, "SYN_SENT2 follows tcp_syn_sent");
    assert_eq!(t(TcpSynRecv), 45);
    assert_eq!(t(TcpEstablished), 12 * 3600);
    assert_eq!(t(TcpFinWait), 120);
    assert_eq!(t(TcpCloseWait), 90);
    assert_eq!(t(TcpLastAck), 10);
    assert_eq!(t(TcpTimeWait), 60);
    assert_eq!(t(TcpClose), 5);
    assert_eq!(t(UdpUnreplied), 20);
    assert_eq!(t(UdpReplied), 180);
    assert_eq!(t(IcmpUnreplied), 5 * 86_400);
    assert_eq!(t(IcmpReplied), 5 * 86_400, "icmp sets both ICMP states");
    assert_eq!(t(None), 0, "no timeout for the empty state");

    // Keys left out keep their defaults.
    let p = ok("[conntrack]\nudp = 10\n");
    let mut want = DEFAULT_TIMEOUTS;
    want[UdpUnreplied as usize] = 10;
    assert_eq!(p.conntrack.timeouts, want);
    assert_eq!(p.conntrack.max_entries, Option::None);
}

#[test]
fn conntrack_values_out_of_range_point_at_the_value() {
    let cases = [
        ("max_entries = 1023", "outside 1024..=4194304"),
        ("max_entries = 4194305", "outside 1024..=4194304"),
        ("max_entries = -1", "outside"),
        ("max_entries = \"big\"", "not a number"),
        ("udp = 0", "is 0"),
        ("udp = \"0s\"", "is 0"),
        ("udp = -5", "negative"),
        ("udp = 4294967296", "at most 4294967295"),
        ("tcp_established = \"200y\"", "at most 4294967295"),
        ("icmp = \"1.5s\"", "whole number of seconds"),
        ("icmp = \"500ms\"", "whole number of seconds"),
        ("icmp = \"soon\"", "not a duration"),
        ("icmp = \"10 fortnights\"", "not a duration"),
        ("icmp = \"\"", "not a duration"),
    ];
    for (line, want) in cases {
        let e = err(&format!("[conntrack]\n{line}\n"));
        let col = line.find('=').unwrap() + 3;
        assert!(
            e.starts_with(&format!("t.toml:2:{col}:")),
            "{line}: wrong location: {e}"
        );
        assert!(e.contains(want), "{line}: {e}");
        assert!(e.contains("hint:"), "{line}: {e}");
    }
    // The largest timeout is fine.
    let p = ok("[conntrack]\ntcp_established = 4294967295\n");
    assert_eq!(
        p.conntrack.timeouts[fw_common::conntrack::CtState::TcpEstablished as usize],
        u32::MAX
    );
}

#[test]
fn conntrack_unknown_keys_are_errors_with_location() {
    let e = err("[conntrack]\nudp = 30\ntcp_establised = \"1d\"\n");
    assert!(e.starts_with("t.toml:3:1:"), "{e}");
    assert!(e.contains("tcp_establised"), "{e}");
    assert!(
        e.contains("tcp_established"),
        "the known keys are listed: {e}"
    );
    let e = err("[conntrack]\nudp_timeout = 30\n");
    assert!(e.starts_with("t.toml:2:1:"), "{e}");
    let e = err("[conntrack]\nmax_entries = 4096\n[conntrack.tcp]\nestablished = 5\n");
    assert!(e.starts_with("t.toml:"), "{e}");
}

#[test]
fn log_section_and_rule_log_options() {
    let p = ok(r#"
[log]
rate = "10/minute"
burst = 3
prefix = "fw DROP: "
default = true
invalid = true
[[input]]
proto = "tcp"
dport = 23
action = "drop"
log = true
log_rate = "1/second"
log_burst = 2
log_prefix = "telnet: "
[[input]]
action = "log"
"#);
    assert_eq!(
        p.log,
        LogSettings {
            rate: super::super::Limit {
                interval_ns: 6_000_000_000,
                burst: 3
            },
            prefix: "fw DROP: ".into(),
            default: true,
            invalid: true,
            stateful: false,
        }
    );
    assert_eq!(
        p.input[0].log_rate,
        Some(super::super::Limit {
            interval_ns: 1_000_000_000,
            burst: 2
        })
    );
    assert_eq!(p.input[0].log_prefix.as_deref(), Some("telnet: "));
    assert!(p.input[0].logs() && p.input[1].logs());
    // Nothing said: 60/minute, burst 5, "fw: ", no outcome logged.
    assert_eq!(ok("").log, LogSettings::default());
    assert_eq!(ok("").log.rate, super::super::DEFAULT_LOG_RATE);
}

#[test]
fn log_mistakes_are_located_and_explained() {
    let e = err("[[input]]\naction = \"drop\"\nlog_rate = \"1/second\"\n");
    assert!(
        e.contains("t.toml:3:") && e.contains("`log_rate` is set but the rule does not log"),
        "{e}"
    );
    let e = err("[[input]]\naction = \"drop\"\nlog = true\nlog_burst = 4\n");
    assert!(e.contains("`log_burst` needs `log_rate`"), "{e}");
    let e = err("[log]\nrate = \"fast\"\n");
    assert!(
        e.contains("t.toml:2:") && e.contains("`rate` \"fast\" is not a rate"),
        "{e}"
    );
    let e = err("[log]\nburst = 0\n");
    assert!(e.contains("`burst` must be between 1 and 10000"), "{e}");
    let e = err(&format!("[log]\nprefix = \"{}\"\n", "x".repeat(40)));
    assert!(
        e.contains("`prefix` is 40 bytes long; fw keeps at most 31"),
        "{e}"
    );
    let e = err("[log]\nprefix = \"a\\nb\"\n");
    assert!(e.contains("control character"), "{e}");
    let e = err("[log]\nverbose = true\n");
    assert!(e.contains("unknown field `verbose`"), "{e}");
}

#[test]
fn set_files_must_be_regular_files() {
    let e = err("[sets]\nx = { file = \"/dev/zero\" }\n");
    assert!(
        e.contains("set `x`: cannot read `/dev/zero`: it is not a regular file"),
        "{e}"
    );
    let e = err("[sets]\nx = { file = \"/\" }\n");
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn set_files_can_come_from_the_caller_instead_of_the_disk() {
    let read = |path: &Path| match path.to_str() {
        Some("list.txt") => Ok("192.0.2.0/24 # web\n2001:db8::/32\n".to_string()),
        _ => Err("no such file here".to_string()),
    };
    let text = "[sets]\nx = { file = \"list.txt\" }\n";
    let p = parse_with_set_files(text, "t.toml", &read).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.sets["x"].len(), 2);
    // An absolute path goes to the reader too, never to the disk.
    let e = parse_with_set_files(
        "[sets]\nx = { file = \"/etc/hostname\" }\n",
        "t.toml",
        &read,
    )
    .expect_err("the reader knows no such file")
    .to_string();
    assert!(
        e.contains("t.toml:2:") && e.contains("cannot read `/etc/hostname`: no such file here"),
        "{e}"
    );
}

/// The malformed corpus: every file in `testdata/malformed` must fail with
/// an error at the line its `# expect: line N` names and containing each
/// of its other `# expect:` fragments. The netns suite loads the same
/// files into a running firewall, which must stay as it was.
#[test]
fn every_malformed_policy_fails_at_its_line_with_its_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/policy/testdata/malformed");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 25, "only {} malformed policies", files.len());
    let mut wrong = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        let line: usize = expects
            .iter()
            .find_map(|e| e.strip_prefix("line "))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{}: no `# expect: line N`", path.display()));
        let Err(e) = parse_file(&text, path) else {
            wrong.push(format!("{}: parsed", path.display()));
            continue;
        };
        let shown = e.to_string();
        let at = format!("{}:{line}:", path.display());
        let fragments = expects.iter().filter(|e| !e.starts_with("line "));
        if e.line != line || !shown.starts_with(&at) {
            wrong.push(format!("expected line {line}, got:\n{shown}"));
        } else if let Some(f) = fragments.into_iter().find(|f| !shown.contains(*f)) {
            wrong.push(format!("expected `{f}` in:\n{shown}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n\n"));
}

#[test]
fn an_empty_policy_is_the_defaults() {
    // Valid on purpose: the documented defaults (inbound and forwarded
    // dropped, outbound accepted), so `load` of an empty file is a
    // strict firewall, and the lockout guard still judges it.
    for text in ["", "\n", "# nothing yet\n"] {
        let p = ok(text);
        assert_eq!(p.input.len() + p.output.len() + p.forward.len(), 0);
        assert_eq!(p.defaults.input, Verdict::Drop);
        assert_eq!(p.defaults.output, Verdict::Accept);
    }
}

#[test]
fn toml_errors_always_have_a_one_line_message() {
    // Found by fuzzing: the TOML parser gives no message for a control
    // character in a comment, and some messages span lines.
    let e = parse("# a\u{1}b\n", "t.toml").expect_err("control character");
    assert_eq!((e.line, e.column), (1, 4));
    assert!(
        e.message.contains("control character U+0001"),
        "{}",
        e.message
    );
    let e = parse("[[input\n", "t.toml").expect_err("unclosed header");
    assert!(!e.message.contains('\n'), "{:?}", e.message);
    assert!(e.message.contains("invalid table header"), "{}", e.message);
}

#[test]
fn a_rate_faster_than_one_a_nanosecond_is_an_error() {
    // 2e9/second made an interval of 0 ns: `status` and the compiler then
    // divided by it when printing the rule.
    let e =
        err("[[input]]\nproto = \"icmp\"\nlimit = \"2000000000/second\"\naction = \"accept\"\n");
    assert!(
        e.contains("t.toml:3:9: `limit` \"2000000000/second\" is faster than one a nanosecond"),
        "{e}"
    );
    let e = err("[log]\nrate = \"86400000000001/day\"\n");
    assert!(e.contains("t.toml:2:8: `rate`"), "{e}");
    // The fastest rate fw measures still describes itself.
    let p = ok("[[input]]\nlimit = \"1000000000/second\"\naction = \"accept\"\n");
    assert_eq!(p.input[0].limit.map(|l| l.interval_ns), Some(1));
    assert!(p.input[0].to_string().contains("limit 1000000000/second"));
}

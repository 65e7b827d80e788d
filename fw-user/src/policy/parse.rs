//! `policy.toml` → `Policy`. Every error names the file, line and column of
//! the offending value and says how to fix it.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::{Defaults, Policy, PortRange, Proto, Rule, Verdict, fingerprint};
use crate::error::PolicyError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    interfaces: Option<Vec<Spanned<String>>>,
    defaults: Option<RawDefaults>,
    stateful: Option<RawStateful>,
    #[serde(default)]
    input: Vec<Spanned<RawRule>>,
    #[serde(default)]
    output: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    input: Option<Spanned<String>>,
    output: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStateful {
    icmpv6_neighbor_discovery: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<Spanned<String>>,
    proto: Option<Spanned<String>>,
    dport: Option<Spanned<RawPorts>>,
    action: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPorts {
    One(RawPort),
    Many(Vec<RawPort>),
}

#[derive(Clone, Deserialize)]
#[serde(untagged)]
enum RawPort {
    Number(i64),
    Text(String),
}

/// Parse and validate policy `text`; `file` names it in messages.
///
/// # Errors
/// A `PolicyError` pointing at the first problem found.
pub fn parse(text: &str, file: &str) -> Result<Policy, PolicyError> {
    let at = |span: Range<usize>, message: String, hint: &str| {
        PolicyError::at(file, text, span.start, message, hint)
    };
    let raw: RawPolicy = toml::from_str(text).map_err(|e| {
        let start = e.span().map_or(0, |s| s.start);
        PolicyError::at(
            file,
            text,
            start,
            e.message().trim().to_string(),
            "docs/policy.md lists every key fw understands",
        )
    })?;

    let interfaces = match raw.interfaces {
        None => None,
        Some(list) => {
            let mut names = Vec::new();
            for name in list {
                validate_interface_name(name.get_ref()).map_err(|msg| {
                    at(
                        name.span(),
                        msg,
                        "use the interface name `ip link` shows, e.g. \"eth0\"",
                    )
                })?;
                names.push(name.into_inner());
            }
            if names.is_empty() {
                return Err(PolicyError::at(
                    file,
                    text,
                    0,
                    "`interfaces` is empty, so the firewall would guard nothing".into(),
                    "list at least one interface, or remove the key to guard every interface that is up",
                ));
            }
            Some(names)
        }
    };

    let (input_default, output_default) = match &raw.defaults {
        None => (Verdict::Drop, Verdict::Accept),
        Some(d) => (
            d.input
                .as_ref()
                .map_or(Ok(Verdict::Drop), |v| verdict(v, "defaults.input", &at))?,
            d.output
                .as_ref()
                .map_or(Ok(Verdict::Accept), |v| verdict(v, "defaults.output", &at))?,
        ),
    };

    let neighbor_discovery = match raw
        .stateful
        .as_ref()
        .and_then(|s| s.icmpv6_neighbor_discovery.as_ref())
    {
        None => true,
        Some(v) => verdict(v, "stateful.icmpv6_neighbor_discovery", &at)? == Verdict::Accept,
    };

    let input = raw
        .input
        .into_iter()
        .map(|r| rule(r, "input", file, text))
        .collect::<Result<_, _>>()?;
    let output = raw
        .output
        .into_iter()
        .map(|r| rule(r, "output", file, text))
        .collect::<Result<_, _>>()?;

    Ok(Policy {
        interfaces,
        defaults: Defaults {
            input: input_default,
            output: output_default,
        },
        neighbor_discovery,
        input,
        output,
        hash: fingerprint(text),
    })
}

fn verdict(
    v: &Spanned<String>,
    key: &str,
    at: &impl Fn(Range<usize>, String, &str) -> PolicyError,
) -> Result<Verdict, PolicyError> {
    match v.get_ref().as_str() {
        "accept" => Ok(Verdict::Accept),
        "drop" => Ok(Verdict::Drop),
        other => Err(at(
            v.span(),
            format!("`{key}` is \"{other}\", which is not a verdict fw knows"),
            "write \"accept\" or \"drop\"",
        )),
    }
}

fn rule(raw: Spanned<RawRule>, chain: &str, file: &str, text: &str) -> Result<Rule, PolicyError> {
    let at = |span: Range<usize>, message: String, hint: &str| {
        PolicyError::at(file, text, span.start, message, hint)
    };
    let line = line_col(text, raw.span().start).0;
    let raw = raw.into_inner();
    let proto = match &raw.proto {
        None => Proto::Any,
        Some(p) => match p.get_ref().as_str() {
            "any" | "all" => Proto::Any,
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "icmp" => Proto::Icmp,
            "icmpv6" | "ipv6-icmp" => Proto::Icmpv6,
            other => {
                return Err(at(
                    p.span(),
                    format!("unknown protocol \"{other}\" in a [[{chain}]] rule"),
                    "write \"tcp\", \"udp\", \"icmp\", \"icmpv6\" or \"any\"",
                ));
            }
        },
    };
    let dport = match &raw.dport {
        None => Vec::new(),
        Some(d) => {
            if !matches!(proto, Proto::Tcp | Proto::Udp) {
                return Err(at(
                    d.span(),
                    format!(
                        "`dport` needs a protocol with ports, but this rule has proto \"{proto}\""
                    ),
                    "add proto = \"tcp\" or proto = \"udp\" to the rule",
                ));
            }
            let items = match d.get_ref() {
                RawPorts::One(p) => vec![p.clone()],
                RawPorts::Many(list) => list.clone(),
            };
            if items.is_empty() {
                return Err(at(
                    d.span(),
                    "`dport` is an empty list, so the rule could never match".into(),
                    "list ports like [22, 80, \"8000-8100\"], or remove `dport` to match every port",
                ));
            }
            items
                .iter()
                .map(|p| port_range(p).map_err(|(msg, hint)| at(d.span(), msg, hint)))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    let verdict = verdict(&raw.action, &format!("{chain}.action"), &at)?;
    Ok(Rule {
        name: raw.name.map(Spanned::into_inner),
        proto,
        dport,
        verdict,
        line,
    })
}

fn port_range(p: &RawPort) -> Result<PortRange, (String, &'static str)> {
    const HINT: &str =
        "ports are 1-65535; write a single port like 443 or a range like \"8000-8100\"";
    let number = |n: i64, shown: &str| -> Result<u16, (String, &'static str)> {
        u16::try_from(n)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| (format!("port {shown} is out of range"), HINT))
    };
    match p {
        RawPort::Number(n) => {
            let port = number(*n, &n.to_string())?;
            Ok(PortRange {
                first: port,
                last: port,
            })
        }
        RawPort::Text(s) => {
            let parse = |part: &str| -> Result<u16, (String, &'static str)> {
                let n: i64 = part
                    .trim()
                    .parse()
                    .map_err(|_| (format!("\"{s}\" is not a port or a port range"), HINT))?;
                number(n, part.trim())
            };
            let (first, last) = if let Some((a, b)) = s.split_once('-') {
                (parse(a)?, parse(b)?)
            } else {
                let p = parse(s)?;
                (p, p)
            };
            if first > last {
                return Err((
                    format!("port range \"{s}\" is reversed"),
                    "write the lower port first, e.g. \"8000-8100\"",
                ));
            }
            Ok(PortRange { first, last })
        }
    }
}

fn validate_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
        return Err(format!("\"{name}\" is not a valid interface name"));
    }
    if name == "lo" {
        return Err(
            "fw never guards the loopback interface `lo`; loopback traffic is always allowed"
                .into(),
        );
    }
    Ok(())
}

/// 1-based line and column of byte `offset` in `text`.
#[must_use]
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
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
    fn issue_example_parses() {
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
                output: Verdict::Accept
            }
        );
        assert_eq!(p.input.len(), 1);
        let r = &p.input[0];
        assert_eq!(r.proto, Proto::Tcp);
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
        assert!(p.neighbor_discovery);
    }

    #[test]
    fn empty_file_is_the_safe_baseline() {
        let p = ok("");
        assert_eq!(
            p.defaults,
            Defaults {
                input: Verdict::Drop,
                output: Verdict::Accept
            }
        );
        assert!(p.interfaces.is_none());
        assert!(p.input.is_empty() && p.output.is_empty());
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
        assert!(e.contains("dports"), "{e}");
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let e = err("[defaults]\ninput = \"dorp\"\n");
        assert!(e.starts_with("t.toml:2:9:"), "{e}");
        assert!(e.contains("\"accept\" or \"drop\""), "{e}");

        let e = err("[[input]]\nproto = \"tcp\"\ndport = \"9000-8000\"\naction = \"accept\"\n");
        assert!(e.starts_with("t.toml:3:9:"), "{e}");
        assert!(e.contains("reversed"), "{e}");

        for bad in ["0", "65536", "\"http\"", "\"1-2-3\"", "[]", "-5"] {
            let e = err(&format!(
                "[[input]]\nproto = \"tcp\"\ndport = {bad}\naction = \"accept\"\n"
            ));
            assert!(e.starts_with("t.toml:3:9:"), "{bad}: {e}");
        }

        let e = err("[[input]]\nproto = \"sctp\"\naction = \"accept\"\n");
        assert!(e.starts_with("t.toml:2:9:"), "{e}");

        let e = err("[[input]]\nproto = \"icmp\"\ndport = 22\naction = \"accept\"\n");
        assert!(e.contains("needs a protocol with ports"), "{e}");

        let e = err("[[input]]\nproto = \"tcp\"\ndport = 22\n");
        assert!(e.contains("action"), "{e}");

        let e = err("interfaces = [\"lo\"]\n");
        assert!(e.contains("loopback"), "{e}");
    }

    #[test]
    fn syntax_errors_have_location() {
        let e = err("[defaults]\ninput = drop\n");
        assert!(e.starts_with("t.toml:2:"), "{e}");
    }

    #[test]
    fn port_range_edges() {
        let p = ok(
            "[[input]]\nproto = \"udp\"\ndport = [1, 65535, \"1023-1024\"]\naction = \"drop\"\n",
        );
        assert_eq!(
            p.input[0].dport,
            vec![
                PortRange { first: 1, last: 1 },
                PortRange {
                    first: 65535,
                    last: 65535
                },
                PortRange {
                    first: 1023,
                    last: 1024
                }
            ]
        );
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}

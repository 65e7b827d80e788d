//! Human-readable rendering of command results.

use std::fmt::Write as _;

use crate::commands::status::Status;

/// `fw-user status` as a table, in the spirit of `iptables -vL`.
#[must_use]
#[expect(
    clippy::too_many_lines,
    reason = "one block per section, in the order printed"
)]
pub fn status_table(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "fw: {} backend, pinned at {}", s.backend, s.pin_path);
    let _ = writeln!(
        out,
        "policy: fingerprint {} (generation {}); defaults input {}, output {}, forward {}; {} input, {} output, {} forward rules",
        s.policy_fingerprint,
        s.generation,
        s.defaults["input"],
        s.defaults["output"],
        s.defaults["forward"],
        s.rules["input"],
        s.rules["output"],
        s.rules["forward"]
    );
    let _ = writeln!(out, "\ninterfaces:");
    if s.interfaces.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for i in &s.interfaces {
        let gone = if i.present { "" } else { "  (interface gone)" };
        let _ = writeln!(
            out,
            "  {:<16} xdp {:<8} tc egress {}{gone}",
            i.name, i.xdp, i.tc_egress
        );
    }
    for c in &s.chains {
        let _ = writeln!(
            out,
            "\nChain {} (policy {} {} packets, {} bytes)",
            c.name, c.policy, c.packets, c.bytes
        );
        if c.rules.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "  {:>4} {:>10} {:>12}  {:<7} {:<44} name",
            "num", "pkts", "bytes", "action", "match"
        );
        for r in &c.rules {
            let _ = writeln!(
                out,
                "  {:>4} {:>10} {:>12}  {:<7} {:<44} {}",
                r.number,
                r.packets,
                r.bytes,
                r.action,
                r.matches,
                r.name.as_deref().unwrap_or("")
            );
        }
    }
    let _ = writeln!(
        out,
        "\nlog events: {} emitted, {} suppressed by the rate limit, {} lost (ring buffer full)",
        s.events.emitted, s.events.suppressed, s.events.lost
    );
    let ct = &s.conntrack;
    let _ = writeln!(
        out,
        "\nconnection table: {} connections (`fw-user conntrack list` shows them)",
        ct.entries
    );
    for t in ct.tables.iter().chain([&ct.fragments]) {
        let _ = writeln!(
            out,
            "  {:<12} {:>8} of {:<8} {}",
            t.name, t.entries, t.max_entries, t.map
        );
    }
    for (state, n) in &ct.by_state {
        let _ = writeln!(out, "  {state:<12} {n:>8}");
    }
    let _ = writeln!(out, "\npackets by outcome:");
    let _ = writeln!(
        out,
        "  {:<28} {:>12} {:>14} {:>12} {:>14}",
        "", "in packets", "in bytes", "out packets", "out bytes"
    );
    let names: Vec<&str> = s
        .counters
        .iter()
        .filter(|c| c.direction == "input")
        .map(|c| c.name)
        .collect();
    for name in names {
        let find = |dir: &str| {
            s.counters
                .iter()
                .find(|c| c.direction == dir && c.name == name)
        };
        let (i, o) = (find("input"), find("output"));
        let (ip, ib) = i.map_or((0, 0), |c| (c.packets, c.bytes));
        let (op, ob) = o.map_or((0, 0), |c| (c.packets, c.bytes));
        if ip + op == 0 {
            continue;
        }
        let _ = writeln!(out, "  {name:<28} {ip:>12} {ib:>14} {op:>12} {ob:>14}");
    }
    out
}

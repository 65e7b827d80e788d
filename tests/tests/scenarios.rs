//! The scenario suites of `tests/scenarios/`: each file builds its hosts
//! and networks from namespaces, loads every host's policy with the real
//! `fw-user`, and sends its whole reachability matrix of probes; then
//! loads each of its deliberately wrong policies and checks that exactly
//! the probes it names catch it. See `docs/scenarios.md`.

use std::path::Path;

use fw_tests::{
    lacks_privileges,
    scenario::{self, Outcome, Report, Scenario},
};

/// One `#[test]` per scenario file, named after it; `SCENARIOS` lists the
/// files, so the list and the tests cannot drift apart.
macro_rules! scenario_tests {
    ($($test:ident: $file:literal,)*) => {
        const SCENARIOS: &[&str] = &[$($file),*];
        $(
            #[test]
            fn $test() {
                run($file);
            }
        )*
    };
}

scenario_tests! {
    blocklist_100k: "blocklist-100k",
    mail_dns_ftp: "mail-dns-ftp",
    private_lb_bastion: "private-lb-bastion",
    restrictive_egress: "restrictive-egress",
    web_db: "web-db",
}

fn run(name: &str) {
    if lacks_privileges() {
        return;
    }
    let report = scenario::load(name).run();
    eprintln!("{}\n{report}", report.details());
    report.assert_passed();
    if name == "web-db" {
        failure_lines_name_the_probe(&report);
    }
}

/// What the suite prints when the database port is open to everyone (the
/// first mutation of web-db): each probe that caught it, by file, line,
/// row and name.
fn failure_lines_name_the_probe(report: &Report) {
    let caught = report.mutation_failures("mysql open to everyone");
    assert_eq!(caught.len(), 6, "{caught:#?}");
    assert!(
        caught.iter().any(|l| l.contains("web-db.toml:")
            && l.contains("\"outsider → db mysql [ipv4]\"")
            && l.contains("expected dropped, got open")),
        "{caught:#?}"
    );
}

#[test]
fn every_scenario_file_has_a_test() {
    let files: Vec<String> = scenario::files()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files, SCENARIOS,
        "tests/scenarios/ and the tests of tests/scenarios.rs differ: add each new file to `scenario_tests!`"
    );
}

#[test]
fn every_scenario_file_is_valid_and_fw_accepts_its_policies() {
    for path in scenario::files() {
        let s = Scenario::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        s.check_policies().unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A wrong policy in place of a host's own (not as a mutation: as if the
/// file said so) fails the suite, naming exactly the probe that caught it.
#[test]
fn a_wrong_policy_fails_the_suite_with_the_probe_that_caught_it() {
    if lacks_privileges() {
        return;
    }
    let text = r#"
description = "a database server whose port is open to everyone"
[[network]]
name = "lan"
kind = "private"
subnets = ["192.0.2.0/24"]
[[host]]
name = "db"
interfaces = [{ network = "lan", addresses = ["192.0.2.30"] }]
policy = "db"
services = ["tcp/3306", "tcp/22"]
[[host]]
name = "web"
interfaces = [{ network = "lan", addresses = ["192.0.2.11"] }]
[[host]]
name = "intruder"
interfaces = [{ network = "lan", addresses = ["192.0.2.66"] }]
[policy.db]
inline = '''
[[input]]
proto = "tcp"
dport = 3306
src = "192.0.2.11"
action = "accept"
'''
[policy.db-open]
inline = '''
[[input]]
proto = "tcp"
dport = 3306
action = "accept"
'''
[[mutation]]
name = "the database port open to everyone"
host = "db"
policy = "db-open"
caught_by = ["intruder → db tcp/3306"]
[[probe]]
from = "web"
to = "db"
proto = "tcp"
port = 3306
expect = "open"
[[probe]]
from = "intruder"
to = "db"
proto = "tcp"
port = 3306
expect = "dropped"
[[probe]]
from = "intruder"
to = "db"
proto = "tcp"
port = 22
expect = "dropped"
"#;
    // The file's own policy passes (its mutation says which probe would
    // catch the wrong one); here the wrong one is the host's policy.
    let s = Scenario::parse(text, Path::new("wrong-db.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .with_policy("db", "db-open");
    let report = s.run();
    let problems = report.problems();
    assert_eq!(problems.len(), 1, "{report}");
    assert!(
        problems[0].starts_with(
            "wrong-db.toml:44: probe 2 \"intruder → db tcp/3306\": intruder → db 192.0.2.30 tcp/3306: expected dropped, got open"
        ),
        "{report}"
    );
    let failed: Vec<_> = report.baseline.failures().collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].got, Outcome::Open);
    // What the test of a scenario file would panic with.
    let message = report.to_string();
    assert!(message.contains("1 problem:"), "{message}");
    assert!(message.contains("\"intruder → db tcp/3306\""), "{message}");
    assert!(
        report.into_result().is_err(),
        "a failing report is an error"
    );
}

fn parse_error(text: &str) -> String {
    Scenario::parse(text, Path::new("broken.toml"))
        .expect_err("a broken scenario")
        .to_string()
}

const LAN: &str = r#"
description = "x"
[[network]]
name = "lan"
kind = "private"
subnets = ["192.0.2.0/24"]
[[host]]
name = "a"
interfaces = [{ network = "lan", addresses = ["192.0.2.1"] }]
services = ["tcp/80"]
[[host]]
name = "b"
interfaces = [{ network = "lan", addresses = ["192.0.2.2"] }]
"#;

#[test]
fn mistakes_in_a_scenario_name_the_file_the_line_and_the_fix() {
    // Not TOML.
    let e = parse_error("description = \"x\"\n[[probe]\n");
    assert!(e.starts_with("broken.toml:2: "), "{e}");
    // An unknown key.
    let e = parse_error(&format!(
        "{LAN}[[probe]]\nfrom = \"b\"\nto = \"a\"\nproto = \"tcp\"\nport = 80\nexpect = \"open\"\ncolour = 1\n"
    ));
    assert!(
        e.starts_with("broken.toml:") && e.contains("unknown field `colour`"),
        "{e}"
    );
    // A host that does not exist.
    let e = parse_error(&format!(
        "{LAN}[[probe]]\nfrom = \"c\"\nto = \"a\"\nproto = \"tcp\"\nport = 80\nexpect = \"open\"\n"
    ));
    assert_eq!(
        e,
        "broken.toml:14: probe 1 (c → a): `from`: no host `c` (hosts: a, b)"
    );
    // An expectation that cannot happen.
    let e = parse_error(&format!(
        "{LAN}[[probe]]\nfrom = \"b\"\nto = \"a\"\nproto = \"tcp-ack\"\nport = 80\nexpect = \"open\"\n"
    ));
    assert!(
        e.contains("`expect = \"open\"` cannot happen to a tcp-ack probe"),
        "{e}"
    );
    // Outside the documentation ranges.
    let e = parse_error(
        "description = \"x\"\n[[network]]\nname = \"lan\"\nkind = \"public\"\nsubnets = [\"10.0.0.0/8\"]\n",
    );
    assert!(
        e.starts_with(
            "broken.toml:2: network `lan`: subnet 10.0.0.0/8 is outside the documentation ranges"
        ),
        "{e}"
    );
    // A probe that does not exist in `caught_by`.
    let e = parse_error(&format!(
        "{LAN}[policy.p]\ninline = ''\n[policy.q]\ninline = ''\n[[probe]]\nfrom = \"b\"\nto = \"a\"\nproto = \"tcp\"\nport = 80\nexpect = \"open\"\n[[mutation]]\nname = \"m\"\nhost = \"a\"\npolicy = \"q\"\ncaught_by = [\"nope\"]\n"
    ).replace("services = [\"tcp/80\"]", "services = [\"tcp/80\"]\npolicy = \"p\""));
    assert!(
        e.contains("mutation \"m\": `caught_by` names \"nope\", which is no probe's name (probes: b → a tcp/80)"),
        "{e}"
    );
    // A fixed source port the sender listens on itself.
    let e = parse_error(&format!(
        "{LAN}[[probe]]\nfrom = \"a\"\nto = \"b\"\nproto = \"tcp\"\nport = 80\nsport = 80\nexpect = \"dropped\"\n"
    ));
    assert!(
        e.contains("`sport = 80`: a listens on that port itself"),
        "{e}"
    );
}

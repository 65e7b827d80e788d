//! Bad input leaves the running firewall alone: `fw-user load` of every
//! policy in the malformed corpus (fw-user/src/policy/testdata/malformed)
//! fails with an error naming the file and the line, and the firewall
//! loaded before keeps its generation, its policy and its verdicts.

use std::{path::PathBuf, time::Duration};

use fw_tests::{
    fwcli::fw_user,
    lacks_privileges,
    netns::{Connect, EchoServer, Pair, server_addr, tcp_probe},
};

const OPEN: u16 = 8080;
const CLOSED: u16 = 9090;
const WAIT: Duration = Duration::from_millis(1500);

/// Accepts new TCP connections to `OPEN`; drops everything else inbound.
const GOOD: &str = r#"
[defaults]
input = "drop"
output = "accept"

[[input]]
name = "web"
proto = "tcp"
dport = 8080
action = "accept"
"#;

/// The corpus, sorted, with the line each file's `# expect: line N`
/// names.
fn corpus() -> Vec<(PathBuf, usize)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fw-user/src/policy/testdata/malformed")
        .canonicalize()
        .expect("the malformed corpus");
    let mut files: Vec<(PathBuf, usize)> = std::fs::read_dir(&dir)
        .expect("read the malformed corpus")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read a malformed policy");
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("# expect: line "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("{}: no `# expect: line N`", p.display()));
            (p, line)
        })
        .collect();
    files.sort();
    files
}

/// What says which policy runs: its generation and fingerprint.
fn running(pair: &Pair) -> (u64, String) {
    let s = pair.status_json();
    (
        s["generation"].as_u64().expect("generation"),
        s["policy_fingerprint"]
            .as_str()
            .expect("policy_fingerprint")
            .to_string(),
    )
}

fn assert_old_policy_judges(pair: &Pair, when: &str) {
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, OPEN), WAIT),
        Connect::Echoed,
        "{when}: the old policy accepts port {OPEN}"
    );
    assert_eq!(
        tcp_probe(&pair.client, server_addr(false, CLOSED), WAIT),
        Connect::TimedOut,
        "{when}: the old policy drops port {CLOSED}"
    );
}

#[test]
fn every_malformed_policy_is_refused_and_the_running_firewall_stays() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _echo = [OPEN, CLOSED].map(|p| EchoServer::start(&pair.server, p));
    pair.load(GOOD);
    let before = running(&pair);
    assert_old_policy_judges(&pair, "before");

    let files = corpus();
    assert!(files.len() >= 25, "only {} malformed policies", files.len());
    let mut wrong = Vec::new();
    for (path, line) in &files {
        let file = path.display().to_string();
        let args = pair.load_args(&file, &["--detach"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = fw_user(&pair.server, &args);
        let at = format!("{file}:{line}:");
        if r.ok {
            wrong.push(format!("{file}: loaded:\n{}", r.stdout));
        } else if !r.stderr.contains(&at) {
            wrong.push(format!("{file}: expected `{at}` in:\n{}", r.stderr));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n\n"));

    assert_eq!(
        running(&pair),
        before,
        "the generation and the policy stayed"
    );
    assert_old_policy_judges(&pair, "after the malformed loads");
}

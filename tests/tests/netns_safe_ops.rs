//! Safe operation on real traffic: the lockout guard refuses a policy that
//! would cut the operator's SSH-like session (and its prediction is what
//! the datapath then does under `--force`); `load --confirm` is rolled back
//! by its watchdog unless confirmed, also when `fw-user` is killed right
//! after applying; `fw-user rollback` restores the previous policy.
//!
//! The "SSH" session is a TCP echo session to port 22 of the server
//! namespace, made the operator's by `SSH_CONNECTION` as sshd sets it.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use fw_tests::{
    fwcli::{backend_args, fw_user, fw_user_ok, in_netns, state_dir},
    lacks_privileges,
    netns::{Connect, EchoServer, Pair, Session, server_addr, tcp_probe},
    packet::SERVER4,
};

const SSH: u16 = 22;
const OLD: u16 = 8080;
const NEW: u16 = 9090;
const WAIT: Duration = Duration::from_millis(1500);

/// Input dropped by default; `ports` accepted.
fn only(ports: &[u16]) -> String {
    let mut p = String::from("[defaults]\ninput = \"drop\"\noutput = \"accept\"\n");
    for port in ports {
        let _ = write!(
            p,
            "\n[[input]]\nproto = \"tcp\"\ndport = {port}\naction = \"accept\"\n"
        );
    }
    p
}

/// A server with echo services on `OLD` and `NEW`, and a policy file
/// admitting only each.
struct Bed {
    pair: Pair,
    _servers: [EchoServer; 2],
    old: String,
    new: String,
}

fn bed() -> Bed {
    let pair = Pair::new();
    let servers = [
        EchoServer::start(&pair.server, OLD),
        EchoServer::start(&pair.server, NEW),
    ];
    let old = pair.policy_file("old.toml", &only(&[OLD]));
    let new = pair.policy_file("new.toml", &only(&[NEW]));
    Bed {
        pair,
        _servers: servers,
        old,
        new,
    }
}

/// Run fw-user in the server namespace as the operator of `session`.
fn as_operator(pair: &Pair, session: &Session, args: &[&str]) -> fw_tests::fwcli::Run {
    let local = session.local_addr();
    let out = in_netns(&pair.server)
        .env(
            "SSH_CONNECTION",
            format!("{} {} {SERVER4} {SSH}", local.ip(), local.port()),
        )
        .args(args)
        .output()
        .expect("run fw-user");
    fw_tests::fwcli::Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn probe(pair: &Pair, port: u16) -> Connect {
    tcp_probe(&pair.client, server_addr(false, port), WAIT)
}

/// Wait until `port` answers as `want`, or panic after `within`.
fn eventually(pair: &Pair, port: u16, want: &Connect, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let got = probe(pair, port);
        if &got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: port {port} still {got:?} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_guard_refuses_a_policy_that_locks_the_operator_out_and_is_right() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _ssh = EchoServer::start(&pair.server, SSH);
    let _web = EchoServer::start(&pair.server, 80);
    let mut session = Session::open(&pair.client, server_addr(false, SSH));
    assert!(session.echo(b"hello"));
    let pin = pair.pin_path();
    let iface = pair.server_if.as_str();

    // Web only: the session would survive (established is accepted) but
    // nobody could open a new one.
    let web_only = pair.policy_file("web-only.toml", &only(&[80]));
    let r = as_operator(&pair, &session, &["check", &web_only, "--iface", iface]);
    assert!(!r.ok, "check must refuse:\n{}", r.stdout);
    for needle in [
        "could lock you out",
        "your SSH session",
        "found through SSH_CONNECTION",
        "no way back in",
        "input default of",
        "--confirm",
        "--force",
    ] {
        assert!(
            r.stderr.contains(needle),
            "{needle:?} missing:\n{}",
            r.stderr
        );
    }
    let args = pair.load_args(&web_only, &["--detach"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = as_operator(&pair, &session, &args);
    assert!(!r.ok && r.stderr.contains("no way back in"), "{}", r.stderr);
    assert!(
        !fw_user(&pair.server, &["status", "--pin-path", &pin]).ok,
        "a refused load leaves nothing behind"
    );
    assert_eq!(probe(&pair, 80), Connect::Echoed);

    // A rule that drops the operator's address is named with its line.
    let blocks_me = pair.policy_file(
        "blocks-me.toml",
        &format!(
            "[defaults]\ninput = \"drop\"\n\n[[input]]\nname = \"bad neighbours\"\nsrc = \"{}/24\"\naction = \"drop\"\n\n[[input]]\nproto = \"tcp\"\ndport = {SSH}\naction = \"accept\"\n",
            session.local_addr().ip()
        ),
    );
    let r = as_operator(&pair, &session, &["check", &blocks_me, "--iface", iface]);
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr.contains("(bad neighbours)` at ") && r.stderr.contains("blocks-me.toml:4"),
        "{}",
        r.stderr
    );

    // With SSH open the guard is content and the load goes through.
    let with_ssh = pair.policy_file("with-ssh.toml", &only(&[SSH, 80]));
    let r = as_operator(&pair, &session, &["check", &with_ssh, "--iface", iface]);
    assert!(r.ok, "{}", r.stderr);

    // --force applies web-only; what the guard predicted happens: the
    // session lives on, a new one cannot be opened.
    let args = pair.load_args(&web_only, &["--detach", "--force"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = as_operator(&pair, &session, &args);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stdout.contains("--force: applying although"),
        "{}",
        r.stdout
    );
    assert!(session.echo(b"still here"), "established is accepted");
    assert_eq!(probe(&pair, SSH), Connect::TimedOut, "no way back in");

    // A policy that would cut the session itself: established packets go
    // to the rules and none accepts them. Forced, it does cut it.
    let cuts = pair.policy_file(
        "cuts.toml",
        "[defaults]\ninput = \"drop\"\n\n[stateful]\nestablished = \"rules\"\n\n[[input]]\nproto = \"tcp\"\ndport = 22\nstate = \"new\"\naction = \"accept\"\n",
    );
    let r = as_operator(&pair, &session, &["check", &cuts, "--iface", iface]);
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr.contains("would cut the session") && !r.stderr.contains("no way back in"),
        "{}",
        r.stderr
    );
    let args = pair.load_args(&cuts, &["--detach", "--force"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(as_operator(&pair, &session, &args).ok);
    assert!(!session.echo(b"cut?"), "the forced policy cuts the session");
    pair.unload();
}

#[test]
fn an_unconfirmed_load_is_rolled_back_and_a_confirmed_one_stays() {
    if lacks_privileges() {
        return;
    }
    let Bed {
        pair,
        _servers,
        old,
        new,
    } = bed();
    let pin = pair.pin_path();
    pair.load_file(&old);
    assert_eq!(probe(&pair, OLD), Connect::Echoed);
    let fingerprint = |status: &str| {
        status
            .lines()
            .find_map(|l| l.split("fingerprint ").nth(1))
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
            .expect("status names the policy's fingerprint")
    };
    let old_fingerprint = fingerprint(&pair.status());

    let args = pair.load_args(&new, &["--confirm", "6s", "--detach"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = fw_user_ok(&pair.server, &args);
    assert!(out.contains("fw-user confirm --pin-path"), "{out}");
    assert_eq!(
        probe(&pair, NEW),
        Connect::Echoed,
        "the new policy is in force"
    );
    // While it is on probation no other load may start.
    let r = fw_user(&pair.server, &args);
    assert!(
        !r.ok && r.stderr.contains("awaits confirmation"),
        "{}",
        r.stderr
    );
    eventually(
        &pair,
        OLD,
        &Connect::Echoed,
        Duration::from_secs(25),
        "rollback",
    );
    assert_eq!(
        probe(&pair, NEW),
        Connect::TimedOut,
        "the old policy is back"
    );
    let log = std::fs::read_to_string(state_dir(&pin).join("watchdog.log")).unwrap();
    assert!(log.contains("was not confirmed in time"), "{log}");
    let status = pair.status();
    assert_eq!(fingerprint(&status), old_fingerprint);
    assert!(
        status.contains("policy source: ") && status.contains("old.toml (loaded "),
        "{status}"
    );

    // Confirmed: it stays past the deadline.
    let out = fw_user_ok(&pair.server, &args);
    assert!(out.contains("watchdog"), "{out}");
    let out = fw_user_ok(&pair.server, &["confirm", "--pin-path", &pin]);
    assert!(out.contains("confirmed policy"), "{out}");
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(probe(&pair, NEW), Connect::Echoed, "confirmed: it stays");
    assert_eq!(probe(&pair, OLD), Connect::TimedOut);
    let r = fw_user(&pair.server, &["confirm", "--pin-path", &pin]);
    assert!(
        !r.ok && r.stderr.contains("no load awaits confirmation"),
        "{}",
        r.stderr
    );

    // `rollback` by hand brings back the policy before.
    let out = fw_user_ok(&pair.server, &["rollback", "--pin-path", &pin]);
    assert!(out.contains("rolled back to policy"), "{out}");
    assert_eq!(probe(&pair, OLD), Connect::Echoed);
    assert_eq!(probe(&pair, NEW), Connect::TimedOut);
    pair.unload();
}

#[test]
fn the_rollback_comes_even_when_fw_user_is_killed_right_after_applying() {
    if lacks_privileges() {
        return;
    }
    let Bed {
        pair,
        _servers,
        old,
        new,
    } = bed();
    pair.load_file(&old);

    // In the foreground, as over SSH; then the session dies with it.
    let mut extra = vec!["--confirm", "6s"];
    let backend = backend_args();
    extra.extend(backend.iter().map(String::as_str));
    let fg = pair.load_foreground_with(&new, &extra);
    let status = fg.stop(nix::sys::signal::Signal::SIGKILL);
    assert!(!status.success());
    assert_eq!(
        probe(&pair, NEW),
        Connect::Echoed,
        "applied before the kill"
    );
    eventually(
        &pair,
        OLD,
        &Connect::Echoed,
        Duration::from_secs(25),
        "rollback",
    );
    assert_eq!(probe(&pair, NEW), Connect::TimedOut);
    pair.unload();
}

#[test]
fn an_unconfirmed_first_load_rolls_back_to_no_firewall() {
    if lacks_privileges() {
        return;
    }
    let Bed {
        pair,
        _servers,
        new,
        ..
    } = bed();
    let pin = pair.pin_path();
    let args = pair.load_args(&new, &["--confirm", "8s", "--detach"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = fw_user_ok(&pair.server, &args);
    assert!(out.contains("no firewall, as before"), "{out}");
    assert_eq!(
        probe(&pair, OLD),
        Connect::TimedOut,
        "filtering; the watchdog's log:\n{}",
        std::fs::read_to_string(state_dir(&pin).join("watchdog.log")).unwrap_or_default()
    );
    eventually(
        &pair,
        OLD,
        &Connect::Echoed,
        Duration::from_secs(25),
        "unloaded",
    );
    let r = fw_user(&pair.server, &["status", "--pin-path", &pin]);
    assert!(!r.ok, "nothing is loaded after the rollback: {}", r.stdout);
}

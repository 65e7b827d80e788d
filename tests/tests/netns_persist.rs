//! Persistence across reboot: `fw-user save` stores the running policy
//! (with the set file it read at load time, not the file as it is now),
//! `fw-user install` writes the boot unit, and after an `unload` (all a
//! reboot leaves: nothing pinned) the unit's command brings the saved
//! policy back, verified by traffic. If the saved file is gone, the
//! unit's command loads the built-in safe policy instead of leaving the
//! host open, even with a `--confirm` probation left by the last boot.

use std::time::Duration;

use fw_tests::{
    fwcli::{fw_user, fw_user_ok, in_netns},
    lacks_privileges,
    netns::{Connect, EchoServer, Pair, server_addr, tcp_probe},
    packet::{CLIENT4, CLIENT6},
};

const ALLOWED: u16 = 8080;
const OTHER: u16 = 9090;
const WAIT: Duration = Duration::from_millis(1500);

#[test]
fn a_saved_policy_comes_back_through_the_boot_unit() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _a = EchoServer::start(&pair.server, ALLOWED);
    let _o = EchoServer::start(&pair.server, OTHER);
    let pin = pair.pin_path();
    let lists = pair.workdir.join("src/lists");
    std::fs::create_dir_all(&lists).unwrap();
    std::fs::write(lists.join("clients.txt"), format!("{CLIENT4}\n{CLIENT6}\n")).unwrap();
    let policy = pair.workdir.join("src/policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[defaults]\ninput = \"drop\"\n\n[sets]\nclients = {{ file = \"lists/clients.txt\" }}\n\n[[input]]\nproto = \"tcp\"\ndport = {ALLOWED}\nsrc = \"@clients\"\naction = \"accept\"\n"
        ),
    )
    .unwrap();
    pair.load_file(&policy.display().to_string());
    let probe = |port| tcp_probe(&pair.client, server_addr(false, port), WAIT);
    assert_eq!(probe(ALLOWED), Connect::Echoed);
    assert_eq!(probe(OTHER), Connect::TimedOut);
    // The set file changes after the load: `save` stores what runs.
    std::fs::write(lists.join("clients.txt"), "203.0.113.99\n").unwrap();

    let root = pair.workdir.join("root");
    let saved = root.join("etc/fw/policy.toml");
    let out = fw_user_ok(
        &pair.server,
        &[
            "save",
            "--pin-path",
            &pin,
            "--to",
            &saved.display().to_string(),
        ],
    );
    assert!(out.contains("saved the running policy"), "{out}");
    assert!(
        out.contains("--iface"),
        "the --iface of the load is pointed out: {out}"
    );
    let saved_set = std::fs::read_to_string(root.join("etc/fw/lists/clients.txt")).unwrap();
    assert!(saved_set.contains(&CLIENT4.to_string()), "{saved_set}");

    let out = fw_user_ok(
        &pair.server,
        &[
            "install",
            "--root",
            &root.display().to_string(),
            "--policy",
            "/etc/fw/policy.toml",
        ],
    );
    assert!(out.contains("not enabled"), "{out}");
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/fw.service")).unwrap();
    assert!(unit.contains("Before=network-pre.target"), "{unit}");
    assert!(
        unit.contains(
            "After=local-fs.target systemd-modules-load.service systemd-udev-settle.service"
        ),
        "{unit}"
    );
    if let Ok(o) = std::process::Command::new("systemd-analyze")
        .args([
            "verify",
            &root
                .join("etc/systemd/system/fw.service")
                .display()
                .to_string(),
        ])
        .output()
    {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.contains("fw.service:"),
            "systemd-analyze finds fault with the unit:\n{err}"
        );
    }

    // "Reboot": nothing pinned any more, everything open.
    pair.unload();
    assert_eq!(probe(OTHER), Connect::Echoed);
    // What systemd would run at boot, with the policy path inside the
    // test's root and the test's pin path.
    let out = in_netns(&pair.server)
        .args(boot_command(&root, &pin))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(probe(ALLOWED), Connect::Echoed, "the saved policy is back");
    assert_eq!(probe(OTHER), Connect::TimedOut, "and filtering");
    assert!(fw_user(&pair.server, &["status", "--pin-path", &pin]).ok);
    pair.unload();
}

/// Fail-static across versions: maps pinned by a different fw version are
/// refused, with both versions named, and never read with the wrong
/// layout; the pinned firewall keeps filtering meanwhile, and `unload`
/// still removes it.
#[test]
fn maps_of_another_fw_version_are_refused_not_misread() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _a = EchoServer::start(&pair.server, ALLOWED);
    let _o = EchoServer::start(&pair.server, OTHER);
    let pin = pair.pin_path();
    let file = pair.policy_file(
        "p.toml",
        &format!("[defaults]\ninput = \"drop\"\n\n[[input]]\nproto = \"tcp\"\ndport = {ALLOWED}\naction = \"accept\"\n"),
    );
    pair.load_file(&file);
    // What an older or newer fw would have left: another map layout.
    let config_path = std::path::Path::new(&pin)
        .join("maps")
        .join(fw_common::maps::CONFIG);
    let data = aya::maps::MapData::from_pin(&config_path).expect("pinned FW_CONFIG");
    let mut config: aya::maps::Array<_, fw_common::config::FwConfig> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("array");
    let mut c = config.get(&0, 0).expect("config");
    let other = fw_common::config::ABI_VERSION + 1;
    c.abi_version = other;
    config.set(0, c, 0).expect("write FW_CONFIG");

    let expect = format!(
        "different fw version (map layout {other}, this fw-user uses {})",
        fw_common::config::ABI_VERSION
    );
    let r = fw_user(
        &pair.server,
        &[
            "load",
            &file,
            "--iface",
            &pair.server_if,
            "--pin-path",
            &pin,
            "--detach",
            "--backend",
            "xdp",
        ],
    );
    assert!(!r.ok && r.stderr.contains(&expect), "{}", r.stderr);
    let r = fw_user(&pair.server, &["status", "--pin-path", &pin]);
    assert!(!r.ok && r.stderr.contains(&expect), "{}", r.stderr);
    let probe = |port| tcp_probe(&pair.client, server_addr(false, port), WAIT);
    assert_eq!(probe(ALLOWED), Connect::Echoed, "still filtering");
    assert_eq!(probe(OTHER), Connect::TimedOut, "still filtering");
    pair.unload();
    assert_eq!(
        probe(OTHER),
        Connect::Echoed,
        "unload works across versions"
    );
}

/// The unit's `ExecStart=` words, with the policy path moved under `root`
/// and the test's pin path appended: what systemd would run at boot.
fn boot_command(root: &std::path::Path, pin: &str) -> Vec<String> {
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/fw.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words: Vec<String> = exec
        .split_whitespace()
        .skip(1)
        .map(|w| match w.strip_prefix('/') {
            Some(rel) if rel.starts_with("etc/fw/") => root.join(rel).display().to_string(),
            _ => w.to_string(),
        })
        .collect();
    words.extend(["--pin-path".to_string(), pin.to_string()]);
    words
}

/// A saved policy lost before boot (removed, or a broken edit) must not
/// leave the host open: the built-in safe policy runs (SSH in, the rest
/// dropped) and the unit fails, saying why. A `--confirm` probation the
/// last boot left behind does not block it.
#[test]
fn a_missing_saved_policy_boots_the_built_in_one() {
    if lacks_privileges() {
        return;
    }
    let pair = Pair::new();
    let _ssh = EchoServer::start(&pair.server, 22);
    let _o = EchoServer::start(&pair.server, OTHER);
    let pin = pair.pin_path();
    let root = pair.workdir.join("root");
    let saved = root.join("etc/fw/policy.toml");
    std::fs::create_dir_all(saved.parent().unwrap()).unwrap();
    std::fs::write(
        &saved,
        format!("[[input]]\nproto = \"tcp\"\ndport = {OTHER}\naction = \"accept\"\n"),
    )
    .unwrap();
    fw_user_ok(
        &pair.server,
        &[
            "install",
            "--root",
            &root.display().to_string(),
            "--policy",
            "/etc/fw/policy.toml",
        ],
    );
    std::fs::remove_file(&saved).unwrap();
    // The last boot ended during `load --confirm`: its record stayed, its
    // watchdog (no such process now) did not.
    let state = fw_tests::fwcli::state_dir(&pin);
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("pending.json"),
        r#"{"token":1,"deadline_ms":1,"watchdog_pid":2147483646,"policy_name":"old.toml","unload":true}"#,
    )
    .unwrap();

    let out = in_netns(&pair.server)
        .args(boot_command(&root, &pin))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the unit must show failed: {stdout}");
    assert!(stdout.contains("left by an earlier boot"), "{stdout}");
    assert!(
        stderr.contains("cannot read policy")
            && stderr.contains("built-in safe policy runs instead"),
        "{stderr}"
    );
    let probe = |port| tcp_probe(&pair.client, server_addr(false, port), WAIT);
    assert_eq!(probe(22), Connect::Echoed, "SSH stays reachable");
    assert_eq!(probe(OTHER), Connect::TimedOut, "the rest is dropped");
    pair.unload();
}

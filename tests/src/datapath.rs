//! The kernel programs under `BPF_PROG_TEST_RUN`, with private maps: each
//! `Datapath` is an independent firewall, so tests run side by side.

use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use fw_common::{
    Direction,
    conntrack::{CtEntry, CtKey},
    counters::Counter,
    maps,
};
use fw_user::{
    backend::{EBPF_OBJECT, maps::FwMaps},
    policy,
};

/// Interface names verdict-test policies may use: `testdev` is the device
/// `BPF_PROG_TEST_RUN` presents packets on (ifindex 1), `ifN` is ifindex N.
#[must_use]
pub fn test_ifindex(name: &str) -> Option<u32> {
    match name {
        "testdev" => Some(1),
        _ => name.strip_prefix("if").and_then(|n| n.parse().ok()),
    }
}

/// XDP and TC return codes, named.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

pub struct Datapath {
    ebpf: Ebpf,
    pub maps: FwMaps,
    /// Packets are run from inside this namespace, where the test server's
    /// addresses are local: the datapath asks the routing table whether a
    /// packet is for this host, so the answer must not depend on the host
    /// running the tests.
    pub ns: crate::netns::Netns,
}

/// What the datapath did with one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub pass: bool,
    /// The counter that moved: the reason for the verdict.
    pub counter: Counter,
    /// The frame sent back out of the interface (a REJECT reply).
    pub reply: Option<Vec<u8>>,
}

impl Datapath {
    /// Load both programs with fresh maps and install `policy_toml`.
    #[must_use]
    pub fn with_policy(policy_toml: &str) -> Self {
        let mut ebpf = EbpfLoader::new()
            .load(EBPF_OBJECT)
            .expect("load kernel object");
        fw_user::backend::xdp::load_programs(&mut ebpf).unwrap_or_else(|e| panic!("{e}"));
        let mut maps = FwMaps::take_from(&mut ebpf).expect("maps");
        fw_user::backend::xdp::fill_jump_table(&mut ebpf, &mut maps).expect("fill FW_JUMP");
        let ns = crate::netns::Netns::new("fwt-dp-");
        ns.ip(&[
            "link", "add", "host0", "type", "veth", "peer", "name", "peer0",
        ]);
        ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "host0"]);
        ns.ip(&["addr", "add", "2001:db8::1/64", "dev", "host0", "nodad"]);
        ns.ip(&["link", "set", "host0", "up"]);
        ns.ip(&["link", "set", "peer0", "up"]);
        // setns moves only the calling thread: the test's own.
        let fd = std::fs::File::open(format!("/run/netns/{}", ns.name)).expect("open netns");
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("enter the datapath namespace");
        let mut dp = Self { ebpf, maps, ns };
        dp.install(policy_toml);
        dp
    }

    /// Replace the policy (the reload path of `fw-user load`).
    pub fn install(&mut self, policy_toml: &str) {
        let p = policy::parse(policy_toml, "test-policy.toml").unwrap_or_else(|e| panic!("{e}"));
        let compiled = policy::compile(&p, "test-policy.toml", &test_ifindex)
            .unwrap_or_else(|e| panic!("{e}"));
        self.maps.install(&compiled).expect("install policy");
    }

    /// Move the datapath clock forward by `secs` (timeouts).
    pub fn advance_clock(&mut self, secs: u64) {
        let cfg = self.maps.config().unwrap();
        self.maps
            .set_clock_offset(cfg.clock_offset_ns + secs * 1_000_000_000)
            .unwrap();
    }

    fn snapshot(&self) -> Vec<(Direction, Counter, u64)> {
        self.maps
            .counters()
            .unwrap()
            .into_iter()
            .map(|(d, c, v)| (d, c, v.packets))
            .collect()
    }

    /// Run one frame through the XDP (ingress) or TC (egress) program.
    pub fn run(&mut self, dir: Direction, frame: &[u8]) -> Outcome {
        let before = self.snapshot();
        let mut out = vec![0u8; frame.len() + 512];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        };
        let result = match dir {
            Direction::Ingress => {
                let xdp: &mut Xdp = self
                    .ebpf
                    .program_mut(maps::PROG_INGRESS)
                    .unwrap()
                    .try_into()
                    .unwrap();
                xdp.test_run(opts).expect("BPF_PROG_TEST_RUN (xdp)")
            }
            Direction::Egress => {
                let tc: &mut SchedClassifier = self
                    .ebpf
                    .program_mut(maps::PROG_EGRESS)
                    .unwrap()
                    .try_into()
                    .unwrap();
                tc.test_run(opts).expect("BPF_PROG_TEST_RUN (tc)")
            }
        };
        let ret = result.return_value;
        let after = self.snapshot();
        let moved: Vec<Counter> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| a.2 != b.2)
            .map(|(_, a)| {
                assert_eq!(a.0, dir, "a counter of the other direction moved");
                a.1
            })
            .collect();
        assert_eq!(
            moved.len(),
            1,
            "exactly one counter must count each packet, got {moved:?}"
        );
        let pass = match (dir, ret) {
            (Direction::Ingress, XDP_PASS) | (Direction::Egress, TC_ACT_OK) => true,
            (Direction::Ingress, XDP_DROP | XDP_TX)
            | (Direction::Egress, TC_ACT_SHOT | TC_ACT_REDIRECT) => false,
            (d, r) => panic!("unexpected return code {r} from the {d:?} program"),
        };
        let replied = match dir {
            Direction::Ingress => ret == XDP_TX,
            Direction::Egress => ret == TC_ACT_REDIRECT,
        };
        let reply = replied.then(|| out[..result.data_size_out as usize].to_vec());
        let outcome = Outcome {
            pass,
            counter: moved[0],
            reply,
        };
        assert_eq!(
            pass,
            !outcome.counter.is_drop(),
            "verdict and counter disagree: {outcome:?}"
        );
        outcome
    }

    pub fn ingress(&mut self, frame: &[u8]) -> Outcome {
        self.run(Direction::Ingress, frame)
    }

    pub fn egress(&mut self, frame: &[u8]) -> Outcome {
        self.run(Direction::Egress, frame)
    }

    #[must_use]
    pub fn conntrack(&self) -> Vec<(CtKey, CtEntry)> {
        self.maps.conntrack_entries().unwrap()
    }
}

/// Assert a table of `(name, frame, expected counter)` rows in one direction,
/// reporting every mismatching row at once.
pub fn assert_table(dp: &mut Datapath, dir: Direction, rows: &[(&str, Vec<u8>, Counter)]) {
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|(name, frame, want)| {
            let got = dp.run(dir, frame);
            (got.counter != *want)
                .then(|| format!("  {name}: expected {want:?}, got {:?}", got.counter))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "verdict table mismatches ({dir:?}):\n{}",
        failures.join("\n")
    );
}

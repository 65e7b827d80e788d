//! The kernel programs under `BPF_PROG_TEST_RUN`, with private maps: each
//! `Datapath` is an independent firewall, so tests run side by side.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::AsFd as _,
};

use crate::packet::{Segment, Side, TcpConversation};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, IterableMap as _, Map, MapData, RingBuf},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use fw_common::{
    Direction,
    conntrack::{CtEntry, CtKey, FragEntry, FragKey},
    counters::{Counter, CounterValue},
    events::{Event, LogStat, default_stats_id},
    family, maps,
    policy::{Chain, rule_index},
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
    /// Handles of our own on the connection and fragment tables, opened
    /// from the object before `FwMaps` takes its maps: the tests read both
    /// tables whatever `FwMaps` does with them.
    tables: Tables,
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
        Self::build(policy_toml, None)
    }

    /// Like `with_policy`, with each connection table (`FW_CONNTRACK`,
    /// `FW_CT_TRANSIENT`) sized to `entries`, as the loader sizes them from
    /// `[conntrack] max_entries` before creating them.
    #[must_use]
    pub fn with_table_size(policy_toml: &str, entries: u32) -> Self {
        Self::build(policy_toml, Some(entries))
    }

    fn build(policy_toml: &str, table_size: Option<u32>) -> Self {
        let mut loader = EbpfLoader::new();
        if let Some(n) = table_size {
            loader
                .map_max_entries(maps::CONNTRACK, n)
                .map_max_entries(maps::CT_TRANSIENT, n);
        }
        let mut ebpf = loader.load(EBPF_OBJECT).expect("load kernel object");
        fw_user::backend::xdp::load_programs(&mut ebpf).unwrap_or_else(|e| panic!("{e}"));
        let tables = Tables {
            main: own_handle(&ebpf, maps::CONNTRACK),
            transient: own_handle(&ebpf, maps::CT_TRANSIENT),
            frags: own_handle(&ebpf, maps::FRAGS),
        };
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
        let mut dp = Self {
            ebpf,
            maps,
            tables,
            ns,
        };
        dp.install(policy_toml);
        dp
    }

    /// Replace the policy (the reload path of `fw-user load`): install,
    /// then drop the counters of rules the new policy no longer has, as
    /// `backend::xdp` does once the new generation is in force.
    pub fn install(&mut self, policy_toml: &str) {
        let p = policy::parse(policy_toml, "test-policy.toml").unwrap_or_else(|e| panic!("{e}"));
        let compiled = policy::compile(&p, "test-policy.toml", &test_ifindex)
            .unwrap_or_else(|e| panic!("{e}"));
        self.maps.install(&compiled).expect("install policy");
        self.maps
            .prune_rule_stats(&compiled)
            .expect("prune FW_RULE_STATS");
    }

    /// Install the policy file at `path` as `fw-user load` reads it (set
    /// files resolved beside it). A policy the compiler refuses is returned
    /// as its message, not a panic: the bench records it and goes on.
    ///
    /// # Errors
    /// The policy does not parse or compile.
    pub fn install_file(&mut self, path: &std::path::Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let p = policy::parse_file(&text, path).map_err(|e| e.to_string())?;
        let file = path.display().to_string();
        let compiled = policy::compile(&p, &file, &test_ifindex).map_err(|e| e.to_string())?;
        self.maps.install(&compiled).map_err(|e| e.to_string())?;
        self.maps
            .prune_rule_stats(&compiled)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// The XDP ingress program, for callers that drive `BPF_PROG_TEST_RUN`
    /// themselves (the bench: `repeat`, no counter snapshots).
    #[must_use]
    pub fn ingress_program(&self) -> &Xdp {
        self.ebpf
            .program(maps::PROG_INGRESS)
            .expect("the ingress program")
            .try_into()
            .expect("an XDP program")
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

    /// `conv.send(from, flags, len)` through the program of `from`'s
    /// direction: the next segment of the conversation.
    pub fn send_tcp(
        &mut self,
        conv: &mut TcpConversation,
        from: Side,
        flags: u8,
        len: usize,
    ) -> Counter {
        let frame = conv.send(from, flags, len);
        self.run(from.direction(), &frame).counter
    }

    /// Any segment from `from` in `conv`, the conversation unchanged.
    pub fn probe_tcp(&mut self, conv: &TcpConversation, from: Side, seg: &Segment) -> Counter {
        let frame = conv.segment(from, seg);
        self.run(from.direction(), &frame).counter
    }

    /// The datapath's clock now (what `expires_ns` is measured against).
    #[must_use]
    pub fn now_ns(&self) -> u64 {
        fw_user::backend::maps::monotonic_now_ns() + self.maps.config().unwrap().clock_offset_ns
    }

    /// Every tracked flow, both tables.
    #[must_use]
    pub fn conntrack(&self) -> Vec<Flow> {
        let (mut main, transient) = self.conntrack_tables();
        main.extend(transient);
        main
    }

    /// `(FW_CONNTRACK, FW_CT_TRANSIENT)`: established flows, and flows
    /// being opened or closed. A table the kernel object does not have
    /// (yet) reads as empty.
    #[must_use]
    pub fn conntrack_tables(&self) -> (Vec<Flow>, Vec<Flow>) {
        (
            entries(self.tables.main.as_ref()),
            entries(self.tables.transient.as_ref()),
        )
    }

    /// The table and entry of the flow keyed `key`, if tracked. Panics if
    /// both tables hold it: a flow lives in exactly one.
    #[must_use]
    pub fn flow(&self, key: &CtKey) -> Option<(CtTable, CtEntry)> {
        let get = |t: Option<&HashMap<MapData, CtKey, CtEntry>>| t.and_then(|m| m.get(key, 0).ok());
        match (
            get(self.tables.main.as_ref()),
            get(self.tables.transient.as_ref()),
        ) {
            (Some(m), None) => Some((CtTable::Established, m)),
            (None, Some(t)) => Some((CtTable::Transient, t)),
            (None, None) => None,
            (Some(m), Some(t)) => panic!("flow in both tables: {m:?} and {t:?}"),
        }
    }

    /// The one tracked flow, with its table; panics unless there is
    /// exactly one.
    #[must_use]
    pub fn only_flow(&self) -> (CtTable, CtKey, CtEntry) {
        let (main, transient) = self.conntrack_tables();
        match (main.as_slice(), transient.as_slice()) {
            ([(k, e)], []) => (CtTable::Established, *k, *e),
            ([], [(k, e)]) => (CtTable::Transient, *k, *e),
            _ => panic!("expected one tracked flow, got {main:?} and {transient:?}"),
        }
    }

    /// Put an entry in `FW_CONNTRACK` directly, as the loader does when it
    /// adopts connections that were open before it ran.
    pub fn insert_established(&mut self, key: &CtKey, entry: &CtEntry) {
        self.tables
            .main
            .as_mut()
            .expect("FW_CONNTRACK")
            .insert(key, entry, 0)
            .expect("insert into FW_CONNTRACK");
    }

    /// Every event waiting in `FW_EVENTS`, oldest first, removed from the
    /// ring: each call sees only what the packets since the last one
    /// logged. Read through the object's own map (`FwMaps` does not take
    /// the ring), so what the tests see is what a reader would.
    pub fn events(&mut self) -> Vec<Event> {
        let map = self.ebpf.map_mut(maps::EVENTS).expect("FW_EVENTS");
        let mut ring = RingBuf::try_from(map).expect("FW_EVENTS is a ring buffer");
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            // A record of another size means kernel and test disagree on
            // the layout: fail rather than misread it.
            assert_eq!(
                item.len(),
                size_of::<Event>(),
                "an FW_EVENTS record is not an `Event`"
            );
            // SAFETY: `item` holds `size_of::<Event>()` bytes (checked
            // above); the ring only aligns records to 8 bytes, so read
            // unaligned. `Event` is plain data: every bit pattern is valid.
            out.push(unsafe { item.as_ptr().cast::<Event>().read_unaligned() });
        }
        out
    }

    /// `FW_RULES` identities (`RuleMeta::id`) of `chain`'s rules in the
    /// generation in force, in rule order: the keys of `FW_RULE_STATS`.
    #[must_use]
    pub fn rule_ids(&self, chain: Chain) -> Vec<u64> {
        let generation = self.maps.config().expect("FW_CONFIG").active_gen;
        let header = self
            .maps
            .policy
            .get(&generation, 0)
            .expect("FW_POLICY of the active generation");
        let count = header.chains[chain as usize].rule_count;
        let base = header.chains[chain as usize].rule_base;
        (0..u32::from(count))
            .map(|i| {
                self.maps
                    .rules
                    .get(&rule_index(generation, base, i), 0)
                    .expect("FW_RULES entry of a rule")
                    .id
            })
            .collect()
    }

    /// `(packets, bytes)` of each rule of `chain` in the policy in force,
    /// in rule order, summed over CPUs. Panics if a rule has no
    /// `FW_RULE_STATS` entry: the loader creates them all before the
    /// switch, so a missing one is a bug, not a zero.
    #[must_use]
    pub fn rule_counts(&self, chain: Chain) -> Vec<(u64, u64)> {
        let stats = self.rule_stats();
        self.rule_ids(chain)
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                let v = stats.get(&id).unwrap_or_else(|| {
                    panic!("rule {} of {chain:?} (id {id:#x}) has no counters", i + 1)
                });
                (v.packets, v.bytes)
            })
            .collect()
    }

    /// `(packets, bytes)` of `chain`'s default policy.
    #[must_use]
    pub fn default_count(&self, chain: Chain) -> (u64, u64) {
        let v = self
            .rule_stats()
            .get(&default_stats_id(chain))
            .copied()
            .unwrap_or_else(|| panic!("the {chain:?} default has no counters"));
        (v.packets, v.bytes)
    }

    /// Every `FW_RULE_STATS` entry, by identity.
    #[must_use]
    pub fn rule_stats(&self) -> std::collections::HashMap<u64, CounterValue> {
        self.maps.rule_stats().expect("read FW_RULE_STATS")
    }

    /// `(emitted, suppressed, lost)` events since the datapath was loaded.
    #[must_use]
    pub fn log_stats(&self) -> (u64, u64, u64) {
        let stats = self.maps.log_stats().expect("read FW_LOG_STATS");
        let get = |want: LogStat| {
            stats
                .iter()
                .find(|(s, _)| *s == want)
                .map_or(0, |(_, n)| *n)
        };
        (
            get(LogStat::Emitted),
            get(LogStat::Suppressed),
            get(LogStat::Lost),
        )
    }

    /// Datagrams whose first fragment was accepted (`FW_FRAGS`).
    #[must_use]
    pub fn frags(&self) -> Vec<(FragKey, FragEntry)> {
        self.tables
            .frags
            .as_ref()
            .map(|m| m.iter().filter_map(Result::ok).collect())
            .unwrap_or_default()
    }
}

/// One connection-table entry with its key.
pub type Flow = (CtKey, CtEntry);

/// Which connection table an entry lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtTable {
    /// `FW_CONNTRACK`: ESTABLISHED TCP, replied UDP and ICMP; never evicts.
    Established,
    /// `FW_CT_TRANSIENT`: every other state; LRU.
    Transient,
}

struct Tables {
    main: Option<HashMap<MapData, CtKey, CtEntry>>,
    transient: Option<HashMap<MapData, CtKey, CtEntry>>,
    frags: Option<HashMap<MapData, FragKey, FragEntry>>,
}

/// A handle of our own on the hash map `name` of a loaded object (a
/// duplicate of its descriptor), or `None` if the object has no such map.
fn own_handle<K: aya::Pod, V: aya::Pod>(ebpf: &Ebpf, name: &str) -> Option<HashMap<MapData, K, V>> {
    let borrowed: HashMap<&MapData, K, V> = HashMap::try_from(ebpf.map(name)?)
        .unwrap_or_else(|e| panic!("map `{name}` is not the hash map the tests expect: {e}"));
    let fd = borrowed
        .map()
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .expect("dup map fd");
    let data = MapData::from_fd(fd).expect("map from fd");
    Some(HashMap::try_from(Map::from_map_data(data).expect("map")).expect("hash map"))
}

fn entries(map: Option<&HashMap<MapData, CtKey, CtEntry>>) -> Vec<Flow> {
    // An entry removed while we walk the table is skipped.
    map.map(|m| m.iter().filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// The connection-table key of a flow between `local` (the guarded host)
/// and `remote`, as the datapath builds it. For ICMP echo both ports are
/// the echo identifier.
#[must_use]
pub fn ct_key(local: SocketAddr, remote: SocketAddr, proto: u8) -> CtKey {
    CtKey {
        local: addr_words(local.ip()),
        remote: addr_words(remote.ip()),
        local_port: local.port(),
        remote_port: remote.port(),
        proto,
        family: if local.is_ipv6() {
            family::IPV6
        } else {
            family::IPV4
        },
        _pad: [0; 2],
    }
}

/// An address as the datapath stores it in keys and events: network byte
/// order, IPv4 in the first word and the rest zero.
#[must_use]
pub fn addr_words(ip: IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(a) => [u32::from_ne_bytes(a.octets()), 0, 0, 0],
        IpAddr::V6(a) => {
            let o = a.octets();
            std::array::from_fn(|i| {
                u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
            })
        }
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

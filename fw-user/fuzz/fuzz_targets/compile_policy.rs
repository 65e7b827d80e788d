//! Policies that parse, compiled into the datapath's tables: never a
//! panic; an error names a line; a compiled policy holds every rule, and
//! every class the tables name exists. Then, field by field, the compiled
//! tables must agree with what each rule says: a packet value the rule
//! lists finds the rule's bit in that field's class, a value outside it
//! does not.
//!
//! Input as `parse_policy`'s. Interfaces `eth0`, `eth1` and `wan0` exist;
//! others do not.
#![no_main]

use fw_common::policy::{Chain, MAX_CLASSES, MAX_RULES, MAX_WORDS, PacketState, table};
use fw_fuzz::{Input, POLICY_NAME, check_error};
use fw_user::policy::{AddrMatch, CompiledPolicy, PortRange, Rule, compile};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

fn ifindex(name: &str) -> Option<u32> {
    match name {
        "eth0" => Some(2),
        "eth1" => Some(3),
        "wan0" => Some(7),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    let Ok(policy) = input.parse() else {
        return;
    };
    let compiled = match compile(&policy, POLICY_NAME, &ifindex) {
        Ok(c) => c,
        Err(e) => {
            check_error(&e, input.policy);
            return;
        }
    };
    let mut rule_base = 0;
    for chain in Chain::ALL {
        let rules = policy.rules(chain);
        let header = &compiled.header.chains[chain as usize];
        let tables = &compiled.chains[chain as usize];
        assert_eq!(usize::from(header.rule_count), rules.len());
        assert_eq!(header.rule_base, rule_base);
        rule_base += header.rule_count;
        assert_eq!(tables.rules.len(), rules.len());
        assert_eq!(tables.infos.len(), rules.len());
        assert_eq!(tables.table.len(), table::SLOTS as usize);
        for (info, rule) in tables.infos.iter().zip(rules) {
            assert_eq!(info.line as usize, rule.line);
        }
        let classes = tables
            .table
            .iter()
            .chain(tables.src.iter().map(|e| &e.class))
            .chain(tables.dst.iter().map(|e| &e.class))
            .chain(tables.ifaces.iter().map(|(_, c)| c))
            .chain([&header.iface_default_class]);
        for &class in classes {
            assert!(usize::from(class) < compiled.classes.len(), "class {class}");
        }
        for (i, rule) in rules.iter().enumerate() {
            check_rule(&compiled, chain, i, rule);
        }
    }
    assert!(usize::from(rule_base) <= MAX_RULES);
    assert!(compiled.classes.len() <= MAX_CLASSES as usize);
    assert!(compiled.words.len() <= MAX_WORDS as usize);
    assert_eq!(compiled.header.policy_hash, policy.hash);
});

/// Rule `i` of `chain` against the tables, one field at a time.
fn check_rule(c: &CompiledPolicy, chain: Chain, i: usize, rule: &Rule) {
    // Decoding a class is 256 words: once per class, not per slot.
    let decoded = std::cell::RefCell::new(std::collections::HashMap::new());
    let has = |slot: u32| {
        let class = c.table_class(chain, slot);
        *decoded
            .borrow_mut()
            .entry(class)
            .or_insert_with(|| c.class_bitmap(class).has(i))
    };
    check_ports(&has, table::SPORT, &rule.sport, rule);
    check_ports(&has, table::DPORT, &rule.dport, rule);
    for p in [0, 1, 6, 17, 58, 255].into_iter().chain(rule.proto) {
        let want = rule.proto.is_none_or(|x| x == p);
        assert_eq!(has(table::PROTO + u32::from(p)), want, "proto {p}: {rule}");
    }
    for f in 0..=255u8 {
        let want = rule.tcp_flags.is_none_or(|m| f & m.mask == m.comp);
        assert_eq!(
            has(table::TCP_FLAGS + u32::from(f)),
            want,
            "flags {f:#x}: {rule}"
        );
    }
    for s in [
        PacketState::New,
        PacketState::Established,
        PacketState::Related,
        PacketState::Invalid,
    ] {
        let want = rule.state.is_empty() || rule.state.contains(&s);
        assert_eq!(has(table::STATE + s as u32), want, "state {s:?}: {rule}");
    }
    for t in rule.icmp_type.iter().copied().chain([0, 8, 128]) {
        let listed = rule.icmp_type.is_empty() || rule.icmp_type.contains(&t);
        let v4 = listed && (rule.icmp_type.is_empty() || rule.proto == Some(1));
        let v6 = listed && (rule.icmp_type.is_empty() || rule.proto == Some(58));
        assert_eq!(
            has(table::ICMP4_TYPE + u32::from(t)),
            v4,
            "icmp {t}: {rule}"
        );
        assert_eq!(
            has(table::ICMP6_TYPE + u32::from(t)),
            v6,
            "icmpv6 {t}: {rule}"
        );
    }
    let tables = &c.chains[chain as usize];
    check_addresses(c, &tables.src, i, rule, rule.src.as_ref());
    check_addresses(c, &tables.dst, i, rule, rule.dst.as_ref());
    let default_class = c.header.chains[chain as usize].iface_default_class;
    assert_eq!(c.class_bitmap(default_class).has(i), rule.iface.is_empty());
    for name in &rule.iface {
        let index = ifindex(name).expect("compile refuses unknown interfaces");
        let (_, class) = tables
            .ifaces
            .iter()
            .find(|(x, _)| *x == index)
            .expect("every named interface has an entry");
        assert!(c.class_bitmap(*class).has(i), "iface {name}: {rule}");
    }
}

/// Both ends of every listed range match, the ports just outside them do
/// not unless another range lists them; no list matches every port.
fn check_ports(has: &dyn Fn(u32) -> bool, base: u32, ranges: &[PortRange], rule: &Rule) {
    let listed = |p: u32| {
        ranges.is_empty()
            || ranges
                .iter()
                .any(|r| u32::from(r.first) <= p && p <= u32::from(r.last))
    };
    let mut probes = vec![0, 65_535];
    for r in ranges {
        let (first, last) = (u32::from(r.first), u32::from(r.last));
        probes.extend([first, last, first.saturating_sub(1), (last + 1).min(65_535)]);
    }
    for p in probes {
        assert_eq!(has(base + p), listed(p), "port {p}: {rule}");
    }
}

/// The class of an address is that of its longest listed prefix; the
/// network address of every prefix a rule lists must give the rule's bit
/// exactly when the rule's family allows it and the match is not negated.
fn check_addresses(
    c: &CompiledPolicy,
    entries: &[fw_user::policy::AddrEntry],
    i: usize,
    rule: &Rule,
    m: Option<&AddrMatch>,
) {
    for v6 in [false, true] {
        let family = if v6 {
            fw_common::family::IPV6
        } else {
            fw_common::family::IPV4
        };
        assert!(
            entries
                .iter()
                .any(|e| e.family == family && e.prefix_len == 0),
            "no root entry"
        );
    }
    let Some(m) = m else { return };
    for net in &m.nets {
        let (family, allowed) = match net {
            IpNet::V4(_) => (fw_common::family::IPV4, rule.families.ipv4),
            IpNet::V6(_) => (fw_common::family::IPV6, rule.families.ipv6),
        };
        let addr = net.network();
        let longest = entries
            .iter()
            .filter(|e| e.family == family && entry_net(e).contains(&addr))
            .max_by_key(|e| e.prefix_len)
            .expect("the root entry holds every address");
        let want = allowed && !m.negated;
        assert_eq!(
            c.class_bitmap(longest.class).has(i),
            want,
            "address {addr}: {rule}"
        );
    }
}

fn entry_net(e: &fw_user::policy::AddrEntry) -> IpNet {
    let addr: std::net::IpAddr = if e.family == fw_common::family::IPV4 {
        <[u8; 4]>::try_from(&e.addr[..4])
            .expect("four bytes")
            .into()
    } else {
        e.addr.into()
    };
    IpNet::new(addr, e.prefix_len).expect("a valid prefix length")
}

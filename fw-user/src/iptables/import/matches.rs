//! The match model rules are flattened in: a conjunction of conditions
//! that can be intersected (a jump's matches added to the rules of the
//! chain it jumps to) and subtracted from (what a RETURN took away from the
//! rules after it). Sets of small values (ICMP types, TCP flag bytes) are
//! 256-bit sets, so negation and intersection are exact.

use std::net::IpAddr;

use ipnet::IpNet;

/// A set of byte values.
pub(super) type Bits = [u64; 4];

pub(super) const ALL: Bits = [u64::MAX; 4];

pub(super) fn bits_where(pred: impl Fn(u8) -> bool) -> Bits {
    let mut b = [0u64; 4];
    for v in 0..=255u8 {
        if pred(v) {
            b[usize::from(v / 64)] |= 1 << (v % 64);
        }
    }
    b
}

pub(super) fn bits_has(b: &Bits, v: u8) -> bool {
    b[usize::from(v / 64)] & (1 << (v % 64)) != 0
}

pub(super) fn bits_and(a: &Bits, b: &Bits) -> Bits {
    [a[0] & b[0], a[1] & b[1], a[2] & b[2], a[3] & b[3]]
}

pub(super) fn bits_or(a: &Bits, b: &Bits) -> Bits {
    [a[0] | b[0], a[1] | b[1], a[2] | b[2], a[3] | b[3]]
}

pub(super) fn bits_not(a: &Bits) -> Bits {
    [!a[0], !a[1], !a[2], !a[3]]
}

pub(super) fn bits_empty(a: &Bits) -> bool {
    a.iter().all(|w| *w == 0)
}

/// `a ⊆ b`
pub(super) fn bits_subset(a: &Bits, b: &Bits) -> bool {
    bits_empty(&bits_and(a, &bits_not(b)))
}

pub(super) fn bits_members(a: &Bits) -> impl Iterator<Item = u8> + '_ {
    (0..=255u8).filter(|v| bits_has(a, *v))
}

/// Connection states, as a bit set.
pub(super) const NEW: u8 = 1;
pub(super) const ESTABLISHED: u8 = 2;
pub(super) const RELATED: u8 = 4;
pub(super) const INVALID: u8 = 8;
pub(super) const ALL_STATES: u8 = 15;

/// A source or destination condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Addr {
    Any,
    /// In one of these networks.
    In(Vec<IpNet>),
    /// In none of these networks.
    NotIn(Vec<IpNet>),
}

/// Inclusive port ranges, sorted, merged, never empty and never every port.
pub(super) type Ports = Vec<(u16, u16)>;

/// iptables' `-m limit`: `count` per `unit_secs`, with a burst. `origin`
/// is the line of the rule it was written in: fw's limit belongs to one
/// rule, iptables' to one rule of the ruleset, so two fw rules carrying the
/// limit of one line are not the same thing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RateLimit {
    pub count: u32,
    pub unit: &'static str,
    pub burst: u32,
    pub origin: usize,
}

/// A conjunction of conditions; a field left `None`/`Any` matches
/// everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Match {
    pub proto: Option<u8>,
    pub src: Addr,
    pub dst: Addr,
    pub sport: Option<Ports>,
    pub dport: Option<Ports>,
    pub in_if: Option<String>,
    pub out_if: Option<String>,
    /// Never empty, never all.
    pub icmp_type: Option<Bits>,
    /// Never 0.
    pub state: Option<u8>,
    /// The TCP flag bytes matched; never empty, never all.
    pub tcp_flags: Option<Bits>,
    pub limit: Option<RateLimit>,
}

impl Match {
    pub const ANY: Self = Self {
        proto: None,
        src: Addr::Any,
        dst: Addr::Any,
        sport: None,
        dport: None,
        in_if: None,
        out_if: None,
        icmp_type: None,
        state: None,
        tcp_flags: None,
        limit: None,
    };

    /// The conditions one by one, each as a match of its own.
    fn atoms(&self) -> Vec<Self> {
        let mut v = Vec::new();
        if self.proto.is_some() {
            v.push(Self {
                proto: self.proto,
                ..Self::ANY
            });
        }
        if self.src != Addr::Any {
            v.push(Self {
                src: self.src.clone(),
                ..Self::ANY
            });
        }
        if self.dst != Addr::Any {
            v.push(Self {
                dst: self.dst.clone(),
                ..Self::ANY
            });
        }
        if self.sport.is_some() {
            v.push(Self {
                sport: self.sport.clone(),
                ..Self::ANY
            });
        }
        if self.dport.is_some() {
            v.push(Self {
                dport: self.dport.clone(),
                ..Self::ANY
            });
        }
        if self.in_if.is_some() {
            v.push(Self {
                in_if: self.in_if.clone(),
                ..Self::ANY
            });
        }
        if self.out_if.is_some() {
            v.push(Self {
                out_if: self.out_if.clone(),
                ..Self::ANY
            });
        }
        if self.icmp_type.is_some() {
            v.push(Self {
                icmp_type: self.icmp_type,
                ..Self::ANY
            });
        }
        if self.state.is_some() {
            v.push(Self {
                state: self.state,
                ..Self::ANY
            });
        }
        if self.tcp_flags.is_some() {
            v.push(Self {
                tcp_flags: self.tcp_flags,
                ..Self::ANY
            });
        }
        if self.limit.is_some() {
            v.push(Self {
                limit: self.limit,
                ..Self::ANY
            });
        }
        v
    }
}

/// At most this many prefixes come out of subtracting networks: beyond,
/// the policy would be unreadable.
const MAX_NETS: usize = 256;

/// `a ∧ b`: `Ok(None)` if nothing can match both, `Err` if fw cannot
/// write the conjunction.
pub(super) fn conj(a: &Match, b: &Match) -> Result<Option<Match>, String> {
    let proto = match (a.proto, b.proto) {
        (None, p) | (p, None) => p,
        (Some(p), Some(q)) if p == q => Some(p),
        _ => return Ok(None),
    };
    let Some(src) = addr_and(&a.src, &b.src)? else {
        return Ok(None);
    };
    let Some(dst) = addr_and(&a.dst, &b.dst)? else {
        return Ok(None);
    };
    let Some(sport) = opt_and(a.sport.as_ref(), b.sport.as_ref(), ports_and) else {
        return Ok(None);
    };
    let Some(dport) = opt_and(a.dport.as_ref(), b.dport.as_ref(), ports_and) else {
        return Ok(None);
    };
    let Some(in_if) = opt_and(a.in_if.as_ref(), b.in_if.as_ref(), |x, y| {
        (x == y).then(|| x.clone())
    }) else {
        return Ok(None);
    };
    let Some(out_if) = opt_and(a.out_if.as_ref(), b.out_if.as_ref(), |x, y| {
        (x == y).then(|| x.clone())
    }) else {
        return Ok(None);
    };
    let Some(icmp_type) = opt_and(a.icmp_type.as_ref(), b.icmp_type.as_ref(), nonempty_and) else {
        return Ok(None);
    };
    let Some(state) = opt_and(a.state.as_ref(), b.state.as_ref(), |x, y| {
        Some(x & y).filter(|s| *s != 0)
    }) else {
        return Ok(None);
    };
    let Some(tcp_flags) = opt_and(a.tcp_flags.as_ref(), b.tcp_flags.as_ref(), nonempty_and) else {
        return Ok(None);
    };
    let limit = match (a.limit, b.limit) {
        (None, l) | (l, None) => l,
        (Some(x), Some(y)) if x == y => Some(x),
        (Some(x), Some(y)) => {
            return Err(format!(
                "two rate limits (`-m limit` of lines {} and {}) would apply together; fw's `limit` is one rate per rule",
                x.origin.min(y.origin),
                x.origin.max(y.origin)
            ));
        }
    };
    Ok(Some(Match {
        proto,
        src,
        dst,
        sport,
        dport,
        in_if,
        out_if,
        icmp_type,
        state,
        tcp_flags,
        limit,
    }))
}

/// Both present: `f`; one: it. `None` means "nothing matches".
#[expect(
    clippy::option_option,
    reason = "outer: can anything match; inner: is the field constrained"
)]
fn opt_and<T: Clone>(
    left: Option<&T>,
    right: Option<&T>,
    both: impl Fn(&T, &T) -> Option<T>,
) -> Option<Option<T>> {
    match (left, right) {
        (None, None) => Some(None),
        (Some(x), None) | (None, Some(x)) => Some(Some(x.clone())),
        (Some(x), Some(y)) => both(x, y).map(Some),
    }
}

fn nonempty_and(a: &Bits, b: &Bits) -> Option<Bits> {
    Some(bits_and(a, b)).filter(|x| !bits_empty(x))
}

/// `p ∧ ¬m`, as disjoint matches; `Err` if fw cannot write it (the name
/// of what cannot be negated).
pub(super) fn subtract(p: &Match, m: &Match) -> Result<Vec<Match>, String> {
    if conj(p, m)?.is_none() {
        return Ok(vec![p.clone()]);
    }
    // p ∧ ¬(f1 ∧ … ∧ fk) = ∨ᵢ p ∧ f1 ∧ … ∧ fᵢ₋₁ ∧ ¬fᵢ over the conditions p
    // does not already imply: disjoint, and each a conjunction.
    let rest: Vec<Match> = m.atoms().into_iter().filter(|f| !implies(p, f)).collect();
    let mut out = Vec::new();
    let mut acc = p.clone();
    for f in rest {
        for n in negate(&f)? {
            if let Some(piece) = conj(&acc, &n)? {
                out.push(piece);
            }
        }
        match conj(&acc, &f)? {
            Some(next) => acc = next,
            None => break,
        }
    }
    Ok(out)
}

/// Does every packet matching `p` match the one-condition `f`?
fn implies(p: &Match, f: &Match) -> bool {
    if let Some(x) = f.proto {
        return p.proto == Some(x);
    }
    if f.src != Addr::Any {
        return addr_implies(&p.src, &f.src);
    }
    if f.dst != Addr::Any {
        return addr_implies(&p.dst, &f.dst);
    }
    if let Some(x) = &f.sport {
        return p
            .sport
            .as_ref()
            .is_some_and(|y| ports_and(y, x).as_ref() == Some(y));
    }
    if let Some(x) = &f.dport {
        return p
            .dport
            .as_ref()
            .is_some_and(|y| ports_and(y, x).as_ref() == Some(y));
    }
    if let Some(x) = &f.in_if {
        return p.in_if.as_ref() == Some(x);
    }
    if let Some(x) = &f.out_if {
        return p.out_if.as_ref() == Some(x);
    }
    if let Some(x) = &f.icmp_type {
        return p.icmp_type.is_some_and(|y| bits_subset(&y, x));
    }
    if let Some(x) = f.state {
        return p.state.is_some_and(|y| y & !x == 0);
    }
    if let Some(x) = &f.tcp_flags {
        return p.tcp_flags.is_some_and(|y| bits_subset(&y, x));
    }
    // A limit is never implied: whether a packet is under it is not a
    // property of the packet.
    false
}

/// The one-condition `f` negated, as disjoint one-condition matches.
fn negate(f: &Match) -> Result<Vec<Match>, String> {
    if f.proto.is_some() {
        return Err("a protocol (`-p`)".into());
    }
    if f.src != Addr::Any {
        return Ok(addr_not(&f.src)
            .map(|src| Match { src, ..Match::ANY })
            .into_iter()
            .collect());
    }
    if f.dst != Addr::Any {
        return Ok(addr_not(&f.dst)
            .map(|dst| Match { dst, ..Match::ANY })
            .into_iter()
            .collect());
    }
    if let Some(p) = &f.sport {
        return Ok(ports_not(p)
            .map(|sport| Match {
                sport: Some(sport),
                ..Match::ANY
            })
            .into_iter()
            .collect());
    }
    if let Some(p) = &f.dport {
        return Ok(ports_not(p)
            .map(|dport| Match {
                dport: Some(dport),
                ..Match::ANY
            })
            .into_iter()
            .collect());
    }
    if f.in_if.is_some() || f.out_if.is_some() {
        return Err("an interface (`-i`/`-o`)".into());
    }
    if let Some(t) = &f.icmp_type {
        return Ok(vec![Match {
            icmp_type: Some(bits_not(t)),
            ..Match::ANY
        }]);
    }
    if let Some(s) = f.state {
        let rest = ALL_STATES & !s;
        return Ok(if rest == 0 {
            Vec::new()
        } else {
            vec![Match {
                state: Some(rest),
                ..Match::ANY
            }]
        });
    }
    if let Some(b) = &f.tcp_flags {
        return Ok(vec![Match {
            tcp_flags: Some(bits_not(b)),
            ..Match::ANY
        }]);
    }
    Err("a rate limit (`-m limit`)".into())
}

// ---- addresses ----

/// `0.0.0.0/0` or `::/0`.
pub(super) fn is_everything(net: &IpNet) -> bool {
    net.prefix_len() == 0
}

fn addr_and(a: &Addr, b: &Addr) -> Result<Option<Addr>, String> {
    Ok(match (a, b) {
        (Addr::Any, x) | (x, Addr::Any) => Some(x.clone()),
        (Addr::In(x), Addr::In(y)) => {
            let mut out: Vec<IpNet> = Vec::new();
            for n in x {
                for m in y {
                    let both = if n.contains(m) {
                        Some(*m)
                    } else if m.contains(n) {
                        Some(*n)
                    } else {
                        None
                    };
                    if let Some(b) = both
                        && !out.contains(&b)
                    {
                        out.push(b);
                    }
                }
            }
            (!out.is_empty()).then_some(Addr::In(out))
        }
        (Addr::In(x), Addr::NotIn(y)) | (Addr::NotIn(y), Addr::In(x)) => {
            let left = nets_minus(x, y)?;
            (!left.is_empty()).then_some(Addr::In(left))
        }
        (Addr::NotIn(x), Addr::NotIn(y)) => {
            let mut all = x.clone();
            all.extend(y.iter().copied());
            Some(Addr::NotIn(nets_union(&all)))
        }
    })
}

fn addr_not(a: &Addr) -> Option<Addr> {
    match a {
        Addr::Any => None,
        Addr::In(x) => Some(Addr::NotIn(x.clone())),
        Addr::NotIn(x) => Some(Addr::In(x.clone())),
    }
}

fn addr_implies(p: &Addr, f: &Addr) -> bool {
    match (p, f) {
        (_, Addr::Any) => true,
        (Addr::In(x), Addr::In(y)) => x.iter().all(|n| y.iter().any(|m| m.contains(n))),
        (Addr::In(x), Addr::NotIn(y)) => x
            .iter()
            .all(|n| y.iter().all(|m| !m.contains(n) && !n.contains(m))),
        (Addr::NotIn(x), Addr::NotIn(y)) => y.iter().all(|m| x.iter().any(|n| n.contains(m))),
        _ => false,
    }
}

/// The networks without those contained in another.
pub(super) fn nets_union(nets: &[IpNet]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for n in nets {
        if out.iter().any(|o| o.contains(n)) {
            continue;
        }
        out.retain(|o| !n.contains(o));
        out.push(*n);
    }
    out
}

/// `x ∖ y` as prefixes.
fn nets_minus(x: &[IpNet], y: &[IpNet]) -> Result<Vec<IpNet>, String> {
    let mut cur: Vec<IpNet> = x.to_vec();
    for hole in y {
        let mut next = Vec::new();
        for n in cur {
            if hole.contains(&n) {
                continue;
            }
            if n.contains(hole) {
                next.extend(split_around(n, *hole));
            } else {
                next.push(n);
            }
            if next.len() > MAX_NETS {
                return Err(format!(
                    "an address match that leaves out part of a network (it would take more than {MAX_NETS} prefixes)"
                ));
            }
        }
        cur = next;
    }
    Ok(cur)
}

/// The prefixes that make up `n` without `hole` (which `n` contains).
fn split_around(n: IpNet, hole: IpNet) -> Vec<IpNet> {
    let mut out = Vec::new();
    let mut cur = n;
    while cur.prefix_len() < hole.prefix_len() {
        let Ok(halves) = cur.subnets(cur.prefix_len() + 1) else {
            break;
        };
        let mut inner = None;
        for h in halves {
            if h.contains(&hole) {
                inner = Some(h);
            } else {
                out.push(h);
            }
        }
        match inner {
            Some(h) => cur = h,
            None => break,
        }
    }
    out
}

/// A network as the policy writes it: a bare address for a host.
pub(super) fn net_text(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// Is every address of `n` a loopback address (127.0.0.0/8 or `::1`)?
pub(super) fn is_loopback_net(n: &IpNet) -> bool {
    match n.addr() {
        IpAddr::V4(a) => n.prefix_len() >= 8 && a.octets()[0] == 127,
        IpAddr::V6(a) => n.prefix_len() == 128 && a.is_loopback(),
    }
}

// ---- ports ----

pub(super) fn ports_normalize(mut v: Vec<(u16, u16)>) -> Option<Ports> {
    v.sort_unstable();
    let mut out: Ports = Vec::new();
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    if out == [(0, u16::MAX)] {
        return None;
    }
    Some(out)
}

fn ports_and(a: &Ports, b: &Ports) -> Option<Ports> {
    let mut out = Vec::new();
    for &(x0, x1) in a {
        for &(y0, y1) in b {
            let (lo, hi) = (x0.max(y0), x1.min(y1));
            if lo <= hi {
                out.push((lo, hi));
            }
        }
    }
    if out.is_empty() {
        None
    } else {
        ports_normalize(out)
    }
}

/// Every port but these; `None` if that is no port.
pub(super) fn ports_not(a: &Ports) -> Option<Ports> {
    let mut out = Vec::new();
    let mut next: u32 = 0;
    for &(lo, hi) in a {
        if u32::from(lo) > next {
            out.push((port(next), lo - 1));
        }
        next = u32::from(hi) + 1;
    }
    if let Ok(first) = u16::try_from(next) {
        out.push((first, u16::MAX));
    }
    (!out.is_empty()).then_some(out)
}

fn port(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn subtracting_a_host_from_a_network_leaves_its_siblings() {
        let left = nets_minus(&[net("192.0.2.0/24")], &[net("192.0.2.10/32")]).unwrap();
        assert_eq!(left.len(), 8);
        assert!(left.iter().all(|n| !n.contains(&net("192.0.2.10/32"))));
        assert!(left.iter().any(|n| n.contains(&net("192.0.2.11/32"))));
        assert!(
            nets_minus(&[net("192.0.2.8/29")], &[net("192.0.2.0/24")])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn port_sets_negate_and_intersect() {
        assert_eq!(ports_not(&vec![(22, 22)]), Some(vec![(0, 21), (23, 65535)]));
        assert_eq!(ports_not(&vec![(0, 65535)]), None);
        assert_eq!(
            ports_and(&vec![(1024, 65535)], &vec![(20, 22), (6000, 6010)]),
            Some(vec![(6000, 6010)])
        );
        assert_eq!(ports_normalize(vec![(0, 100), (101, 65535)]), None);
        assert_eq!(
            ports_normalize(vec![(80, 80), (22, 22), (79, 81)]),
            Some(vec![(22, 22), (79, 81)])
        );
    }

    #[test]
    fn subtract_keeps_what_the_return_did_not_take() {
        let tcp22 = Match {
            proto: Some(6),
            dport: Some(vec![(22, 22)]),
            ..Match::ANY
        };
        let tcp = Match {
            proto: Some(6),
            ..Match::ANY
        };
        // Within TCP, "not (tcp and dport 22)" is "dport not 22".
        let left = subtract(&tcp, &tcp22).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].dport, Some(vec![(0, 21), (23, 65535)]));
        // Without a protocol it would need "not tcp".
        assert!(subtract(&Match::ANY, &tcp22).is_err());
        // Disjoint: nothing taken.
        let udp = Match {
            proto: Some(17),
            ..Match::ANY
        };
        assert_eq!(subtract(&udp, &tcp22).unwrap(), vec![udp]);
    }
}

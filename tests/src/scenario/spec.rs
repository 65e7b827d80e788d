//! The scenario file: read with serde, then checked as a whole, so that a
//! mistake is reported with the file, the line of the table at fault and
//! what to write instead, before any namespace exists.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::{self, Write as _},
    net::{IpAddr, SocketAddr},
    ops::Range,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

/// A mistake in a scenario file: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: PathBuf,
    /// The 1-based line of the offending table or value, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ScenarioError {}

/// Where test traffic may come from and go to: the documentation ranges
/// (RFC 5737, RFC 3849), which no real network routes.
pub const DOCUMENTATION_RANGES: [&str; 4] = [
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "2001:db8::/32",
];

fn in_documentation(net: &IpNet) -> bool {
    DOCUMENTATION_RANGES.iter().any(|d| {
        d.parse::<IpNet>()
            .is_ok_and(|d| d.contains(net) && d.prefix_len() <= net.prefix_len())
    })
}

// ---------------------------------------------------------------- the file

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    description: String,
    #[serde(default)]
    network: Vec<Spanned<RawNetwork>>,
    #[serde(default)]
    host: Vec<Spanned<RawHost>>,
    #[serde(default)]
    policy: BTreeMap<String, Spanned<RawPolicy>>,
    #[serde(default)]
    generate: Vec<Spanned<RawGenerate>>,
    #[serde(default)]
    probe: Vec<Spanned<RawProbe>>,
    #[serde(default)]
    mutation: Vec<Spanned<RawMutation>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    name: String,
    kind: NetworkKind,
    subnets: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: String,
    interfaces: Vec<RawInterface>,
    policy: Option<String>,
    guard: Option<Vec<String>>,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    proxies: Vec<RawProxy>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    ip_forward: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    network: String,
    addresses: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    port: u16,
    backends: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    to: String,
    via: Option<String>,
    dev: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    example: Option<String>,
    file: Option<String>,
    inline: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGenerate {
    file: String,
    seed: u64,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    random: Vec<RawRandom>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRandom {
    within: String,
    count: usize,
    lengths: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    name: Option<String>,
    from: String,
    to: String,
    via: Option<String>,
    family: Option<FamilyChoice>,
    src: Option<String>,
    sport: Option<u16>,
    proto: ProbeProto,
    port: Option<u16>,
    expect: Expect,
    kind: Option<ProbeKind>,
    why: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMutation {
    name: String,
    host: String,
    policy: String,
    caught_by: Vec<String>,
    why: Option<String>,
}

/// What a probe stands for, when it is more than a client reaching a
/// server: checked against the scenario, and shown in reports.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// A connection the guarded host `from` starts itself: its output
    /// chain decides.
    Egress,
    /// Like `egress`, expected to be answered: the answer must come back in
    /// through the host's input chain, as a tracked reply.
    Reply,
    /// Something that only looks like a reply (a fixed source port such as
    /// 53 or 443, or a bare ACK) sent to a guarded host: must not pass as
    /// one.
    Unsolicited,
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Egress => "egress",
            Self::Reply => "reply",
            Self::Unsolicited => "unsolicited",
        })
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum FamilyChoice {
    Ipv4,
    Ipv6,
    Both,
}

/// What a network stands for (it changes nothing in how it is built).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    /// Faces the world: clients, attackers.
    Public,
    /// Behind the hosts that guard it.
    Private,
}

/// How a probe talks to its target.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeProto {
    /// Connect, send a message, read its echo.
    Tcp,
    /// Send a datagram, wait for its echo.
    Udp,
    /// `ping -c 1`.
    Icmp,
    /// A bare ACK that belongs to no connection (raw socket): a stack
    /// that sees it answers with a RST.
    TcpAck,
}

impl fmt::Display for ProbeProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
            Self::TcpAck => "tcp-ack",
        })
    }
}

/// The expected outcome as written in the file (with its aliases).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Expect {
    #[serde(alias = "connected", alias = "answered")]
    Open,
    Dropped,
    #[serde(alias = "rejected")]
    Refused,
    Closed,
    Unreachable,
}

/// What a probe saw, or was expected to see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// TCP connected and the message came back; UDP and ICMP answered.
    Open,
    /// Nothing came back in time.
    Dropped,
    /// Turned away at once: a TCP RST, an ICMP port or protocol
    /// unreachable, or the sender's own firewall refusing the send (EPERM).
    Refused,
    /// TCP connected, but the connection closed without the echo (a
    /// proxy that found no backend).
    Closed,
    /// An ICMP host, network or administratively-prohibited error, or no
    /// route.
    Unreachable,
    /// Anything else, with what happened.
    Error(String),
}

impl From<Expect> for Outcome {
    fn from(e: Expect) -> Self {
        match e {
            Expect::Open => Self::Open,
            Expect::Dropped => Self::Dropped,
            Expect::Refused => Self::Refused,
            Expect::Closed => Self::Closed,
            Expect::Unreachable => Self::Unreachable,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open => f.write_str("open"),
            Self::Dropped => f.write_str("dropped"),
            Self::Refused => f.write_str("refused"),
            Self::Closed => f.write_str("closed"),
            Self::Unreachable => f.write_str("unreachable"),
            Self::Error(e) => write!(f, "error ({e})"),
        }
    }
}

// ---------------------------------------------------------- the checked model

/// A scenario, checked: every name it uses exists, every address is in a
/// documentation range and on its network, every probe resolved to the
/// address it sends to.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The file stem (`web-db` for `web-db.toml`).
    pub name: String,
    pub path: PathBuf,
    pub description: String,
    pub networks: Vec<Network>,
    pub hosts: Vec<Host>,
    pub policies: BTreeMap<String, PolicySource>,
    pub generated: Vec<Generated>,
    pub probes: Vec<Probe>,
    pub mutations: Vec<Mutation>,
}

#[derive(Clone, Debug)]
pub struct Network {
    pub name: String,
    pub kind: NetworkKind,
    pub subnets: Vec<IpNet>,
}

#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub interfaces: Vec<Interface>,
    /// The name of a `[policy.NAME]`; `None`: fw does not run here.
    pub policy: Option<String>,
    /// The interfaces fw guards (all of them unless `guard` says).
    pub guard: Vec<String>,
    pub services: Vec<Service>,
    pub proxies: Vec<Proxy>,
    pub routes: Vec<Route>,
    pub ip_forward: bool,
}

impl Host {
    /// Every address of the host, on any interface.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.interfaces
            .iter()
            .flat_map(|i| i.addresses.iter().map(IpNet::addr))
    }

    fn listens(&self, proto: ProbeProto, port: u16) -> bool {
        let tcp = matches!(proto, ProbeProto::Tcp | ProbeProto::TcpAck);
        self.services.iter().any(|s| s.port == port && s.tcp == tcp)
            || (tcp && self.proxies.iter().any(|p| p.port == port))
    }
}

#[derive(Clone, Debug)]
pub struct Interface {
    /// `eth0`, `eth1` … in the order the file lists them.
    pub name: String,
    pub network: String,
    /// With the prefix length of the network's subnet they are in.
    pub addresses: Vec<IpNet>,
}

/// A real listener that echoes what it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    pub tcp: bool,
    pub port: u16,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", if self.tcp { "tcp" } else { "udp" }, self.port)
    }
}

/// A TCP proxy (a load balancer's frontend): each connection goes to the
/// next backend in turn, or the one after it if that does not answer.
#[derive(Clone, Debug)]
pub struct Proxy {
    pub port: u16,
    pub backends: Vec<SocketAddr>,
}

#[derive(Clone, Debug)]
pub struct Route {
    /// `default` or a prefix.
    pub to: String,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
}

#[derive(Clone, Debug)]
pub enum PolicySource {
    /// A file of `examples/`, used where it is.
    Example(PathBuf),
    /// A file beside the scenario, used where it is.
    File(PathBuf),
    /// Written into the lab's scratch directory as `NAME.toml`, beside the
    /// generated files, so its `{ file = "…" }` sets find them.
    Inline(String),
}

/// A set file the runner writes before loading (a blocklist of any size).
#[derive(Clone, Debug)]
pub struct Generated {
    pub file: String,
    pub seed: u64,
    pub include: Vec<IpNet>,
    pub random: Vec<RandomPrefixes>,
}

#[derive(Clone, Debug)]
pub struct RandomPrefixes {
    pub within: IpNet,
    pub count: usize,
    pub lengths: Range<u8>,
}

/// One row of the reachability matrix, resolved to addresses.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The `[[probe]]` table it comes from, counting from 1.
    pub index: usize,
    pub line: usize,
    /// Unique in the scenario; `base_name` plus ` [ipv4]`/` [ipv6]` when
    /// the row was written for both families.
    pub name: String,
    pub base_name: String,
    pub from: String,
    pub src: Option<IpAddr>,
    pub sport: Option<u16>,
    /// The target host, unless the row named an address.
    pub to_host: Option<String>,
    pub to: IpAddr,
    pub proto: ProbeProto,
    pub port: Option<u16>,
    pub expect: Outcome,
    pub kind: Option<ProbeKind>,
    pub why: Option<String>,
}

impl Probe {
    /// `web (192.0.2.11) → db 198.51.100.30 tcp/3306`.
    #[must_use]
    pub fn route(&self) -> String {
        let mut s = self.from.clone();
        match (self.src, self.sport) {
            (Some(a), Some(p)) => {
                let _ = write!(s, " ({})", SocketAddr::new(a, p));
            }
            (Some(a), None) => {
                let _ = write!(s, " ({a})");
            }
            (None, Some(p)) => {
                let _ = write!(s, " (port {p})");
            }
            (None, None) => {}
        }
        s.push_str(" → ");
        if let Some(h) = &self.to_host {
            s.push_str(h);
            s.push(' ');
        }
        let _ = match self.port {
            Some(p) => write!(s, "{} {}/{p}", self.to, self.proto),
            None => write!(s, "{} {}", self.to, self.proto),
        };
        s
    }

    fn caught_by_entry(&self, entry: &str) -> bool {
        self.name == entry || self.base_name == entry
    }
}

/// A deliberately wrong policy for one host, and the probes that must
/// catch it.
#[derive(Clone, Debug)]
pub struct Mutation {
    pub name: String,
    pub line: usize,
    pub host: String,
    pub policy: String,
    /// Probe names (a row written for both families names both).
    pub caught_by: Vec<String>,
    pub why: Option<String>,
}

impl Mutation {
    /// The probes this mutation declares it is caught by.
    #[must_use]
    pub fn declared<'a>(&self, probes: &'a [Probe]) -> BTreeSet<&'a str> {
        probes
            .iter()
            .filter(|p| self.caught_by.iter().any(|e| p.caught_by_entry(e)))
            .map(|p| p.name.as_str())
            .collect()
    }
}

// ------------------------------------------------------------------ checking

/// The repository's `examples/`.
#[must_use]
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Checker<'_> {
    fn err(&self, span: &Range<usize>, message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: self.path.to_path_buf(),
            line: Some(line_of(self.text, span.start)),
            message: message.into(),
        }
    }
}

fn parse_addr(s: &str) -> Result<IpAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("\"{s}\" is not an address (write \"192.0.2.10\" or \"2001:db8::10\")")
    })
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!("\"{s}\" is not a prefix or an address (write \"192.0.2.0/24\" or \"2001:db8::1\")")
    })
}

fn documentation_addr(s: &str, what: &str) -> Result<IpAddr, String> {
    let a = parse_addr(s)?;
    if in_documentation(&IpNet::from(a)) {
        Ok(a)
    } else {
        Err(format!(
            "{what} {a} is outside the documentation ranges ({}): test traffic must never look like a real network's",
            DOCUMENTATION_RANGES.join(", ")
        ))
    }
}

/// `a, b, c`, or `none`: the choices an error message offers.
fn names<T: fmt::Display>(it: impl Iterator<Item = T>) -> String {
    let v: Vec<String> = it.map(|x| x.to_string()).collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

impl Scenario {
    /// Read and check a scenario file.
    ///
    /// # Errors
    /// The file cannot be read, is not valid TOML, or does not make sense
    /// (the error names the file, the line and the fix).
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.to_path_buf(),
            line: None,
            message: format!("cannot read the scenario: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Check the text of a scenario file read from `path` (which names it
    /// and anchors its relative `file` policies).
    ///
    /// # Errors
    /// As `from_file`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ScenarioError {
            file: path.to_path_buf(),
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().trim().to_string(),
        })?;
        let c = Checker { path, text };
        let name = path.file_stem().map_or_else(
            || "scenario".to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        let networks = check_networks(&c, &raw.network)?;
        let policies = check_policies(&c, &raw.policy)?;
        let hosts = check_hosts(&c, &raw.host, &networks, &policies)?;
        let generated = check_generated(&c, &raw.generate, &hosts)?;
        let probes = check_probes(&c, &raw.probe, &hosts)?;
        let mutations = check_mutations(&c, &raw.mutation, &hosts, &policies, &probes)?;
        for (pname, p) in &raw.policy {
            let used = hosts.iter().any(|h| h.policy.as_ref() == Some(pname))
                || mutations.iter().any(|m| &m.policy == pname);
            if !used {
                return Err(c.err(
                    &p.span(),
                    format!("policy `{pname}` is used by no host and no mutation: remove it or name it in a `[[host]]` `policy`"),
                ));
            }
        }
        if probes.is_empty() {
            return Err(ScenarioError {
                file: path.to_path_buf(),
                line: None,
                message:
                    "no `[[probe]]`: a scenario proves nothing without its reachability matrix"
                        .into(),
            });
        }
        Ok(Self {
            name,
            path: path.to_path_buf(),
            description: raw.description,
            networks,
            hosts,
            policies,
            generated,
            probes,
            mutations,
        })
    }

    #[must_use]
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }
}

fn check_networks(
    c: &Checker<'_>,
    raw: &[Spanned<RawNetwork>],
) -> Result<Vec<Network>, ScenarioError> {
    let mut out: Vec<Network> = Vec::new();
    for n in raw {
        let span = n.span();
        let r = n.get_ref();
        if out.iter().any(|o| o.name == r.name) {
            return Err(c.err(&span, format!("a second network named `{}`", r.name)));
        }
        if r.subnets.is_empty() {
            return Err(c.err(
                &span,
                format!("network `{}` has no `subnets`: give it a documentation prefix such as \"192.0.2.0/24\"", r.name),
            ));
        }
        let mut subnets = Vec::new();
        for s in &r.subnets {
            let net =
                parse_net(s).map_err(|m| c.err(&span, format!("network `{}`: {m}", r.name)))?;
            if !in_documentation(&net) {
                return Err(c.err(
                    &span,
                    format!(
                        "network `{}`: subnet {net} is outside the documentation ranges ({})",
                        r.name,
                        DOCUMENTATION_RANGES.join(", ")
                    ),
                ));
            }
            subnets.push(net);
        }
        out.push(Network {
            name: r.name.clone(),
            kind: r.kind,
            subnets,
        });
    }
    Ok(out)
}

fn check_policies(
    c: &Checker<'_>,
    raw: &BTreeMap<String, Spanned<RawPolicy>>,
) -> Result<BTreeMap<String, PolicySource>, ScenarioError> {
    let mut out = BTreeMap::new();
    for (name, p) in raw {
        let span = p.span();
        let r = p.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            return Err(c.err(&span, format!("policy name `{name}`: use letters, digits, `-` and `_` (it becomes a file name)")));
        }
        let source = match (&r.example, &r.file, &r.inline) {
            (Some(e), None, None) => {
                let p = examples_dir().join(e);
                if !p.is_file() {
                    return Err(c.err(&span, format!("policy `{name}`: there is no examples/{e}")));
                }
                PolicySource::Example(p)
            }
            (None, Some(f), None) => {
                let p = c.path.parent().unwrap_or(Path::new(".")).join(f);
                if !p.is_file() {
                    return Err(c.err(
                        &span,
                        format!("policy `{name}`: there is no {} (a `file` is relative to the scenario)", p.display()),
                    ));
                }
                PolicySource::File(p)
            }
            (None, None, Some(text)) => PolicySource::Inline(text.clone()),
            _ => {
                return Err(c.err(
                    &span,
                    format!("policy `{name}` needs exactly one of `example = \"web-server.toml\"`, `file = \"…\"` or `inline = '''…'''`"),
                ));
            }
        };
        out.insert(name.clone(), source);
    }
    Ok(out)
}

fn parse_service(s: &str) -> Result<Service, String> {
    let hint = "write \"tcp/PORT\" or \"udp/PORT\", e.g. \"tcp/22\"";
    let (proto, port) = s
        .split_once('/')
        .ok_or_else(|| format!("service \"{s}\": {hint}"))?;
    let tcp = match proto {
        "tcp" => true,
        "udp" => false,
        _ => return Err(format!("service \"{s}\": {hint}")),
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("service \"{s}\": the port must be 1-65535"))?;
    Ok(Service { tcp, port })
}

#[expect(
    clippy::too_many_lines,
    reason = "one check after another, in the order of the keys"
)]
fn check_hosts(
    c: &Checker<'_>,
    raw: &[Spanned<RawHost>],
    networks: &[Network],
    policies: &BTreeMap<String, PolicySource>,
) -> Result<Vec<Host>, ScenarioError> {
    let mut out: Vec<Host> = Vec::new();
    let mut seen_addrs: BTreeMap<IpAddr, String> = BTreeMap::new();
    for h in raw {
        let span = h.span();
        let r = h.get_ref();
        let e = |m: String| c.err(&span, format!("host `{}`: {m}", r.name));
        if out.iter().any(|o| o.name == r.name) {
            return Err(c.err(&span, format!("a second host named `{}`", r.name)));
        }
        if r.name.is_empty()
            || r.name.len() > 20
            || !r
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        {
            return Err(e(
                "use up to 20 letters, digits and `-` for a host name".into()
            ));
        }
        if r.interfaces.is_empty() {
            return Err(e("no `interfaces`: plug it into a network, e.g. `interfaces = [{ network = \"lan\", addresses = [\"192.0.2.10\"] }]`".into()));
        }
        let mut interfaces = Vec::new();
        for (i, ri) in r.interfaces.iter().enumerate() {
            let ifname = format!("eth{i}");
            let net = networks
                .iter()
                .find(|n| n.name == ri.network)
                .ok_or_else(|| {
                    e(format!(
                        "{ifname}: no network `{}` (networks: {})",
                        ri.network,
                        names(networks.iter().map(|n| n.name.as_str()))
                    ))
                })?;
            if ri.addresses.is_empty() {
                return Err(e(format!("{ifname}: no `addresses`")));
            }
            let mut addrs = Vec::new();
            for a in &ri.addresses {
                if a.contains('/') {
                    return Err(e(format!(
                        "{ifname}: write \"{}\" without a prefix length: it comes from the network's subnets",
                        a.split('/').next().unwrap_or(a)
                    )));
                }
                let addr = parse_addr(a).map_err(|m| e(format!("{ifname}: {m}")))?;
                let subnet = net
                    .subnets
                    .iter()
                    .find(|s| s.contains(&addr))
                    .ok_or_else(|| {
                        e(format!(
                            "{ifname}: {addr} is in none of network `{}`'s subnets ({})",
                            net.name,
                            names(net.subnets.iter())
                        ))
                    })?;
                if let Some(other) = seen_addrs.insert(addr, r.name.clone()) {
                    return Err(e(format!("{addr} is {other}'s already")));
                }
                addrs
                    .push(IpNet::new(addr, subnet.prefix_len()).expect("a subnet's prefix length"));
            }
            interfaces.push(Interface {
                name: ifname,
                network: ri.network.clone(),
                addresses: addrs,
            });
        }
        if let Some(p) = &r.policy
            && !policies.contains_key(p)
        {
            return Err(e(format!(
                "no `[policy.{p}]` (policies: {})",
                names(policies.keys().map(String::as_str))
            )));
        }
        let guard = match (&r.guard, &r.policy) {
            (Some(_), None) => {
                return Err(e(
                    "`guard` without a `policy`: fw guards nothing here".into()
                ));
            }
            (Some(g), Some(_)) => {
                for i in g {
                    if !interfaces.iter().any(|x| &x.name == i) {
                        return Err(e(format!(
                            "`guard` names {i}, which it does not have (it has {})",
                            names(interfaces.iter().map(|x| x.name.as_str()))
                        )));
                    }
                }
                if g.is_empty() {
                    return Err(e(
                        "`guard = []`: leave out `policy` for a host fw does not guard".into(),
                    ));
                }
                g.clone()
            }
            (None, Some(_)) => interfaces.iter().map(|i| i.name.clone()).collect(),
            (None, None) => Vec::new(),
        };
        let mut services: Vec<Service> = Vec::new();
        for s in &r.services {
            let svc = parse_service(s).map_err(e)?;
            if services.contains(&svc) {
                return Err(e(format!("service {svc} twice")));
            }
            services.push(svc);
        }
        let mut proxies: Vec<Proxy> = Vec::new();
        for p in &r.proxies {
            if p.port == 0
                || services.contains(&Service {
                    tcp: true,
                    port: p.port,
                })
                || proxies.iter().any(|q| q.port == p.port)
            {
                return Err(e(format!(
                    "proxy port {}: 0, or already a tcp service or proxy",
                    p.port
                )));
            }
            if p.backends.is_empty() {
                return Err(e(format!("proxy on port {} has no `backends`", p.port)));
            }
            let mut backends = Vec::new();
            for b in &p.backends {
                let sa: SocketAddr = b.parse().map_err(|_| {
                    e(format!("proxy backend \"{b}\": write \"192.0.2.21:8080\" or \"[2001:db8::21]:8080\""))
                })?;
                documentation_addr(&sa.ip().to_string(), "proxy backend").map_err(&e)?;
                backends.push(sa);
            }
            proxies.push(Proxy {
                port: p.port,
                backends,
            });
        }
        let mut routes = Vec::new();
        for rt in &r.routes {
            let via = rt
                .via
                .as_deref()
                .map(|v| documentation_addr(v, "route via"))
                .transpose()
                .map_err(&e)?;
            if rt.to == "default" {
                if via.is_none() {
                    return Err(e("a `default` route needs `via`".into()));
                }
            } else {
                let net = parse_net(&rt.to).map_err(|m| e(format!("route: {m}")))?;
                if !in_documentation(&net) {
                    return Err(e(format!(
                        "route to {net}: only documentation prefixes or \"default\""
                    )));
                }
            }
            if let Some(d) = &rt.dev
                && !interfaces.iter().any(|x| &x.name == d)
            {
                return Err(e(format!("route dev {d}: no such interface")));
            }
            if via.is_none() && rt.dev.is_none() {
                return Err(e(format!("route to {}: give `via` or `dev`", rt.to)));
            }
            routes.push(Route {
                to: rt.to.clone(),
                via,
                dev: rt.dev.clone(),
            });
        }
        out.push(Host {
            name: r.name.clone(),
            interfaces,
            policy: r.policy.clone(),
            guard,
            services,
            proxies,
            routes,
            ip_forward: r.ip_forward,
        });
    }
    Ok(out)
}

fn check_generated(
    c: &Checker<'_>,
    raw: &[Spanned<RawGenerate>],
    hosts: &[Host],
) -> Result<Vec<Generated>, ScenarioError> {
    let mut out: Vec<Generated> = Vec::new();
    for g in raw {
        let span = g.span();
        let r = g.get_ref();
        let e = |m: String| c.err(&span, format!("generated file `{}`: {m}", r.file));
        if r.file.is_empty()
            || r.file.contains('/')
            || r.file.starts_with('.')
            || Path::new(&r.file).extension().is_some_and(|x| x == "toml")
        {
            return Err(e(
                "a plain file name such as \"blocklist.txt\" (not .toml: those are the policies)"
                    .into(),
            ));
        }
        if out.iter().any(|o| o.file == r.file) {
            return Err(e("generated twice".into()));
        }
        let include = r
            .include
            .iter()
            .map(|s| parse_net(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(e)?;
        let mut random = Vec::new();
        for rr in &r.random {
            let within = parse_net(&rr.within).map_err(e)?;
            let max: u8 = if within.addr().is_ipv4() { 32 } else { 128 };
            let lengths = rr
                .lengths
                .split_once('-')
                .and_then(|(a, b)| {
                    Some((a.trim().parse::<u8>().ok()?, b.trim().parse::<u8>().ok()?))
                })
                .filter(|&(a, b)| a <= b && a >= within.prefix_len() && b <= max)
                .ok_or_else(|| {
                    e(format!(
                        "`lengths = \"{}\"`: write \"A-B\" with {} <= A <= B <= {max}",
                        rr.lengths,
                        within.prefix_len()
                    ))
                })?;
            if let Some((h, a)) = hosts
                .iter()
                .flat_map(|h| h.addresses().map(move |a| (&h.name, a)))
                .find(|(_, a)| within.contains(a))
            {
                return Err(e(format!(
                    "random prefixes within {within} could cover {h}'s address {a}: list the hosts to block in `include`, and draw the rest elsewhere"
                )));
            }
            // Room for at least twice the count, so drawing ends quickly.
            let room: u128 = (lengths.0..=lengths.1)
                .map(|l| {
                    1u128
                        .checked_shl(u32::from(l - within.prefix_len()))
                        .unwrap_or(u128::MAX)
                })
                .fold(0u128, u128::saturating_add);
            if rr.count == 0 || room < 2 * rr.count as u128 {
                return Err(e(format!(
                    "{} distinct prefixes do not fit well in {within} with lengths {}",
                    rr.count, rr.lengths
                )));
            }
            random.push(RandomPrefixes {
                within,
                count: rr.count,
                lengths: lengths.0..lengths.1 + 1,
            });
        }
        out.push(Generated {
            file: r.file.clone(),
            seed: r.seed,
            include,
            random,
        });
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(a: IpAddr) -> Self {
        if a.is_ipv4() { Self::V4 } else { Self::V6 }
    }

    fn label(self) -> &'static str {
        match self {
            Self::V4 => "ipv4",
            Self::V6 => "ipv6",
        }
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one check after another, in the order of the keys"
)]
fn check_probes(
    c: &Checker<'_>,
    raw: &[Spanned<RawProbe>],
    hosts: &[Host],
) -> Result<Vec<Probe>, ScenarioError> {
    let mut out: Vec<Probe> = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let index = i + 1;
        let span = p.span();
        let r = p.get_ref();
        let e = |m: String| c.err(&span, format!("probe {index} ({} → {}): {m}", r.from, r.to));
        let host_names = || names(hosts.iter().map(|h| h.name.as_str()));
        let from = hosts.iter().find(|h| h.name == r.from).ok_or_else(|| {
            e(format!(
                "`from`: no host `{}` (hosts: {})",
                r.from,
                host_names()
            ))
        })?;
        let target_addr = r.to.parse::<IpAddr>().ok();
        let to_host = if target_addr.is_some() {
            None
        } else {
            Some(hosts.iter().find(|h| h.name == r.to).ok_or_else(|| {
                e(format!(
                    "`to`: no host `{}` and not an address (hosts: {})",
                    r.to,
                    host_names()
                ))
            })?)
        };
        if to_host.is_some_and(|t| t.name == from.name) {
            return Err(e("a host probing itself only proves loopback".into()));
        }
        if let Some(a) = target_addr {
            documentation_addr(&a.to_string(), "`to`").map_err(&e)?;
            if r.via.is_some() {
                return Err(e(
                    "`via` picks one of the target host's networks; `to` is an address".into(),
                ));
            }
        }
        let src = r
            .src
            .as_deref()
            .map(|s| parse_addr(s).map_err(&e))
            .transpose()?;
        if let Some(s) = src
            && !from.addresses().any(|a| a == s)
        {
            return Err(e(format!(
                "`src` {s} is not an address of {} ({})",
                from.name,
                names(from.addresses())
            )));
        }
        let families: Vec<Family> = match (r.family, target_addr.or(src)) {
            (Some(FamilyChoice::Both), Some(_)) => {
                return Err(e("`family = \"both\"` with an address in `to` or `src`: write one row per family".into()));
            }
            (Some(FamilyChoice::Both), None) => vec![Family::V4, Family::V6],
            (Some(FamilyChoice::Ipv4), _) => vec![Family::V4],
            (Some(FamilyChoice::Ipv6), _) => vec![Family::V6],
            (None, Some(a)) => vec![Family::of(a)],
            (None, None) => vec![Family::V4],
        };
        if let (Some(a), Some(s)) = (target_addr, src)
            && Family::of(a) != Family::of(s)
        {
            return Err(e("`to` and `src` are of different families".into()));
        }
        match (r.proto, r.port) {
            (ProbeProto::Icmp, Some(_)) => return Err(e("`port` with `proto = \"icmp\"`".into())),
            (ProbeProto::Icmp, None) if r.sport.is_some() => {
                return Err(e("`sport` with `proto = \"icmp\"`".into()));
            }
            (ProbeProto::Icmp, None) => {}
            (_, None | Some(0)) => {
                return Err(e(format!(
                    "`proto = \"{}\"` needs a `port` (1-65535)",
                    r.proto
                )));
            }
            _ => {}
        }
        let expect = Outcome::from(r.expect);
        let fits = match r.proto {
            ProbeProto::Tcp => true,
            ProbeProto::Udp | ProbeProto::Icmp => expect != Outcome::Closed,
            ProbeProto::TcpAck => matches!(expect, Outcome::Dropped | Outcome::Refused),
        };
        if !fits {
            return Err(e(format!(
                "`expect = \"{expect}\"` cannot happen to a {} probe",
                r.proto
            )));
        }
        let guarded = |h: &Host| h.policy.is_some();
        match r.kind {
            Some(ProbeKind::Egress) if !guarded(from) => {
                return Err(e(format!(
                    "`kind = \"egress\"`: {} runs no policy",
                    from.name
                )));
            }
            Some(ProbeKind::Reply) if !guarded(from) || expect != Outcome::Open => {
                return Err(e(format!(
                    "`kind = \"reply\"` is a connection a guarded host starts and expects answered: {} {}, expect = \"{expect}\"",
                    from.name,
                    if guarded(from) {
                        "is guarded"
                    } else {
                        "runs no policy"
                    }
                )));
            }
            Some(ProbeKind::Unsolicited)
                if !to_host.is_some_and(guarded)
                    || (r.sport.is_none() && r.proto != ProbeProto::TcpAck) =>
            {
                return Err(e(
                    "`kind = \"unsolicited\"` needs a guarded host in `to` and a `sport` (or `proto = \"tcp-ack\"`)".into(),
                ));
            }
            _ => {}
        }
        if let Some(sp) = r.sport {
            if sp == 0 {
                return Err(e("`sport = 0`: leave it out for any port".into()));
            }
            if from.listens(r.proto, sp) {
                return Err(e(format!(
                    "`sport = {sp}`: {} listens on that port itself; probe from a host that does not",
                    from.name
                )));
            }
        }
        let base_name = r.name.clone().unwrap_or_else(|| {
            let mut s = r.from.clone();
            if let Some(a) = src {
                let _ = write!(s, " ({a})");
            }
            if let Some(sp) = r.sport {
                let _ = write!(s, " :{sp}");
            }
            let _ = write!(s, " → {}", r.to);
            if let Some(v) = &r.via {
                let _ = write!(s, " via {v}");
            }
            let _ = match r.port {
                Some(port) => write!(s, " {}/{port}", r.proto),
                None => write!(s, " {}", r.proto),
            };
            s
        });
        for &fam in &families {
            if let Some(s) = src
                && Family::of(s) != fam
            {
                return Err(e(format!("`src` {s} is not an {} address", fam.label())));
            }
            let to = match (target_addr, to_host) {
                (Some(a), _) => a,
                (None, Some(t)) => resolve(from, t, r.via.as_deref(), fam).map_err(&e)?,
                (None, None) => unreachable!("checked above"),
            };
            let suffix = families.len() > 1
                || (r.name.is_none()
                    && fam == Family::V6
                    && target_addr.is_none()
                    && src.is_none());
            let name = if suffix {
                format!("{base_name} [{}]", fam.label())
            } else {
                base_name.clone()
            };
            if out.iter().any(|o| o.name == name) {
                return Err(e(format!(
                    "a second probe named \"{name}\": give this row a `name`"
                )));
            }
            out.push(Probe {
                index,
                line: line_of(c.text, span.start),
                name,
                base_name: base_name.clone(),
                from: from.name.clone(),
                src,
                sport: r.sport,
                to_host: to_host.map(|t| t.name.clone()),
                to,
                proto: r.proto,
                port: r.port,
                expect: expect.clone(),
                kind: r.kind,
                why: r.why.clone(),
            });
        }
    }
    Ok(out)
}

/// The address of `to` that `from` sends to: on network `via`, or on the
/// one network they share.
fn resolve(from: &Host, to: &Host, via: Option<&str>, fam: Family) -> Result<IpAddr, String> {
    let iface = if let Some(v) = via {
        to.interfaces
            .iter()
            .find(|i| i.network == v)
            .ok_or_else(|| {
                format!(
                    "`via`: {} is not on network `{v}` (it is on {})",
                    to.name,
                    names(to.interfaces.iter().map(|i| i.network.as_str()))
                )
            })?
    } else {
        let shared: Vec<&Interface> = to
            .interfaces
            .iter()
            .filter(|i| from.interfaces.iter().any(|f| f.network == i.network))
            .collect();
        match shared[..] {
            [one] => one,
            [] => {
                return Err(format!(
                    "{} and {} share no network: say which of {}'s networks to aim at with `via` ({})",
                    from.name,
                    to.name,
                    to.name,
                    names(to.interfaces.iter().map(|i| i.network.as_str()))
                ));
            }
            _ => {
                return Err(format!(
                    "{} and {} share the networks {}: say which with `via`",
                    from.name,
                    to.name,
                    names(shared.iter().map(|i| i.network.as_str()))
                ));
            }
        }
    };
    iface
        .addresses
        .iter()
        .map(IpNet::addr)
        .find(|a| Family::of(*a) == fam)
        .ok_or_else(|| {
            format!(
                "{} has no {} address on network `{}`",
                to.name,
                fam.label(),
                iface.network
            )
        })
}

fn check_mutations(
    c: &Checker<'_>,
    raw: &[Spanned<RawMutation>],
    hosts: &[Host],
    policies: &BTreeMap<String, PolicySource>,
    probes: &[Probe],
) -> Result<Vec<Mutation>, ScenarioError> {
    let mut out: Vec<Mutation> = Vec::new();
    for m in raw {
        let span = m.span();
        let r = m.get_ref();
        let e = |msg: String| c.err(&span, format!("mutation \"{}\": {msg}", r.name));
        if out.iter().any(|o| o.name == r.name) {
            return Err(e("a second mutation of that name".into()));
        }
        let host = hosts
            .iter()
            .find(|h| h.name == r.host)
            .ok_or_else(|| e(format!("no host `{}`", r.host)))?;
        let Some(own) = &host.policy else {
            return Err(e(format!("{} has no policy to replace", r.host)));
        };
        if !policies.contains_key(&r.policy) {
            return Err(e(format!(
                "no `[policy.{}]` (policies: {})",
                r.policy,
                names(policies.keys().map(String::as_str))
            )));
        }
        if &r.policy == own {
            return Err(e(format!(
                "`{}` is {}'s own policy, not a mutation of it",
                r.policy, r.host
            )));
        }
        if r.caught_by.is_empty() {
            return Err(e(
                "`caught_by = []`: a wrong policy no probe notices is a hole in the matrix; add the probe that catches it".into(),
            ));
        }
        for entry in &r.caught_by {
            if !probes.iter().any(|p| p.caught_by_entry(entry)) {
                return Err(e(format!(
                    "`caught_by` names \"{entry}\", which is no probe's name (probes: {})",
                    names(probes.iter().map(|p| p.name.as_str()))
                )));
            }
        }
        out.push(Mutation {
            name: r.name.clone(),
            line: line_of(c.text, span.start),
            host: r.host.clone(),
            policy: r.policy.clone(),
            caught_by: r.caught_by.clone(),
            why: r.why.clone(),
        });
    }
    Ok(out)
}

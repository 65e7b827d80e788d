//! Test hosts: network namespaces joined by veth pairs, created by the
//! test and deleted when dropped (also when the test panics). Addresses
//! come from 192.0.2.0/24 and `2001:db8::/64` and never leave the namespaces.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use nix::sched::{CloneFlags, setns};

use crate::packet::{CLIENT4, CLIENT6, SERVER4, SERVER6};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace owned by the test (deleted on drop), or a handle
/// on one another value owns (`existing`).
pub struct Netns {
    pub name: String,
    owned: bool,
}

impl Netns {
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        let name = crate::unique(prefix);
        ip(&["netns", "add", &name]);
        let ns = Self { name, owned: true };
        ns.ip(&["link", "set", "lo", "up"]);
        // The kernel sends at most 6 ICMP errors at once to one peer, then
        // one per `ratelimit` ms (1000 for IPv4, 100 for IPv6). A suite
        // probing a host with iptables' REJECT (or closed ports) from one
        // address would see some answers vanish, depending on timing, and
        // blame the firewall; tests judge rulesets, not that limit.
        let limits = [
            "/proc/sys/net/ipv4/icmp_ratelimit",
            "/proc/sys/net/ipv6/icmp/ratelimit",
        ];
        // /proc/sys/net belongs to the namespace of the thread that opens
        // it.
        ns.run(move || {
            for f in limits {
                std::fs::write(f, "0").unwrap_or_else(|e| panic!("{f}: {e}"));
            }
        });
        ns
    }

    /// A handle on namespace `name`, which something else owns and
    /// deletes: for threads that work in it.
    #[must_use]
    pub fn existing(name: &str) -> Self {
        Self {
            name: name.to_string(),
            owned: false,
        }
    }

    /// `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// Run a command inside the namespace.
    #[must_use]
    pub fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }

    /// The MAC address of `ifname` inside this namespace.
    #[must_use]
    pub fn mac(&self, ifname: &str) -> [u8; 6] {
        let out = self.exec(&["cat", &format!("/sys/class/net/{ifname}/address")]);
        let text = String::from_utf8_lossy(&out.stdout);
        let bytes: Vec<u8> = text
            .trim()
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).expect("hex MAC"))
            .collect();
        bytes
            .try_into()
            .unwrap_or_else(|_| panic!("no MAC for {ifname}: {text:?}"))
    }

    /// Run `f` on a thread that has entered this namespace (setns only
    /// moves the calling thread), and wait for its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("namespace thread panicked")
    }

    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = PathBuf::from("/run/netns").join(&self.name);
        thread::spawn(move || {
            let fd = File::open(&path).expect("open netns");
            setns(fd, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A private bpffs instance for one test's pins, unmounted on drop.
pub struct Bpffs {
    pub dir: PathBuf,
}

impl Bpffs {
    #[must_use]
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(crate::unique("fw-bpffs-"));
        std::fs::create_dir_all(&dir).expect("mkdir bpffs");
        nix::mount::mount(
            Some("bpf"),
            &dir,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount bpffs");
        Self { dir }
    }
}

impl Default for Bpffs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        // What fw-user kept about the firewall pinned here.
        let _ = std::fs::remove_dir_all(crate::fwcli::state_dir(
            &self.dir.join("fw").display().to_string(),
        ));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Two hosts on one link: the server (where fw runs) and a client.
pub struct Pair {
    pub client: Netns,
    pub server: Netns,
    pub server_if: String,
    pub client_if: String,
    pub bpffs: Bpffs,
    pub workdir: PathBuf,
    _peer: XdpPeer,
}

impl Pair {
    #[must_use]
    pub fn new() -> Self {
        Self::with_server_if(None)
    }

    /// A pair whose server interface has the name `server_if` (e.g.
    /// "eth0", for rulesets written for a real host); interface names are
    /// per namespace, so pairs side by side may share it.
    #[must_use]
    pub fn with_server_if(server_if: Option<&str>) -> Self {
        let server = Netns::new("fwt-srv-");
        let client = Netns::new("fwt-cli-");
        let tag = crate::unique("");
        let server_if = server_if.map_or_else(|| format!("s{tag}"), str::to_string);
        let client_if = format!("c{tag}");
        assert!(
            server_if.len() <= 15,
            "interface name too long: {server_if}"
        );
        ip(&[
            "link",
            "add",
            &server_if,
            "netns",
            &server.name,
            "type",
            "veth",
            "peer",
            "name",
            &client_if,
            "netns",
            &client.name,
        ]);
        for (ns, ifname, v4, v6) in [
            (&server, &server_if, SERVER4, SERVER6),
            (&client, &client_if, CLIENT4, CLIENT6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname]);
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"]);
            ns.ip(&["link", "set", ifname, "up"]);
        }
        let workdir = std::env::temp_dir().join(crate::unique("fw-test-"));
        std::fs::create_dir_all(&workdir).expect("workdir");
        let peer = XdpPeer::attach(&client, &client_if);
        let pair = Self {
            client,
            server,
            server_if,
            client_if,
            bpffs: Bpffs::new(),
            workdir,
            _peer: peer,
        };
        pair.wait_ipv6_ready();
        pair
    }

    /// Link-local addresses start tentative (DAD); wait until both ends
    /// can use IPv6.
    fn wait_ipv6_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for ns in [&self.server, &self.client] {
            while Instant::now() < deadline {
                let out = ns.exec(&["ip", "-6", "addr", "show", "tentative"]);
                if out.stdout.is_empty() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    #[must_use]
    pub fn pin_path(&self) -> String {
        self.bpffs.dir.join("fw").display().to_string()
    }

    /// Write `policy` to a file and return its path.
    #[must_use]
    pub fn policy_file(&self, name: &str, policy: &str) -> String {
        let path = self.workdir.join(name);
        std::fs::write(&path, policy).expect("write policy");
        path.display().to_string()
    }

    /// `fw-user load` of `policy` in the server namespace, guarding its veth.
    #[expect(
        clippy::must_use_candidate,
        reason = "callers often want only the side effect"
    )]
    pub fn load(&self, policy: &str) -> String {
        let file = self.policy_file(&crate::unique("policy-"), policy);
        self.load_file(&file)
    }

    /// The arguments of `fw-user load FILE` guarding the server's veth at
    /// this pair's pin path, with `extra` and the suite's backend.
    #[must_use]
    pub fn load_args(&self, file: &str, extra: &[&str]) -> Vec<String> {
        let pin = self.pin_path();
        let mut args: Vec<String> = ["load", file, "--iface", &self.server_if, "--pin-path", &pin]
            .iter()
            .chain(extra)
            .map(ToString::to_string)
            .collect();
        args.extend(crate::fwcli::backend_args());
        args
    }

    /// `fw-user load FILE` in the server namespace, guarding its veth.
    pub fn load_file(&self, file: &str) -> String {
        let args = self.load_args(file, &["--detach"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::fwcli::fw_user_ok(&self.server, &args)
    }

    #[expect(
        clippy::must_use_candidate,
        reason = "callers often want only the side effect"
    )]
    pub fn unload(&self) -> String {
        crate::fwcli::fw_user_ok(&self.server, &["unload", "--pin-path", &self.pin_path()])
    }

    #[expect(
        clippy::must_use_candidate,
        reason = "callers often want only the side effect"
    )]
    pub fn status(&self) -> String {
        crate::fwcli::fw_user_ok(&self.server, &["status", "--pin-path", &self.pin_path()])
    }

    /// `fw-user status --json`, parsed.
    #[must_use]
    pub fn status_json(&self) -> serde_json::Value {
        let out = crate::fwcli::fw_user_ok(
            &self.server,
            &["status", "--json", "--pin-path", &self.pin_path()],
        );
        serde_json::from_str(&out).expect("status --json is JSON")
    }

    /// Packets counted so far by counter `name` (e.g. `accept-rule`) in
    /// `direction` (`input` or `output`).
    #[must_use]
    pub fn counter(&self, direction: &str, name: &str) -> u64 {
        self.status_json()["counters"]
            .as_array()
            .expect("counters")
            .iter()
            .find(|c| c["direction"] == direction && c["name"] == name)
            .and_then(|c| c["packets"].as_u64())
            .unwrap_or_else(|| panic!("no counter {direction}/{name}"))
    }
}

impl Pair {
    /// Send `frames` from the client's interface to the server, with the
    /// two interfaces' real MAC addresses (the server's stack drops frames
    /// not addressed to it): for packets the client's stack would not
    /// build, such as ICMP errors about someone else's flow, spoofed SYNs
    /// or fragments cut by hand.
    pub fn send_to_server(&self, frames: &[Vec<u8>]) {
        let (src, dst) = (
            self.client.mac(&self.client_if),
            self.server.mac(&self.server_if),
        );
        let frames = frames
            .iter()
            .map(|f| crate::packet::with_macs(f, src, dst))
            .collect();
        send_frames(&self.client, &self.client_if, frames);
    }

    /// Both connection tables as pinned, read directly (not through
    /// `fw-user`): `(FW_CONNTRACK, FW_CT_TRANSIENT)`. A table without a pin
    /// reads as empty.
    #[must_use]
    pub fn pinned_tables(&self) -> (Vec<crate::datapath::Flow>, Vec<crate::datapath::Flow>) {
        let read = |name: &str| -> Vec<crate::datapath::Flow> {
            let Some(map) = self.pinned_map(name) else {
                return Vec::new();
            };
            let map: aya::maps::HashMap<
                _,
                fw_common::conntrack::CtKey,
                fw_common::conntrack::CtEntry,
            > = aya::maps::HashMap::try_from(map).expect("a hash map");
            map.iter().filter_map(Result::ok).collect()
        };
        (
            read(fw_common::maps::CONNTRACK),
            read(fw_common::maps::CT_TRANSIENT),
        )
    }

    /// `max_entries` of the pinned map `name`.
    #[must_use]
    pub fn pinned_capacity(&self, name: &str) -> u32 {
        let map = self
            .pinned_map(name)
            .unwrap_or_else(|| panic!("no pinned map {name}"));
        let (aya::maps::Map::HashMap(data) | aya::maps::Map::LruHashMap(data)) = &map else {
            panic!("{name} is not a hash map");
        };
        data.info().expect("map info").max_entries()
    }

    fn pinned_map(&self, name: &str) -> Option<aya::maps::Map> {
        let path = std::path::Path::new(&self.pin_path())
            .join("maps")
            .join(name);
        let data = aya::maps::MapData::from_pin(&path).ok()?;
        Some(aya::maps::Map::from_map_data(data).expect("pinned map"))
    }

    /// `fw-user conntrack list --json`, parsed.
    #[must_use]
    pub fn conntrack_list_json(&self) -> serde_json::Value {
        let out = crate::fwcli::fw_user_ok(
            &self.server,
            &[
                "conntrack",
                "list",
                "--json",
                "--pin-path",
                &self.pin_path(),
            ],
        );
        serde_json::from_str(&out).expect("conntrack list --json is JSON")
    }

    /// `fw-user load FILE` in the foreground (as a service runs it), in the
    /// server namespace, guarding its veth; returns once the policy is in
    /// place and attached.
    #[must_use]
    pub fn load_foreground(&self, file: &str) -> Foreground {
        self.load_foreground_with(file, &[])
    }

    /// `load_foreground` with more arguments (`--json`, `--metrics …`).
    #[must_use]
    pub fn load_foreground_with(&self, file: &str, extra: &[&str]) -> Foreground {
        let mut args = vec!["load", file, "--iface", &self.server_if, "--pin-path"];
        let pin = self.pin_path();
        args.push(&pin);
        args.extend_from_slice(extra);
        self.spawn_fw_user(&args).wait_for_line(
            &["loaded policy", "replaced the running policy"],
            Duration::from_secs(20),
        )
    }

    /// Start `fw-user ARGS` in the server namespace, its stdout read line
    /// by line into the returned handle.
    #[must_use]
    pub fn spawn_fw_user(&self, args: &[&str]) -> Foreground {
        let mut child = crate::fwcli::in_netns(&self.server)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn fw-user");
        // `ip netns exec` execs the command: the child is fw-user itself.
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            thread::spawn(move || {
                use std::io::BufRead as _;
                for line in std::io::BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Foreground {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }
}

/// `fw-user load` running in the foreground; killed (SIGKILL) if still
/// running when dropped.
pub struct Foreground {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Foreground {
    /// Wait until fw-user prints a line containing one of `needles` and
    /// then says where it pinned (its last line when a load is done).
    fn wait_for_line(mut self, needles: &[&str], timeout: Duration) -> Self {
        let deadline = Instant::now() + timeout;
        let mut loaded = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    loaded |= needles.iter().any(|n| line.contains(n));
                    let done = loaded && line.contains("pinned at");
                    self.seen.push(line);
                    if done {
                        return self;
                    }
                }
                Err(err) => panic!(
                    "fw-user load did not finish loading within {timeout:?} ({err}); it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Wait until a line contains `needle`; returns it.
    ///
    /// # Panics
    /// Nothing like it comes within `timeout`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(err) => panic!(
                    "fw-user printed no line with {needle:?} within {timeout:?} ({err}); it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The lines printed until now and over the next `quiet` (waiting
    /// until no line has come for that long).
    pub fn lines_until_quiet(&mut self, quiet: Duration) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            self.seen.push(line.clone());
            out.push(line);
        }
        out
    }

    /// Has the process exited? Its status if so.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Every line seen so far.
    #[must_use]
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// The process id (fw-user's own: `ip netns exec` execs it).
    #[must_use]
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"))
    }

    /// Send `signal` and wait for the process to end.
    #[must_use]
    pub fn stop(mut self, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
        nix::sys::signal::kill(self.pid(), signal).expect("signal fw-user");
        self.child.wait().expect("wait for fw-user")
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Default for Pair {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // Namespaces go first (with the veths and what was attached to
        // them, iptables rules included); the bpffs field is dropped after
        // this and unmounts. The iptables backend's state file is outside
        // both.
        let _ = std::fs::remove_dir_all(&self.workdir);
        let layout = fw_user::pin::PinLayout::new(self.pin_path());
        let _ = std::fs::remove_file(fw_user::backend::iptables::state_path(&layout));
        let _ = std::fs::remove_file(fw_user::events::lock_path(&layout.root));
    }
}

#[must_use]
pub fn server_addr(v6: bool, port: u16) -> SocketAddr {
    if v6 {
        SocketAddr::new(IpAddr::V6(SERVER6), port)
    } else {
        SocketAddr::new(IpAddr::V4(SERVER4), port)
    }
}

#[must_use]
pub fn client_addr(v6: bool, port: u16) -> SocketAddr {
    if v6 {
        SocketAddr::new(IpAddr::V6(CLIENT6), port)
    } else {
        SocketAddr::new(IpAddr::V4(CLIENT4), port)
    }
}

/// A TCP and UDP echo server on `port` (all addresses, v4 and v6), inside
/// a namespace; stops when dropped.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl EchoServer {
    #[must_use]
    pub fn start(ns: &Netns, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let s = stop.clone();
        let tcp = ns.spawn(move || {
            let listener =
                TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))
                    .expect("bind tcp");
            listener.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            let mut conns: Vec<thread::JoinHandle<()>> = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let s2 = s.clone();
                        conns.push(thread::spawn(move || {
                            if let Ok(out) = stream.try_clone() {
                                pump(stream, out, &s2);
                            }
                        }));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        rx.recv().expect("tcp echo server started");
        let (tx, rx) = std::sync::mpsc::channel();
        let s = stop.clone();
        let udp = ns.spawn(move || {
            let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))
                .expect("bind udp");
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            tx.send(()).unwrap();
            // Room for a datagram of any size: tests send some larger than
            // the MTU, which arrive in fragments.
            let mut buf = vec![0u8; 65_536];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        rx.recv().expect("udp echo server started");
        Self {
            stop,
            threads: vec![tcp, udp],
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How a TCP connection attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Connect {
    /// Connected and a message came back.
    Echoed,
    /// Nothing came back (dropped).
    TimedOut,
    /// An RST came back.
    Refused,
    Other(String),
}

/// Send a message on a connected stream and check it comes back.
fn echo(mut s: TcpStream, timeout: Duration) -> Connect {
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    match s.read_exact(&mut buf) {
        Ok(()) if &buf == b"ping" => Connect::Echoed,
        Ok(()) => Connect::Other("wrong echo".into()),
        Err(e) => Connect::Other(format!("read: {e}")),
    }
}

/// Copy `from` to `to` until either end closes or `stop` is set, then
/// close `to` for writing. An echo pumps a connection into itself; a
/// relay pumps each way.
pub fn pump(mut from: TcpStream, mut to: TcpStream, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// From inside `ns`, connect to `to`, send a message and read the echo.
#[must_use]
pub fn tcp_probe(ns: &Netns, to: SocketAddr, timeout: Duration) -> Connect {
    ns.run(move || match TcpStream::connect_timeout(&to, timeout) {
        Ok(s) => echo(s, timeout),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Connect::TimedOut,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Connect::Refused,
        Err(e) => Connect::Other(e.to_string()),
    })
}

/// From inside `ns`, send a UDP datagram to `to` and wait for the echo.
#[must_use]
pub fn udp_probe(ns: &Netns, to: SocketAddr, timeout: Duration) -> bool {
    udp_exchange(ns, to, timeout) == Datagram::Answered
}

/// An open TCP connection from inside a namespace, usable across reloads.
pub struct Session {
    stream: TcpStream,
}

impl Session {
    #[must_use]
    pub fn open(ns: &Netns, to: SocketAddr) -> Self {
        let stream = ns.run(move || {
            TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("session connect")
        });
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        Self { stream }
    }

    /// The client's end of the connection.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    /// The server's end of the connection.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.stream.peer_addr().expect("peer address")
    }

    /// Send a message and expect it echoed.
    #[must_use]
    pub fn echo(&mut self, msg: &[u8]) -> bool {
        if self.stream.write_all(msg).is_err() {
            return false;
        }
        let mut buf = vec![0u8; msg.len()];
        self.stream.read_exact(&mut buf).is_ok() && buf == msg
    }
}

/// `ping -c1` from inside `ns`.
#[must_use]
pub fn ping(ns: &Netns, to: IpAddr) -> bool {
    let to = to.to_string();
    ns.exec(&["ping", "-c", "1", "-W", "1", &to])
        .status
        .success()
}

/// From inside `ns`, send a bare TCP ACK (no connection) to `to` over a
/// raw socket and report whether any TCP segment (an RST) comes back
/// within `wait`.
#[must_use]
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "libc socket structures: sizes and lengths are small and checked"
)]
pub fn ack_probe_answered(
    ns: &Netns,
    from: Ipv4Addr,
    to: std::net::SocketAddrV4,
    wait: Duration,
) -> bool {
    ns.run(move || {
        // SAFETY: plain socket syscalls on a descriptor we own.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let sport: u16 = 40_000 + (std::process::id() % 20_000) as u16;
            let mut tcp = etherparse::TcpHeader::new(sport, to.port(), 12_345, 64_240);
            tcp.ack = true;
            tcp.acknowledgment_number = 54_321;
            tcp.checksum = tcp
                .calc_checksum_ipv4_raw(from.octets(), to.ip().octets(), &[])
                .unwrap();
            let bytes = tcp.to_bytes();
            let dst = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(to.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            let sent = libc::sendto(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&raw const dst).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            assert!(sent > 0, "sendto: {}", std::io::Error::last_os_error());
            let deadline = Instant::now() + wait;
            let mut answered = false;
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            let mut buf = [0u8; 1500];
            while Instant::now() < deadline {
                let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if n < 20 {
                    continue;
                }
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                let n = n as usize;
                if n < ihl + 14 {
                    continue;
                }
                let seg = &buf[ihl..n];
                let (s, d) = (
                    u16::from_be_bytes([seg[0], seg[1]]),
                    u16::from_be_bytes([seg[2], seg[3]]),
                );
                if s == to.port() && d == sport {
                    answered = true;
                    break;
                }
            }
            libc::close(fd);
            answered
        }
    })
}

/// Send one raw Ethernet frame out of `iface` inside `ns` (`AF_PACKET`):
/// for frames the stack would not build itself, such as VLAN-tagged ones
/// on a kernel without 802.1Q devices.
pub fn send_frame(ns: &Netns, iface: &str, frame: Vec<u8>) {
    let iface = iface.to_string();
    ns.run(move || {
        let index = nix::net::if_::if_nametoindex(iface.as_str()).expect("interface index");
        // SAFETY: plain socket syscalls on a descriptor we own.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = u16::try_from(libc::AF_PACKET).unwrap();
            addr.sll_ifindex = i32::try_from(index).unwrap();
            addr.sll_halen = 6;
            let sent = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap(),
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            assert_eq!(
                usize::try_from(sent).ok(),
                Some(frame.len()),
                "sendto: {err}"
            );
        }
    });
}

/// Send raw Ethernet frames out of `iface` inside `ns` through one
/// `AF_PACKET` socket (floods, fragments). Bounded by the caller.
pub fn send_frames(ns: &Netns, iface: &str, frames: Vec<Vec<u8>>) {
    let iface = iface.to_string();
    ns.run(move || {
        let index = nix::net::if_::if_nametoindex(iface.as_str()).expect("interface index");
        // SAFETY: plain socket syscalls on a descriptor we own.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = u16::try_from(libc::AF_PACKET).unwrap();
            addr.sll_ifindex = i32::try_from(index).unwrap();
            addr.sll_halen = 6;
            for frame in &frames {
                loop {
                    let sent = libc::sendto(
                        fd,
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&raw const addr).cast(),
                        u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap(),
                    );
                    if usize::try_from(sent).ok() == Some(frame.len()) {
                        break;
                    }
                    let err = std::io::Error::last_os_error();
                    // The device queue is full: let it drain.
                    assert_eq!(err.raw_os_error(), Some(libc::ENOBUFS), "sendto: {err}");
                    thread::sleep(Duration::from_millis(1));
                }
            }
            libc::close(fd);
        }
    });
}

/// Every frame seen on an interface from the moment it is created
/// (`AF_PACKET`, both directions), to learn what a real stack sent: for
/// instance the sequence number an ICMP error must quote.
pub struct Capture {
    fd: std::os::fd::OwnedFd,
}

impl Capture {
    #[must_use]
    pub fn start(ns: &Netns, iface: &str) -> Self {
        let iface = iface.to_string();
        let fd = ns.run(move || {
            let index = nix::net::if_::if_nametoindex(iface.as_str()).expect("interface index");
            let all = u16::try_from(libc::ETH_P_ALL).unwrap().to_be();
            // SAFETY: plain socket syscalls; the descriptor is wrapped at once.
            unsafe {
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all));
                assert!(
                    fd >= 0,
                    "packet socket: {}",
                    std::io::Error::last_os_error()
                );
                let fd = <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd);
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                addr.sll_family = u16::try_from(libc::AF_PACKET).unwrap();
                addr.sll_protocol = all;
                addr.sll_ifindex = i32::try_from(index).unwrap();
                let rc = libc::bind(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    (&raw const addr).cast(),
                    u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap(),
                );
                assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
                fd
            }
        });
        Self { fd }
    }

    /// The frames captured so far.
    #[must_use]
    pub fn frames(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            // SAFETY: recv into a buffer we own, on a descriptor we own.
            let n = unsafe {
                libc::recv(
                    std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                return out;
            };
            out.push(buf[..n].to_vec());
        }
    }
}

/// From inside `ns`, send a datagram of `len` bytes on a connected UDP
/// socket and return the size of what came back, if anything did.
#[must_use]
pub fn udp_exchange_len(
    ns: &Netns,
    to: SocketAddr,
    len: usize,
    timeout: Duration,
) -> Option<usize> {
    ns.run(move || {
        let any: SocketAddr = if to.is_ipv6() {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
        } else {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        };
        let sock = UdpSocket::bind(any).unwrap();
        sock.connect(to).unwrap();
        sock.set_read_timeout(Some(timeout)).unwrap();
        sock.send(&crate::packet::payload(len)).unwrap();
        let mut buf = vec![0u8; 65_536];
        sock.recv(&mut buf).ok()
    })
}

/// Like `tcp_probe`, from a chosen local address and port (port 0: any).
#[must_use]
pub fn tcp_probe_from(ns: &Netns, local: SocketAddr, to: SocketAddr, timeout: Duration) -> Connect {
    ns.run(move || {
        let domain = if to.is_ipv6() {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        };
        let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("socket");
        sock.set_reuse_address(true).unwrap();
        sock.bind(&local.into())
            .unwrap_or_else(|e| panic!("bind {local}: {e}"));
        match sock.connect_timeout(&to.into(), timeout) {
            Ok(()) => echo(sock.into(), timeout),
            Err(e)
                if e.kind() == std::io::ErrorKind::TimedOut
                    || e.raw_os_error() == Some(libc::EINPROGRESS) =>
            {
                Connect::TimedOut
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Connect::Refused,
            Err(e) => Connect::Other(e.to_string()),
        }
    })
}

/// How a UDP exchange ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Datagram {
    Answered,
    /// Nothing came back.
    Silent,
    /// An ICMP error came back (the connected socket reports it).
    Refused,
    Other(String),
}

/// From inside `ns`, send a datagram on a connected UDP socket and report
/// what came back, including an ICMP error.
#[must_use]
pub fn udp_exchange(ns: &Netns, to: SocketAddr, timeout: Duration) -> Datagram {
    let any: SocketAddr = if to.is_ipv6() {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    };
    udp_exchange_from(ns, any, to, timeout)
}

/// `udp_exchange` from a chosen local address and port.
#[must_use]
pub fn udp_exchange_from(
    ns: &Netns,
    local: SocketAddr,
    to: SocketAddr,
    timeout: Duration,
) -> Datagram {
    ns.run(move || {
        let domain = if to.is_ipv6() {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        };
        let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, None).expect("socket");
        sock.set_reuse_address(true).unwrap();
        sock.bind(&local.into())
            .unwrap_or_else(|e| panic!("bind {local}: {e}"));
        let sock: UdpSocket = sock.into();
        sock.connect(to).unwrap();
        sock.set_read_timeout(Some(timeout)).unwrap();
        match sock.send(b"ping") {
            Ok(_) => {}
            // The host's own firewall refused the datagram on its way out:
            // iptables (OUTPUT) tells the sender at once with EPERM, where
            // the eBPF datapath answers with an ICMP error.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Datagram::Refused;
            }
            Err(e) => panic!("send to {to}: {e}"),
        }
        let mut buf = [0u8; 16];
        match sock.recv(&mut buf) {
            Ok(4) => Datagram::Answered,
            Ok(n) => Datagram::Other(format!("{n} bytes")),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Datagram::Silent
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    || e.raw_os_error() == Some(libc::EHOSTUNREACH) =>
            {
                Datagram::Refused
            }
            Err(e) => Datagram::Other(e.to_string()),
        }
    })
}

/// `fw_pass` attached to `ifname` inside `ns`, for as long as this lives.
/// A veth only delivers `XDP_TX` frames (fw's REJECT replies) to a peer
/// running XDP; this makes the test peer one.
pub struct XdpPeer {
    _ebpf: aya::Ebpf,
}

impl XdpPeer {
    #[must_use]
    pub fn attach(ns: &Netns, ifname: &str) -> Self {
        let ifname = ifname.to_string();
        let ebpf = ns.run(move || {
            let mut ebpf =
                aya::Ebpf::load(fw_user::backend::EBPF_OBJECT).expect("load kernel object");
            let prog: &mut aya::programs::Xdp = ebpf
                .program_mut(fw_common::maps::PROG_PASS)
                .unwrap()
                .try_into()
                .unwrap();
            prog.load().expect("load fw_pass");
            prog.attach(&ifname, aya::programs::XdpMode::Driver)
                .expect("attach fw_pass");
            ebpf
        });
        Self { _ebpf: ebpf }
    }
}

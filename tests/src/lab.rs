//! Multi-host test networks: LANs are bridges in "switch" namespaces,
//! hosts are namespaces whose interfaces (named `eth0`, `eth1` … inside
//! them, as on real servers) are veths plugged into those bridges. All of
//! it is removed when the `Lab` is dropped.

use std::collections::HashMap;

use crate::netns::{Bpffs, Netns};

pub struct Lab {
    /// `fw_pass`, loaded once and attached to every bridge port (see
    /// `plug`); loading the kernel object once per port costs a quarter
    /// of a second each, which adds up in labs of a dozen hosts.
    pass: Option<aya::Ebpf>,
    hosts: HashMap<String, Netns>,
    lans: HashMap<String, Netns>,
    pub bpffs: Bpffs,
    workdir: std::path::PathBuf,
}

impl Lab {
    #[must_use]
    pub fn new() -> Self {
        let workdir = std::env::temp_dir().join(crate::unique("fw-lab-"));
        std::fs::create_dir_all(&workdir).expect("lab workdir");
        Self {
            pass: None,
            hosts: HashMap::new(),
            lans: HashMap::new(),
            bpffs: Bpffs::new(),
            workdir,
        }
    }

    /// A LAN: a bridge in its own namespace.
    pub fn lan(&mut self, name: &str) {
        let sw = Netns::new("fwt-lan-");
        sw.ip(&["link", "add", "br0", "type", "bridge"]);
        sw.ip(&["link", "set", "br0", "up"]);
        self.lans.insert(name.to_string(), sw);
    }

    /// Plug `host` (created on first use) into `lan` as interface `ifname`
    /// with the given addresses (CIDR notation).
    pub fn plug(&mut self, host: &str, ifname: &str, lan: &str, addrs: &[&str]) {
        if !self.hosts.contains_key(host) {
            self.hosts.insert(host.to_string(), Netns::new("fwt-host-"));
        }
        let h = &self.hosts[host];
        let sw = &self.lans[lan];
        let tag = crate::unique("");
        let (a, b) = (format!("h{tag}"), format!("p{tag}"));
        let out = std::process::Command::new("ip")
            .args([
                "link", "add", &a, "netns", &h.name, "type", "veth", "peer", "name", &b, "netns",
                &sw.name,
            ])
            .output()
            .expect("ip link add");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        h.ip(&["link", "set", &a, "name", ifname]);
        for addr in addrs {
            let mut args = vec!["addr", "add", addr, "dev", ifname];
            if addr.contains(':') {
                args.push("nodad");
            }
            h.ip(&args);
        }
        h.ip(&["link", "set", ifname, "up"]);
        sw.ip(&["link", "set", &b, "master", "br0"]);
        sw.ip(&["link", "set", &b, "up"]);
        // So REJECT replies sent with XDP_TX reach the bridge: a veth
        // only delivers them to a peer running XDP (as `XdpPeer` does for
        // a pair). One program serves every port; the attachment is made
        // from inside the switch's namespace, where the port lives.
        let mut ebpf = self.pass.take().unwrap_or_else(|| {
            let mut ebpf =
                aya::Ebpf::load(fw_user::backend::EBPF_OBJECT).expect("load kernel object");
            let prog: &mut aya::programs::Xdp = ebpf
                .program_mut(fw_common::maps::PROG_PASS)
                .expect("fw_pass")
                .try_into()
                .expect("an XDP program");
            prog.load().expect("load fw_pass");
            ebpf
        });
        let ebpf = sw.run(move || {
            let prog: &mut aya::programs::Xdp = ebpf
                .program_mut(fw_common::maps::PROG_PASS)
                .expect("fw_pass")
                .try_into()
                .expect("an XDP program");
            prog.attach(&b, aya::programs::XdpMode::Driver)
                .expect("attach fw_pass");
            ebpf
        });
        self.pass = Some(ebpf);
    }

    #[must_use]
    pub fn host(&self, name: &str) -> &Netns {
        &self.hosts[name]
    }

    /// `fw-user load FILE` on `host`, guarding `ifaces`.
    pub fn load(&self, host: &str, file: &str, ifaces: &[&str]) -> String {
        let pin = self.bpffs.dir.join(host).display().to_string();
        let mut args = vec!["load", file, "--pin-path", &pin, "--detach"];
        for i in ifaces {
            args.extend_from_slice(&["--iface", i]);
        }
        let backend = crate::fwcli::backend_args();
        args.extend(backend.iter().map(String::as_str));
        crate::fwcli::fw_user_ok(self.host(host), &args)
    }

    /// Write a file into the lab's scratch directory.
    #[must_use]
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.workdir.join(name);
        std::fs::write(&p, text).expect("write lab file");
        p.display().to_string()
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.workdir);
        // The iptables backend's state files of the hosts (their rules went
        // with their namespaces).
        for host in self.hosts.keys() {
            let layout = fw_user::pin::PinLayout::new(self.bpffs.dir.join(host));
            let _ = std::fs::remove_file(fw_user::backend::iptables::state_path(&layout));
            let _ = std::fs::remove_dir_all(crate::fwcli::state_dir(
                &layout.root.display().to_string(),
            ));
        }
    }
}

/// Path of an example policy shipped in `examples/`.
#[must_use]
pub fn example(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    p.canonicalize()
        .unwrap_or_else(|e| panic!("examples/{name}: {e}"))
        .display()
        .to_string()
}

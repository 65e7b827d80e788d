//! xdp-filter's own kernel program, as Debian ships it (package libxdp1,
//! which xdp-tools depends on: `xdpfilt_{alw,dny}_all.o`), loaded with
//! aya and its maps filled the way `xdp-filter port` and `xdp-filter ip`
//! fill them. Nothing is attached anywhere: the bench only test-runs it.
//!
//! What xdp-filter can say, from its source (`xdp-filter/xdpfilt_prog.h`):
//! one default (`alw` objects pass what no entry names, `dny` objects drop
//! it), then exact matches in one hash or array per field (Ethernet
//! address, IPv4 address, IPv6 address, TCP/UDP port), each entry flagged
//! source and/or destination. No state, no prefixes, no rule combining an
//! address with a port, no rule order.

use std::{
    net::Ipv4Addr,
    os::fd::{AsFd as _, BorrowedFd},
    path::PathBuf,
    process::Command,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{PerCpuArray, PerCpuHashMap, PerCpuValues},
    programs::Xdp,
};

use crate::netns::Bpffs;

// From xdp-filter/common_kern_user.h.
const MAP_FLAG_SRC: u64 = 1 << 0;
const MAP_FLAG_DST: u64 = 1 << 1;
const MAP_FLAG_TCP: u64 = 1 << 2;
/// `filter_ipv4`'s `max_entries` in the shipped object.
pub const IPV4_ENTRIES: usize = 10_000;

/// Which default the program applies to what no entry names.
#[derive(Clone, Copy, Debug)]
pub enum DefaultVerdict {
    /// `xdp-filter load --policy allow` (`alw` object): what no entry
    /// names passes, listed entries drop.
    Pass,
    /// `xdp-filter load --policy deny` (`dny` object): what no entry names
    /// drops, listed entries pass.
    Drop,
}

impl DefaultVerdict {
    const fn object(self) -> &'static str {
        match self {
            Self::Pass => "xdpfilt_alw_all",
            Self::Drop => "xdpfilt_dny_all",
        }
    }
}

/// One loaded copy of the program with private maps.
pub struct XdpFilter {
    ebpf: Ebpf,
    /// The objects pin their maps by name (`LIBBPF_PIN_BY_NAME`); a bpffs
    /// of our own keeps them out of the host's /sys/fs/bpf and away from a
    /// real xdp-filter's maps. Declared after `ebpf`: dropped last.
    _bpffs: Bpffs,
}

/// Where the package put `NAME.o`: asked of dpkg, then the usual places.
fn object_path(name: &str) -> Result<PathBuf, String> {
    let file = format!("{name}.o");
    let listed = Command::new("dpkg")
        .args(["-L", "libxdp1", "xdp-tools"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let from_dpkg = listed
        .lines()
        .filter(|l| l.ends_with(&format!("/{file}")))
        .map(PathBuf::from);
    let usual = [
        "/usr/lib/x86_64-linux-gnu/bpf",
        "/usr/lib/aarch64-linux-gnu/bpf",
        "/usr/lib/bpf",
        "/usr/share/xdp-tools",
    ]
    .iter()
    .map(|d| PathBuf::from(d).join(&file));
    from_dpkg.chain(usual).find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "{file} not found (dpkg -L libxdp1 xdp-tools, /usr/lib/*/bpf): install xdp-tools (`cargo xtask setup`)"
        )
    })
}

impl XdpFilter {
    /// Load the object for `default` from the package, maps empty.
    ///
    /// # Errors
    /// The package is not installed, or aya or the verifier refused it.
    pub fn load(default: DefaultVerdict) -> Result<Self, String> {
        let name = default.object();
        let path = object_path(name)?;
        let bpffs = Bpffs::new();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&bpffs.dir)
            .load_file(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("{}: no program {name}", path.display()))?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        prog.load().map_err(|e| format!("{name}: {e}"))?;
        Ok(Self {
            ebpf,
            _bpffs: bpffs,
        })
    }

    fn per_cpu(flags: u64) -> PerCpuValues<u64> {
        let cpus = aya::util::nr_cpus().expect("possible CPUs");
        PerCpuValues::try_from(vec![flags; cpus]).expect("one value per CPU")
    }

    /// `xdp-filter port P --mode dst --proto tcp` for each port.
    pub fn tcp_dst_ports(&mut self, ports: impl IntoIterator<Item = u16>) {
        let map = self.ebpf.map_mut("filter_ports").expect("filter_ports");
        let mut map: PerCpuArray<_, u64> = PerCpuArray::try_from(map).expect("a per-CPU array");
        for p in ports {
            // The program looks up the port as it sits in the header:
            // network byte order read as a native integer.
            map.set(
                u32::from(p.to_be()),
                Self::per_cpu(MAP_FLAG_DST | MAP_FLAG_TCP),
                0,
            )
            .expect("set filter_ports");
        }
    }

    /// `xdp-filter ip A --mode src` for each address, up to the map's
    /// capacity; returns how many went in.
    pub fn src_addresses(&mut self, addrs: impl IntoIterator<Item = Ipv4Addr>) -> usize {
        let map = self.ebpf.map_mut("filter_ipv4").expect("filter_ipv4");
        let mut map: PerCpuHashMap<_, u32, u64> =
            PerCpuHashMap::try_from(map).expect("a per-CPU hash");
        let mut n = 0;
        for a in addrs.into_iter().take(IPV4_ENTRIES) {
            map.insert(
                u32::from_ne_bytes(a.octets()),
                Self::per_cpu(MAP_FLAG_SRC),
                0,
            )
            .expect("insert into filter_ipv4");
            n += 1;
        }
        n
    }

    /// The loaded program, for `BPF_PROG_TEST_RUN`.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        let name = self
            .ebpf
            .programs()
            .map(|(n, _)| n)
            .next()
            .expect("one program");
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .expect("the program")
            .try_into()
            .expect("an XDP program");
        prog.fd().expect("loaded").as_fd()
    }
}

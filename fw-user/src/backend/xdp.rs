//! The eBPF backend: load, reload, attach, detach and inspect a firewall
//! whose programs, maps and links are pinned under a `PinLayout`.
//!
//! Safety of operation: on a first load nothing is attached until the
//! policy is in the maps; on a reload the new policy is written beside the
//! old one and switched in with one map write, and any failure puts the old
//! one back. The host is never left half-configured.

use std::{collections::BTreeSet, fs, io, path::Path};

use aya::{
    EbpfLoader,
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc,
    },
};
use aya_obj::programs::XdpAttachType;
use fw_common::{config::ABI_VERSION, maps};
use serde::Serialize;

use super::{EBPF_OBJECT, conntrack::CtTable, maps::FwMaps};
use crate::{
    adopt,
    error::{Error, Result},
    pin::PinLayout,
    policy::CompiledPolicy,
};

/// What `load` did, for the user.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    /// `false`: a running firewall's policy was replaced.
    pub fresh: bool,
    pub generation: u32,
    pub attached: Vec<Attachment>,
    pub detached: Vec<String>,
    pub adopted_connections: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Attachment {
    pub iface: String,
    /// `native` or `generic`.
    pub xdp_mode: String,
    /// `tcx` or `netlink`.
    pub tc_mode: String,
}

fn pin_err(what: String) -> impl FnOnce(aya::pin::PinError) -> Error {
    move |e| Error::bpf(what, e)
}

/// Load `compiled` into the firewall at `layout`, installing it first if
/// needed, and make `ifaces` exactly the guarded interfaces.
///
/// # Errors
/// Anything that prevented the whole policy from taking effect; the state
/// before the call is then restored.
pub fn load(
    layout: &PinLayout,
    compiled: &CompiledPolicy,
    ifaces: &[String],
) -> Result<LoadReport> {
    let fresh = !layout.is_installed();
    if !fresh {
        // Everything that can refuse a reload is checked before anything
        // changes.
        let maps = open_loaded(layout)?;
        check_table_size(&maps, compiled)?;
    }
    let result = if fresh {
        install(layout, compiled, ifaces)
    } else {
        reload(layout, compiled, ifaces)
    };
    if result.is_err() && fresh {
        // Nothing of a failed first load may stay behind.
        let _ = remove_all(layout);
    }
    result
}

/// Open the maps of the firewall at `layout`, making sure one is there
/// and that it was written with this fw's map layout.
///
/// # Errors
/// `NotLoaded`, `AbiMismatch`, or a map that cannot be opened.
pub fn open_loaded(layout: &PinLayout) -> Result<FwMaps> {
    if !layout.is_installed() {
        return Err(Error::NotLoaded(layout.root.clone()));
    }
    let found = FwMaps::pinned_abi(&layout.maps_dir())?;
    if found != ABI_VERSION {
        return Err(Error::AbiMismatch {
            path: layout.root.clone(),
            found,
            expected: ABI_VERSION,
        });
    }
    FwMaps::open_pinned(&layout.maps_dir())
}

/// The connection tables were sized at first load and a BPF map cannot be
/// resized: a policy asking another size must not half-apply.
fn check_table_size(maps: &FwMaps, compiled: &CompiledPolicy) -> Result<()> {
    for table in CtTable::ALL {
        let running = maps.ct_capacity(table)?;
        if running != compiled.ct_max_entries {
            return Err(Error::CtSizeFixed {
                running,
                asked: compiled.ct_max_entries,
                asked_note: if compiled.ct_max_entries_set {
                    ""
                } else {
                    " (the default: it sets no `[conntrack] max_entries`)"
                },
            });
        }
    }
    Ok(())
}

fn install(layout: &PinLayout, compiled: &CompiledPolicy, ifaces: &[String]) -> Result<LoadReport> {
    for dir in [layout.maps_dir(), layout.progs_dir(), layout.links_dir()] {
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create `{}`", dir.display()), e))?;
    }
    let map_paths: Vec<_> = maps::ALL
        .iter()
        .map(|m| (*m, layout.maps_dir().join(m)))
        .collect();
    let mut loader = EbpfLoader::new();
    for (name, path) in &map_paths {
        loader.map_pin_path(name, path.as_path());
    }
    // `[conntrack] max_entries`: fixed from here until `unload`.
    for table in CtTable::ALL {
        loader.map_max_entries(table.map_name(), compiled.ct_max_entries);
    }
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(|e| match &e {
        aya::EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. })
            if io_error.raw_os_error() == Some(libc::EPERM) =>
        {
            Error::Privileges {
                action: "create BPF maps",
            }
        }
        _ => Error::bpf("cannot load the kernel programs", e),
    })?;
    load_programs(&mut ebpf)?;
    for name in maps::XDP_PROGS {
        let xdp: &mut Xdp = program(&mut ebpf, name)?;
        xdp.pin(layout.prog(name))
            .map_err(pin_err(format!("cannot pin the XDP program `{name}`")))?;
    }
    for name in maps::TC_PROGS {
        let tc: &mut SchedClassifier = program(&mut ebpf, name)?;
        tc.pin(layout.prog(name))
            .map_err(pin_err(format!("cannot pin the TC program `{name}`")))?;
    }
    let mut fw_maps = FwMaps::take_from(&mut ebpf)?;
    fill_jump_table(&mut ebpf, &mut fw_maps)?;
    let generation = fw_maps.install(compiled)?;
    let adopted_connections = fw_maps.adopt(&adopt::established_connections(
        fw_maps.datapath_now()?,
        &compiled.header.ct_timeouts,
    ))?;
    let attached = attach_all(layout, ifaces)?;
    Ok(LoadReport {
        fresh: true,
        generation,
        attached,
        detached: Vec::new(),
        adopted_connections,
    })
}

/// Load (verify) the firewall's programs of `ebpf` into the kernel.
///
/// # Errors
/// The verifier rejected a program; the error carries its log.
pub fn load_programs(ebpf: &mut aya::Ebpf) -> Result<()> {
    for name in maps::XDP_PROGS {
        let xdp: &mut Xdp = program(ebpf, name)?;
        xdp.load()
            .map_err(|e| Error::bpf(format!("the kernel rejected the XDP program `{name}`"), e))?;
    }
    for name in maps::TC_PROGS {
        let tc: &mut SchedClassifier = program(ebpf, name)?;
        tc.load()
            .map_err(|e| Error::bpf(format!("the kernel rejected the TC program `{name}`"), e))?;
    }
    Ok(())
}

/// Point the tail-call slots at the rules stage and the REJECT reply
/// programs.
///
/// # Errors
/// A program is not loaded, or the map write failed.
pub fn fill_jump_table(ebpf: &mut aya::Ebpf, fw_maps: &mut FwMaps) -> Result<()> {
    let fail = |e| Error::bpf("cannot fill the jump tables", e);
    let no_fd = |name: &str| {
        let name = name.to_owned();
        move |e| Error::bpf(format!("the program `{name}` has no descriptor"), e)
    };
    for (slot, name) in [
        (maps::JUMP_RULES, maps::PROG_INGRESS_RULES),
        (maps::JUMP_REJECT, maps::PROG_INGRESS_REJECT),
    ] {
        let xdp: &mut Xdp = program(ebpf, name)?;
        let fd = xdp.fd().map_err(no_fd(name))?;
        fw_maps.jump_xdp.set(slot, fd, 0).map_err(fail)?;
    }
    for (slot, name) in [
        (maps::JUMP_RULES, maps::PROG_EGRESS_RULES),
        (maps::JUMP_REJECT, maps::PROG_EGRESS_REJECT),
    ] {
        let tc: &mut SchedClassifier = program(ebpf, name)?;
        let fd = tc.fd().map_err(no_fd(name))?;
        fw_maps.jump_tc.set(slot, fd, 0).map_err(fail)?;
    }
    Ok(())
}

fn program<'a, T>(ebpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or_else(|| {
        Error::bpf(
            format!("program `{name}` is missing from the kernel object"),
            io::Error::from(io::ErrorKind::NotFound),
        )
    })?;
    prog.try_into()
        .map_err(|e| Error::bpf(format!("program `{name}` has an unexpected type"), e))
}

fn reload(layout: &PinLayout, compiled: &CompiledPolicy, ifaces: &[String]) -> Result<LoadReport> {
    let mut fw_maps = FwMaps::open_pinned(&layout.maps_dir())?;
    let generation = fw_maps.install(compiled)?;
    let now = fw_maps.datapath_now()?;
    let adopted_connections = fw_maps.adopt(&adopt::established_connections(
        now,
        &compiled.header.ct_timeouts,
    ))?;
    let current = attached_ifaces(layout)?;
    let wanted: BTreeSet<String> = ifaces.iter().cloned().collect();
    let to_attach: Vec<String> = wanted.difference(&current).cloned().collect();
    let attached = match attach_all(layout, &to_attach) {
        Ok(a) => a,
        Err(e) => {
            // attach_all detached what it attached; restore the old policy.
            let _ = fw_maps.flip_back();
            return Err(e);
        }
    };
    let mut detached = Vec::new();
    for iface in current.difference(&wanted) {
        detach(layout, iface)?;
        detached.push(iface.clone());
    }
    // The new policy is in force: counters of rules it dropped go (a
    // packet still in flight under the old one may bring one back until
    // the next reload, which is harmless).
    fw_maps.prune_rule_stats(compiled)?;
    Ok(LoadReport {
        fresh: false,
        generation,
        attached,
        detached,
        adopted_connections,
    })
}

/// Attach both programs to every interface; on failure detach the ones
/// this call attached.
fn attach_all(layout: &PinLayout, ifaces: &[String]) -> Result<Vec<Attachment>> {
    let mut done = Vec::new();
    for iface in ifaces {
        match attach(layout, iface) {
            Ok(a) => done.push(a),
            Err(e) => {
                for a in &done {
                    let _ = detach(layout, &a.iface);
                }
                return Err(e);
            }
        }
    }
    Ok(done)
}

fn attach(layout: &PinLayout, iface: &str) -> Result<Attachment> {
    let dir = layout.iface_dir(iface);
    fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("cannot create `{}`", dir.display()), e))?;
    let result = attach_programs(layout, iface);
    if result.is_err() {
        let _ = detach(layout, iface);
    }
    result
}

fn attach_programs(layout: &PinLayout, iface: &str) -> Result<Attachment> {
    let dir = layout.iface_dir(iface);
    let mut xdp = Xdp::from_pin(layout.prog(maps::PROG_INGRESS), XdpAttachType::Interface)
        .map_err(|e| Error::bpf("cannot open the pinned XDP program", e))?;
    // Native mode runs in the driver before any skb exists; drivers without
    // XDP support get generic mode, which is slower but filters the same.
    let (link_id, xdp_mode) = match xdp.attach(iface, XdpMode::Driver) {
        Ok(id) => (id, "native"),
        Err(_) => (
            xdp.attach(iface, XdpMode::Skb).map_err(|e| {
                Error::bpf(
                    format!("cannot attach XDP to `{iface}` (hint: another XDP program may be attached; `ip link show {iface}` shows it)"),
                    e,
                )
            })?,
            "generic",
        ),
    };
    let link = xdp
        .take_link(link_id)
        .map_err(|e| Error::bpf("cannot take the XDP link", e))?;
    let link: FdLink = link.try_into().map_err(|e| {
        Error::bpf(
            format!("XDP on `{iface}` was attached without a BPF link (kernel 5.9+ needed)"),
            e,
        )
    })?;
    link.pin(dir.join(format!("xdp-{xdp_mode}")))
        .map_err(pin_err(format!("cannot pin the XDP link of `{iface}`")))?;

    let mut tc = SchedClassifier::from_pin(layout.prog(maps::PROG_EGRESS))
        .map_err(|e| Error::bpf("cannot open the pinned TC program", e))?;
    // Before tcx (kernel 6.6) TC programs hang off a clsact qdisc.
    let _ = tc::qdisc_add_clsact(iface);
    let link_id = tc.attach(iface, TcAttachType::Egress).map_err(|e| {
        Error::bpf(
            format!("cannot attach the TC egress program to `{iface}`"),
            e,
        )
    })?;
    let link = tc
        .take_link(link_id)
        .map_err(|e| Error::bpf("cannot take the TC link", e))?;
    // A netlink (pre-tcx) filter is not a BPF link: the conversion fails
    // without detaching it. It cannot be pinned but outlives us by itself;
    // an empty directory records it so `unload` knows to remove it.
    let tc_mode = if let Ok(fd_link) = FdLink::try_from(link) {
        fd_link
            .pin(dir.join("tc-tcx"))
            .map_err(pin_err(format!("cannot pin the TC link of `{iface}`")))?;
        "tcx"
    } else {
        fs::create_dir_all(dir.join("tc-netlink"))
            .map_err(|e| Error::io("cannot record the TC filter", e))?;
        "netlink"
    };
    Ok(Attachment {
        iface: iface.to_string(),
        xdp_mode: xdp_mode.into(),
        tc_mode: tc_mode.into(),
    })
}

/// Detach both programs from `iface` and forget it.
fn detach(layout: &PinLayout, iface: &str) -> Result<()> {
    let dir = layout.iface_dir(iface);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "tc-netlink" {
            if crate::ifaces::exists(iface) {
                let _ = tc::qdisc_detach_program(iface, TcAttachType::Egress, maps::PROG_EGRESS);
            }
            let _ = fs::remove_dir(&path);
        } else {
            // Dropping the last reference to a BPF link detaches it.
            match PinnedLink::from_pin(&path) {
                Ok(link) => drop(
                    link.unpin()
                        .map_err(|e| Error::io(format!("cannot unpin `{}`", path.display()), e))?,
                ),
                Err(_) => fs::remove_file(&path)
                    .map_err(|e| Error::io(format!("cannot remove `{}`", path.display()), e))?,
            }
        }
    }
    fs::remove_dir(&dir).map_err(|e| Error::io(format!("cannot remove `{}`", dir.display()), e))
}

/// Interfaces with pinned attachments.
///
/// # Errors
/// The links directory could not be read.
pub fn attached_ifaces(layout: &PinLayout) -> Result<BTreeSet<String>> {
    match fs::read_dir(layout.links_dir()) {
        Ok(dir) => Ok(dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(Error::io("cannot read the links directory", e)),
    }
}

/// How `iface` is attached, from its pin names.
#[must_use]
pub fn attachment(layout: &PinLayout, iface: &str) -> Attachment {
    let has = |n: &str| layout.iface_dir(iface).join(n).exists();
    let xdp_mode = if has("xdp-native") {
        "native"
    } else if has("xdp-generic") {
        "generic"
    } else {
        "missing"
    };
    let tc_mode = if has("tc-tcx") {
        "tcx"
    } else if has("tc-netlink") {
        "netlink"
    } else {
        "missing"
    };
    Attachment {
        iface: iface.to_string(),
        xdp_mode: xdp_mode.into(),
        tc_mode: tc_mode.into(),
    }
}

/// Detach everything and remove every pin. Returns the interfaces freed.
///
/// # Errors
/// No firewall at `layout`, or a pin could not be removed.
pub fn unload(layout: &PinLayout) -> Result<Vec<String>> {
    if !layout.root.exists() {
        return Err(Error::NotLoaded(layout.root.clone()));
    }
    let ifaces: Vec<String> = attached_ifaces(layout)?.into_iter().collect();
    remove_all(layout)?;
    Ok(ifaces)
}

fn remove_all(layout: &PinLayout) -> Result<()> {
    for iface in attached_ifaces(layout)? {
        detach(layout, &iface)?;
    }
    for dir in [layout.progs_dir(), layout.maps_dir()] {
        remove_files(&dir)?;
    }
    for dir in [
        layout.links_dir(),
        layout.progs_dir(),
        layout.maps_dir(),
        layout.root.clone(),
    ] {
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("cannot remove `{}`", dir.display()), e)),
        }
    }
    Ok(())
}

fn remove_files(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        fs::remove_file(entry.path())
            .map_err(|e| Error::io(format!("cannot remove `{}`", entry.path().display()), e))?;
    }
    Ok(())
}

//! Two tiny XDP programs loaded with the raw `bpf(2)` syscall (no ELF
//! object needed): `XDP_TX`, which drives the generator through
//! `BPF_PROG_RUN` in live-frame mode, and `XDP_DROP`, the ceiling every
//! other arm is compared with. Both are two instructions: `r0 = verdict;
//! exit`.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`'s `BPF_XDP`.
const BPF_XDP: u32 = 37;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native mode, as fw and xdp-filter attach on veth.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
pub const XDP_DROP: i32 = 1;
pub const XDP_TX: i32 = 3;

/// A `union bpf_attr`: 128 zeroed bytes, 8-byte aligned, filled field by
/// field at the offsets of `include/uapi/linux/bpf.h`.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    const fn new() -> Self {
        Self([0; 128])
    }

    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn ptr<T>(&mut self, off: usize, p: *const T) -> &mut Self {
        assert_eq!(off % 8, 0, "pointers are 8-byte aligned in bpf_attr");
        self.0[off..off + 8].copy_from_slice(&(p as u64).to_ne_bytes());
        self
    }

    /// `bpf(cmd, self, size)`.
    fn call(&mut self, cmd: libc::c_long) -> io::Result<i32> {
        // SAFETY: the attribute block is ours and every pointer written
        // into it points at memory that outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                self.0.as_mut_ptr(),
                std::mem::size_of::<Self>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        i32::try_from(rc).map_err(|_| io::Error::other("bpf(2) returned an out-of-range value"))
    }
}

/// Load `r0 = verdict; exit` as an XDP program.
///
/// # Errors
/// The kernel refused the program (no `CAP_BPF`?).
pub fn load_verdict(verdict: i32) -> io::Result<OwnedFd> {
    // BPF_ALU64 | BPF_MOV | BPF_K to r0, then BPF_JMP | BPF_EXIT.
    let imm = u64::from(verdict.cast_unsigned());
    let insns: [u64; 2] = [0xb7 | (imm << 32), 0x95];
    let license = b"GPL\0";
    let fd = Attr::new()
        .u32(0, BPF_PROG_TYPE_XDP)
        .u32(4, 2)
        .ptr(8, insns.as_ptr())
        .ptr(16, license.as_ptr())
        // expected_attach_type, as libbpf sets it for SEC("xdp").
        .u32(68, BPF_XDP)
        .call(BPF_PROG_LOAD)?;
    // SAFETY: a descriptor the kernel just created for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attach `prog` in native mode to interface `ifindex` of the calling
/// thread's network namespace with a BPF link: closing the returned
/// descriptor (or deleting the namespace) detaches it.
///
/// # Errors
/// The kernel refused (another program attached, no native XDP).
///
/// # Panics
/// The calling thread is in the root network namespace: the bench never
/// attaches anything there.
pub fn attach_link(prog: &OwnedFd, ifindex: u32) -> io::Result<OwnedFd> {
    assert!(
        !in_root_netns(),
        "refusing to attach XDP in the root network namespace"
    );
    let fd = Attr::new()
        .u32(0, prog.as_raw_fd().cast_unsigned())
        .u32(4, ifindex)
        .u32(8, BPF_XDP)
        .u32(12, XDP_FLAGS_DRV_MODE)
        .call(BPF_LINK_CREATE)?;
    // SAFETY: a descriptor the kernel just created for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Is the calling thread in the root network namespace (that of pid 1)?
#[must_use]
pub fn in_root_netns() -> bool {
    let ours = std::fs::read_link("/proc/thread-self/ns/net").ok();
    let root = std::fs::read_link("/proc/1/ns/net").ok();
    ours.is_none() || ours == root
}

/// What one flood did.
pub struct Sent {
    /// Frames the generator pushed (`XDP_TX` verdicts), whether or not the
    /// receiver's ring had room for them.
    pub frames: u64,
    pub elapsed: Duration,
}

/// Flood `frame` out of `ifindex` (an interface of the calling thread's
/// namespace) by test-running the `XDP_TX` program `prog` in live-frame
/// mode: every run transmits the frame for real, through the veth's
/// `ndo_xdp_xmit`, into the peer's receive ring. Stops after `max_frames`
/// or once `max_time` has passed, whichever comes first.
///
/// # Errors
/// The kernel refused the test run (older than 5.18, or the interface is
/// down).
pub fn flood(
    prog: &OwnedFd,
    ifindex: u32,
    frame: &[u8],
    max_frames: u64,
    max_time: Duration,
) -> io::Result<Sent> {
    // Chunks short enough (tens of ms) that the time bound holds closely.
    const CHUNK: u64 = 1 << 17;
    let len = u32::try_from(frame.len()).expect("a 60-byte frame");
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex.
    let ctx: [u32; 6] = [0, len, 0, ifindex, 0, 0];
    let start = Instant::now();
    let mut frames = 0;
    while frames < max_frames && start.elapsed() < max_time {
        let repeat = CHUNK.min(max_frames - frames);
        let run = Attr::new()
            .u32(0, prog.as_raw_fd().cast_unsigned())
            .u32(8, len)
            .ptr(16, frame.as_ptr())
            .u32(32, u32::try_from(repeat).expect("a chunk fits u32"))
            .u32(40, u32::try_from(size_of_val(&ctx)).expect("24 bytes"))
            .ptr(48, ctx.as_ptr())
            .u32(64, BPF_F_TEST_XDP_LIVE_FRAMES)
            .call(BPF_PROG_TEST_RUN);
        match run {
            Ok(_) => frames += repeat,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Sent {
        frames,
        elapsed: start.elapsed(),
    })
}

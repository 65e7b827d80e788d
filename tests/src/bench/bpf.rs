//! `bpf(2)` by hand for what aya does not offer, shared by the bench's
//! sections:
//! - loading a program from raw instructions: `r0 = verdict; exit`, the
//!   empty XDP programs (PASS and DROP are the floor and ceiling of every
//!   figure, `XDP_TX` drives the flood generator);
//! - `BPF_PROG_TEST_RUN` on any program fd with the kernel's own duration,
//!   so every arm (fw's, xdp-filter's, the empty ones) is timed by the same
//!   call;
//! - live-frame test runs (the flood generator) and XDP links.
//!
//! Offsets follow `union bpf_attr` in `include/uapi/linux/bpf.h`; the
//! kernel accepts a larger attribute as long as the bytes it does not know
//! are zero.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
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
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

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

    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
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

/// Load `r0 = verdict; exit` as an XDP program named `name` (at most 15
/// bytes are kept): the least a program attached at XDP can cost.
///
/// # Errors
/// The kernel refused the program (no `CAP_BPF`?).
pub fn load_verdict(verdict: u32, name: &str) -> io::Result<OwnedFd> {
    // BPF_ALU64 | BPF_MOV | BPF_K to r0, then BPF_JMP | BPF_EXIT.
    let insns: [u64; 2] = [0xb7 | (u64::from(verdict) << 32), 0x95];
    let license = b"GPL\0";
    let mut attr = Attr::new();
    attr.u32(0, BPF_PROG_TYPE_XDP)
        .u32(4, 2)
        .ptr(8, insns.as_ptr())
        .ptr(16, license.as_ptr())
        // expected_attach_type, as libbpf sets it for SEC("xdp").
        .u32(68, BPF_XDP);
    let n = name.len().min(15);
    attr.0[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
    let fd = attr.call(BPF_PROG_LOAD)?;
    // SAFETY: a descriptor the kernel just created for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What one `BPF_PROG_TEST_RUN` reported.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// The program's return code (the XDP action).
    pub retval: u32,
    /// The kernel's own time per run, whole nanoseconds (it divides the
    /// time of the loop by `repeat`).
    pub duration_ns: u32,
}

/// Run `prog` on `frame` `repeat` times in the kernel.
///
/// # Errors
/// The kernel refused the run (program type without test-run, frame too
/// short or too long).
pub fn test_run(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> io::Result<Run> {
    // XDP may grow the frame (e.g. a reply); leave it room.
    let mut out = vec![0u8; frame.len() + 512];
    let mut attr = Attr::new();
    attr.u32(0, prog.as_raw_fd().cast_unsigned())
        .u32(8, u32::try_from(frame.len()).expect("a frame fits u32"))
        .u32(12, u32::try_from(out.len()).expect("a frame fits u32"))
        .ptr(16, frame.as_ptr())
        .ptr(24, out.as_mut_ptr().cast_const())
        .u32(32, repeat)
        .call(BPF_PROG_TEST_RUN)?;
    Ok(Run {
        retval: attr.get_u32(4),
        duration_ns: attr.get_u32(36),
    })
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

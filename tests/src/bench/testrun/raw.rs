//! `bpf(2)` by hand for the two things aya does not offer: loading a
//! program from raw instructions (the empty XDP programs that are the
//! floor of every figure), and `BPF_PROG_TEST_RUN` on any program fd with
//! the kernel's duration (so every arm, fw's, xdp-filter's and the empty
//! ones, is timed by the same call).
//!
//! Layouts follow `union bpf_attr` in `include/uapi/linux/bpf.h`; the
//! kernel accepts a larger attribute as long as the bytes it does not know
//! are zero, so each struct is zero-initialised and passed whole.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// `struct { ... }` of `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `struct { ... } test` of `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, zero-padded `repr(C)` prefix of `union
    // bpf_attr` for `cmd`, and its size is passed with it; every pointer
    // inside it points into buffers the caller keeps alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An XDP program of two instructions, `r0 = verdict; exit`: the least a
/// program attached at XDP can cost.
///
/// # Errors
/// The kernel refused the program (not root, no BPF).
pub fn load_constant_xdp(verdict: u32, name: &str) -> io::Result<OwnedFd> {
    // `BPF_ALU64 | BPF_MOV | BPF_K` into r0, then `BPF_JMP | BPF_EXIT`.
    let insns: [u64; 2] = [0xb7 | (u64::from(verdict) << 32), 0x95];
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    let n = name.len().min(15);
    attr.prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    let fd = i32::try_from(fd).expect("an fd fits i32");
    // SAFETY: the kernel just returned this descriptor to us alone.
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
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(prog.as_raw_fd()).expect("a valid fd"),
        data_size_in: u32::try_from(frame.len()).expect("a frame fits u32"),
        data_size_out: u32::try_from(out.len()).expect("a frame fits u32"),
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(Run {
        retval: attr.retval,
        duration_ns: attr.duration,
    })
}

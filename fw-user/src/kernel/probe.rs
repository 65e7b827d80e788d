//! Probes of the features in `fw_common::kernel::REQUIREMENTS`. Each one
//! creates a small map or loads a few instructions, and closes them at
//! once: nothing is attached or pinned. They need the privileges a load
//! needs; without them every probe answers `Unknown`.
//!
//! aya's probes cover map types, program types and helpers; the rest are
//! tiny programs written here, because aya has no API to load raw
//! instructions (like `backend/batch.rs`, this talks to `bpf(2)` itself).

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    ptr,
};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};
use aya_obj::generated::{
    BPF_ADD, BPF_ALU64, BPF_ATOMIC, BPF_CALL, BPF_CMPXCHG, BPF_DW, BPF_EXIT, BPF_IMM, BPF_JMP,
    BPF_JNE, BPF_K, BPF_LD, BPF_MAXINSNS, BPF_MEM, BPF_MOV, BPF_PSEUDO_CALL, BPF_PSEUDO_MAP_FD,
    BPF_STX, BPF_X, bpf_attach_type, bpf_attr, bpf_cmd, bpf_func_id, bpf_insn, bpf_map_type,
    bpf_prog_type,
};
use fw_common::kernel::Feature;

use super::Probed;

/// What the running kernel says about `feature`.
pub fn probe(feature: Feature) -> Probed {
    match feature {
        Feature::TcClassifier => program(ProgramType::SchedClassifier),
        Feature::PerCpuMaps => map(MapType::PerCpuHash).and(map(MapType::PerCpuArray)),
        Feature::LruHash => map(MapType::LruHash),
        Feature::LpmTrie => map(MapType::LpmTrie),
        Feature::Xdp => program(ProgramType::Xdp),
        Feature::FibLookup => helper(ProgramType::Xdp, BpfHelper::BPF_FUNC_fib_lookup).and(helper(
            ProgramType::SchedClassifier,
            BpfHelper::BPF_FUNC_fib_lookup,
        )),
        Feature::XdpAdjustTail => helper(ProgramType::Xdp, BpfHelper::BPF_FUNC_xdp_adjust_tail),
        Feature::LargePrograms => load_xdp(&large_program()),
        // aya's own probe answers yes or no; "no" may also mean "not
        // allowed to try", so only "yes" counts.
        Feature::GlobalData if aya::features().bpf_global_data() => Probed::Present,
        Feature::GlobalData => Probed::Unknown,
        // The helper has existed since 4.13 and checks its mode only when
        // it runs: telling would take a test run. The version decides.
        Feature::AdjustRoomMac => Probed::Unknown,
        Feature::BoundedLoops => load_xdp(&bounded_loop()),
        Feature::MapBatchUpdate => batch_update(),
        Feature::RingBuf => map(MapType::RingBuf),
        Feature::XdpLink => xdp_link(),
        Feature::TailCallsWithCalls => tail_call_with_calls(),
        Feature::AtomicCmpxchg => load_xdp(&cmpxchg()),
        Feature::Loop => helper(ProgramType::Xdp, BpfHelper::BPF_FUNC_loop),
        Feature::XdpLoadBytes => helper(ProgramType::Xdp, BpfHelper::BPF_FUNC_xdp_load_bytes),
    }
}

fn answer<E>(result: Result<bool, E>) -> Probed {
    result.map_or(Probed::Unknown, |supported| {
        if supported {
            Probed::Present
        } else {
            Probed::Missing
        }
    })
}

fn program(program_type: ProgramType) -> Probed {
    answer(is_program_supported(program_type))
}

fn map(map_type: MapType) -> Probed {
    answer(is_map_supported(map_type))
}

fn helper(program_type: ProgramType, helper: BpfHelper) -> Probed {
    answer(is_helper_supported(program_type, helper))
}

/// The kernel's `ENOTSUPP` (not `ENOTSUP`): a JIT that cannot compile an
/// instruction, with `CONFIG_BPF_JIT_ALWAYS_ON`.
const ENOTSUPP: i32 = 524;

/// What an error of a probe that the verifier would accept on a kernel
/// with the feature means: `EINVAL` (an unknown instruction, a back-edge,
/// tail calls refused beside calls, an unknown command), `E2BIG` (too
/// many instructions) and `ENOTSUPP` say the feature is missing. Anything
/// else (`EPERM` without privileges, `ENOMEM` from the memlock limit of
/// kernels before 5.11) says nothing.
fn refusal(e: &io::Error) -> Probed {
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::E2BIG | ENOTSUPP) => Probed::Missing,
        _ => Probed::Unknown,
    }
}

const XDP_PASS: i32 = 2;

fn insn(code: u32, dst: u8, src: u8, off: i16, imm: i32) -> bpf_insn {
    #[expect(clippy::cast_possible_truncation, reason = "opcodes are one byte")]
    let code = code as u8;
    bpf_insn {
        code,
        _bitfield_align_1: [],
        _bitfield_1: bpf_insn::new_bitfield_1(dst, src),
        off,
        imm,
    }
}

fn mov_imm(dst: u8, imm: i32) -> bpf_insn {
    insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
}

fn exit() -> bpf_insn {
    insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
}

/// `BPF_MAXINSNS + 1` instructions: refused with `E2BIG` before 5.2.
fn large_program() -> Vec<bpf_insn> {
    let mut insns = vec![mov_imm(0, XDP_PASS); BPF_MAXINSNS as usize];
    insns.push(exit());
    insns
}

/// Counts down from 4: a back-edge, refused before 5.3.
fn bounded_loop() -> [bpf_insn; 5] {
    [
        mov_imm(0, XDP_PASS),
        mov_imm(1, 4),
        insn(BPF_ALU64 | BPF_ADD | BPF_K, 1, 0, 0, -1),
        insn(BPF_JMP | BPF_JNE | BPF_K, 1, 0, -2, 0), // back to the add
        exit(),
    ]
}

/// A compare-and-exchange on a stack slot: unknown before 5.12, refused
/// by a JIT without it (arm64 before 5.18) when the JIT is mandatory.
fn cmpxchg() -> [bpf_insn; 7] {
    #[expect(clippy::cast_possible_wrap, reason = "BPF_CMPXCHG is 0xf1")]
    let cmpxchg = BPF_CMPXCHG as i32;
    [
        mov_imm(1, 0),
        insn(BPF_STX | BPF_DW | BPF_MEM, 10, 1, -8, 0), // the word to swap
        mov_imm(0, 0),                                  // expected
        mov_imm(1, 1),                                  // new
        insn(BPF_STX | BPF_DW | BPF_ATOMIC, 10, 1, -8, cmpxchg),
        mov_imm(0, XDP_PASS),
        exit(),
    ]
}

fn load_xdp(insns: &[bpf_insn]) -> Probed {
    match prog_load(bpf_prog_type::BPF_PROG_TYPE_XDP, insns) {
        Ok(_) => Probed::Present,
        Err(e) => refusal(&e),
    }
}

/// A program that tail-calls and calls a subprogram, as fw's entry points
/// do (`memcpy` and friends are subprograms).
fn tail_call_with_calls() -> Probed {
    let Ok(jumps) = map_create(bpf_map_type::BPF_MAP_TYPE_PROG_ARRAY, 4, 4, 1) else {
        return Probed::Unknown;
    };
    #[expect(clippy::cast_possible_truncation, reason = "small constants")]
    let (pseudo_map_fd, pseudo_call, tail_call) = (
        BPF_PSEUDO_MAP_FD as u8,
        BPF_PSEUDO_CALL as u8,
        bpf_func_id::BPF_FUNC_tail_call as i32,
    );
    let jumps_fd = jumps.as_raw_fd();
    let insns = [
        insn(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0), // r6 = ctx
        insn(BPF_JMP | BPF_CALL, 0, pseudo_call, 0, 7), // call the subprogram at 9
        insn(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0), // r1 = ctx
        // r2 = the program array (a 64-bit load: two instructions)
        insn(BPF_LD | BPF_DW | BPF_IMM, 2, pseudo_map_fd, 0, jumps_fd),
        insn(0, 0, 0, 0, 0),
        mov_imm(3, 0),
        insn(BPF_JMP | BPF_CALL, 0, 0, 0, tail_call),
        mov_imm(0, XDP_PASS),
        exit(),
        mov_imm(0, 0), // the subprogram
        exit(),
    ];
    load_xdp(&insns)
}

/// `BPF_LINK_CREATE` for XDP with no program: a kernel with XDP links
/// looks the program up and answers `EBADF`; one without answers `EINVAL`
/// (5.7 and 5.8 check the attach type first and do not know `BPF_XDP`;
/// older kernels do not know the command). Nothing can be attached.
fn xdp_link() -> Probed {
    let mut attr = zeroed_attr();
    attr.link_create.__bindgen_anon_1.prog_fd = u32::MAX;
    attr.link_create.attach_type = bpf_attach_type::BPF_XDP as u32;
    match sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr) {
        Ok(fd) => {
            drop(fd);
            Probed::Present
        }
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Probed::Present,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Probed::Missing,
        Err(_) => Probed::Unknown,
    }
}

/// One element written to a fresh array map with the batch command the
/// loader uses (`backend/batch.rs`).
fn batch_update() -> Probed {
    let Ok(fd) = map_create(bpf_map_type::BPF_MAP_TYPE_ARRAY, 4, 4, 1) else {
        return Probed::Unknown;
    };
    match crate::backend::batch::update_array_fd(fd.as_fd(), 0, &[0u32]) {
        Ok(()) => Probed::Present,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Probed::Missing,
        Err(_) => Probed::Unknown,
    }
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: `bpf_attr` is a union of plain integer structs; all zeroes
    // is the state the kernel expects of every field not set.
    unsafe { std::mem::zeroed() }
}

fn prog_load(prog_type: bpf_prog_type, insns: &[bpf_insn]) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_3.prog_type = prog_type as u32;
    attr.__bindgen_anon_3.insn_cnt = u32::try_from(insns.len()).map_err(io::Error::other)?;
    attr.__bindgen_anon_3.insns = insns.as_ptr() as u64;
    // GPL-compatible, like fw's programs (`bpf_fib_lookup` is GPL-only).
    attr.__bindgen_anon_3.license = c"GPL".as_ptr() as u64;
    sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
}

fn map_create(
    map_type: bpf_map_type,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_1.map_type = map_type as u32;
    attr.__bindgen_anon_1.key_size = key_size;
    attr.__bindgen_anon_1.value_size = value_size;
    attr.__bindgen_anon_1.max_entries = max_entries;
    sys_bpf(bpf_cmd::BPF_MAP_CREATE, &mut attr)
}

/// `bpf(cmd, attr)` for a command that returns a new descriptor.
fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a whole `bpf_attr`; every pointer in it refers to
    // memory that outlives the call (instructions, license, keys, values).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            ptr::from_mut(attr),
            u32::try_from(size_of::<bpf_attr>()).unwrap_or(u32::MAX),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(ret).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

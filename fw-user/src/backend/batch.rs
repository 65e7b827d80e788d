//! `BPF_MAP_UPDATE_BATCH` for array maps (Linux 5.6+), which aya does not
//! wrap. A reload rewrites about 100 000 array elements; one syscall per
//! element made it take half a second.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::{Pod, maps::MapData};

/// `BPF_MAP_UPDATE_BATCH` (include/uapi/linux/bpf.h).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Elements written per syscall: bounded so the kernel's temporary copy
/// stays small.
const CHUNK: usize = 8192;

/// Write `values[i]` at index `first + i` of the array map `map`.
///
/// # Errors
/// The kernel refused the update (an old kernel without batch operations
/// answers `EINVAL`).
pub fn update_array<V: Pod>(map: &MapData, first: u32, values: &[V]) -> std::io::Result<()> {
    let fd = map.fd().as_fd().as_raw_fd();
    for (c, chunk) in values.chunks(CHUNK).enumerate() {
        let base = first + u32::try_from(c * CHUNK).map_err(std::io::Error::other)?;
        let keys: Vec<u32> = (0..u32::try_from(chunk.len()).map_err(std::io::Error::other)?)
            .map(|i| base + i)
            .collect();
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: chunk.as_ptr() as u64,
            count: u32::try_from(chunk.len()).map_err(std::io::Error::other)?,
            map_fd: u32::try_from(fd).map_err(std::io::Error::other)?,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at live key and value buffers of `count`
        // elements each, laid out as the kernel reads them.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &raw mut attr,
                u32::try_from(size_of::<BatchAttr>()).unwrap_or(u32::MAX),
            )
        };
        if ret != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

//! `BPF_MAP_UPDATE_BATCH` for array maps (Linux 5.6+), which aya does not
//! wrap. A reload rewrites about 100 000 array elements; one syscall per
//! element made it take half a second.

use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};

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
    update_array_fd(map.fd().as_fd(), first, values)
}

/// `update_array` for an array map known by its descriptor (the kernel
/// probe writes to a map aya did not create).
///
/// # Errors
/// As `update_array`.
pub fn update_array_fd<V: Pod>(
    map: BorrowedFd<'_>,
    first: u32,
    values: &[V],
) -> std::io::Result<()> {
    let fd = map.as_raw_fd();
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

/// `BPF_MAP_LOOKUP_BATCH` (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Elements read per syscall. A hash map hands out whole buckets: a bucket
/// larger than this answers `ENOSPC`, which needs thousands of colliding
/// keys.
const LOOKUP_CHUNK: usize = 4096;

/// Every (key, value) of the hash or LRU hash map `map` (Linux 5.6+), one
/// syscall per few thousand entries instead of two per entry. A snapshot:
/// entries the datapath adds or removes meanwhile may be missed.
///
/// # Errors
/// The kernel refused the lookup (an old kernel answers `EINVAL`); the
/// caller then walks the map key by key.
pub fn lookup_hash<K: Pod, V: Pod>(map: &MapData) -> std::io::Result<Vec<(K, V)>> {
    let fd = u32::try_from(map.fd().as_fd().as_raw_fd()).map_err(std::io::Error::other)?;
    let mut out = Vec::new();
    // The hash map's cursor is a bucket index.
    let mut token: u32 = 0;
    let mut first = true;
    loop {
        let mut keys: Vec<K> = Vec::with_capacity(LOOKUP_CHUNK);
        let mut values: Vec<V> = Vec::with_capacity(LOOKUP_CHUNK);
        let mut next: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { (&raw const token) as u64 },
            out_batch: (&raw mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(LOOKUP_CHUNK).map_err(std::io::Error::other)?,
            map_fd: fd,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at buffers with room for `count` keys and
        // values of the map's sizes (`K` and `V` are its key and value
        // types) and at two u32 cursors, all alive for the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                u32::try_from(size_of::<BatchAttr>()).unwrap_or(u32::MAX),
            )
        };
        let err = (ret != 0).then(std::io::Error::last_os_error);
        let n = usize::try_from(attr.count)
            .map_err(std::io::Error::other)?
            .min(LOOKUP_CHUNK);
        // SAFETY: the kernel wrote `n` keys and values (fewer than asked
        // for at the end, and also when it reports ENOENT).
        unsafe {
            keys.set_len(n);
            values.set_len(n);
        }
        out.extend(keys.into_iter().zip(values));
        match err {
            None => {}
            // The end of the map.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Some(e) => return Err(e),
        }
        token = next;
        first = false;
    }
}

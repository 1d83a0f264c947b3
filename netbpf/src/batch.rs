//! Reading a whole hash map in a few system calls.
//!
//! aya 0.16 walks a map one key per `bpf(2)` call (get-next-key, then a
//! lookup). For a conntrack table of 262,144 flows that is half a million
//! calls per metrics scrape and per expiry pass. `BPF_MAP_LOOKUP_BATCH`
//! (Linux 5.6) reads thousands of entries per call; aya does not wrap it,
//! so this module makes the call itself. Kernels or map types without it
//! answer `EINVAL`/`ENOTSUPP`, and the caller falls back to aya's walk.

use std::{
    io,
    mem::{MaybeUninit, size_of},
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    Pod,
    maps::{IterableMap, MapData},
};

/// `BPF_MAP_LOOKUP_BATCH` from `include/uapi/linux/bpf.h`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries asked for per call.
const CHUNK: u32 = 4096;
/// `ENOTSUPP` (kernel-internal, leaks to userspace for unsupported ops).
const ENOTSUPP: i32 = 524;

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

/// Every entry of a (non-per-CPU) hash map `map`, read in chunks with
/// `BPF_MAP_LOOKUP_BATCH`. `Ok(None)`: the kernel does not support batch
/// lookups for this map; walk it instead.
pub fn entries<K: Pod, V: Pod>(map: &impl IterableMap<K, V>) -> io::Result<Option<Vec<(K, V)>>> {
    read(map.map())
}

fn read<K: Pod, V: Pod>(map: &MapData) -> io::Result<Option<Vec<(K, V)>>> {
    let fd = map.fd().as_fd().as_raw_fd();
    let mut keys: Vec<MaybeUninit<K>> = Vec::with_capacity(CHUNK as usize);
    let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(CHUNK as usize);
    // The hash map's batch token is a bucket index (u32); 8 bytes leave
    // room for any map type's.
    let mut token = [0u64; 1];
    let mut out = Vec::new();
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_ptr() as u64 },
            out_batch: token.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid bpf_attr prefix for this command; the
        // key and value buffers hold CHUNK elements of the map's key and
        // value types, and the kernel writes at most `count` of each.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::from_mut(&mut attr),
                size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
        let n = attr.count as usize;
        // SAFETY: the kernel initialised the first `n` (<= CHUNK) keys and
        // values; they are plain data (Pod).
        unsafe {
            keys.set_len(n.min(CHUNK as usize));
            values.set_len(n.min(CHUNK as usize));
        }
        out.extend(
            keys.iter()
                .zip(values.iter())
                // SAFETY: initialised above.
                .map(|(k, v)| unsafe { (k.assume_init(), v.assume_init()) }),
        );
        keys.clear();
        values.clear();
        match err {
            None => {}
            // The end of the map.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Some(out)),
            Some(e) if first && matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(ENOTSUPP)) => {
                return Ok(None);
            }
            Some(e) => return Err(e),
        }
        first = false;
    }
}

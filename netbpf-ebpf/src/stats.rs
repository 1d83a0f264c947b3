//! Per-CPU counters, indexed by [`Counter`].

use netbpf_common::Counter;

use crate::maps::{PORT_PROBES, STATS};

/// Adds `n` to a counter.
#[inline(always)]
pub(crate) fn add(counter: Counter, n: u64) {
    if let Some(slot) = STATS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot: no other CPU writes it, and tc/XDP
        // programs are not preempted by themselves on one CPU.
        unsafe { *slot += n };
    }
}

/// Adds one to a counter.
#[inline(always)]
pub(crate) fn inc(counter: Counter) {
    add(counter, 1);
}

/// Records how many probes a port allocation needed (`bucket` =
/// `MAX_PORT_PROBES` for a failed allocation).
#[inline(always)]
pub(crate) fn port_probes(bucket: u32) {
    if let Some(slot) = PORT_PROBES.get_ptr_mut(bucket) {
        // SAFETY: a per-CPU slot, as in `add`.
        unsafe { *slot += 1 };
    }
}

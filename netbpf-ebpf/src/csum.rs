//! Checksum verification of ICMP errors before they are translated (RFC
//! 5508 REQ-3a: an error with a bad ICMP checksum, or whose quoted IP
//! header has a bad checksum, is dropped, not translated). The quoted
//! transport checksum is not checked (REQ-3c: the quote is usually cut
//! short).
//!
//! The bytes are copied into a per-CPU scratch buffer and summed with
//! `bpf_csum_diff`, which takes at most 512 bytes a call: two calls cover
//! the 576-byte datagrams routers quote into (RFC 1812 §4.3.2.3). A
//! message longer than the buffer is not checked (and passes).

use aya_ebpf::{
    helpers::{bpf_csum_diff, bpf_skb_load_bytes},
    programs::TcContext,
};

use netbpf_common::csum_fold;

use crate::{
    fib::skb,
    maps::{CSUM_SCRATCH, CSUM_SCRATCH_BYTES},
    parse::{Packet, Quoted},
};

/// Bytes of the scratch buffer, the most that is checked.
const CSUM_MAX: usize = CSUM_SCRATCH_BYTES;
/// Most bytes one `bpf_csum_diff` call sums.
const CHUNK: usize = 512;

/// Whether the `len` bytes at `off` of the skb sum to a valid Internet
/// checksum (RFC 1071: the one's-complement sum, checksum field included,
/// is all ones). `None`: too long to check here, or unreadable.
#[inline(always)]
fn sums_to_ones(ctx: &TcContext, off: usize, len: usize) -> Option<bool> {
    if len == 0 || len > CSUM_MAX {
        return None;
    }
    let buf = CSUM_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch value, valid and unshared for this run.
    let buf = unsafe { &mut *buf };
    // 1..=CSUM_MAX without a branch the compiler could fold away: the
    // verifier follows the mask and the +1 (`len` is already in range).
    let n = ((len - 1) & (CSUM_MAX - 1)) + 1;
    // Zero the word the copy may end inside: padding does not change a
    // one's-complement sum.
    let last = (n - 1) / 4;
    if last < CSUM_MAX / 4 {
        buf[last] = 0;
    }
    // SAFETY: `n` is in 1..=CSUM_MAX, the buffer's size in bytes.
    let rc = unsafe {
        bpf_skb_load_bytes(
            skb(ctx).cast(),
            off as u32,
            buf.as_mut_ptr().cast(),
            n as u32,
        )
    };
    if rc != 0 {
        return None;
    }
    let words = (n + 3) & !3;
    let first = if words > CHUNK { CHUNK } else { words };
    // SAFETY: both ranges lie inside the buffer (`words` <= CSUM_MAX); a
    // null `from` of size 0 is allowed.
    let mut sum =
        unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, buf.as_mut_ptr(), first as u32, 0) };
    if words > CHUNK {
        let rest = (words - CHUNK) & (CSUM_MAX - 1);
        if rest > CHUNK {
            return None;
        }
        // SAFETY: the second half of the buffer, `rest` <= CHUNK bytes.
        sum = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                buf[CHUNK / 4..].as_mut_ptr(),
                rest as u32,
                sum as u32,
            )
        };
    }
    if sum < 0 {
        return None;
    }
    Some(csum_fold(sum as u64) == 0xffff)
}

/// Whether an ICMP error's own checksum and its quoted IP header's
/// checksum are right. Unknown (too long to check) counts as right.
#[inline(always)]
pub(crate) fn icmp_error_ok(ctx: &TcContext, pkt: &Packet, q: &Quoted) -> bool {
    let icmp_len = (pkt.tot_len as usize).saturating_sub(pkt.l4_off - pkt.l3_off);
    if sums_to_ones(ctx, pkt.l4_off, icmp_len) == Some(false) {
        return false;
    }
    sums_to_ones(ctx, q.l3_off, q.l4_off - q.l3_off) != Some(false)
}

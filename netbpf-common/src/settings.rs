//! The `[inbound]` and `[datapath]` policies as the programs read them, and the per-source budget (GCRA) they apply.

use core::mem::size_of;

/// Bits of [`Settings::flags`].
pub mod settings_flags {
    /// Let unsolicited TCP SYNs to the host's addresses through to the
    /// stack (where netfilter DNAT, IPVS or kube-proxy may take them)
    /// instead of dropping them silently (RFC 5382 REQ-4).
    pub const PASS_UNSOLICITED_SYN: u32 = 1 << 0;
    /// Hand translated and routed packets back to the host's stack instead
    /// of redirecting them to their egress device (`[datapath] fast_path =
    /// false`). Zero, the fast path, is what an older daemon's map holds.
    pub const VIA_STACK: u32 = 1 << 1;
    /// Leave established inbound NAT flows to the tc fast path instead of
    /// the uplink's XDP program (`[datapath] xdp = false`, or no device
    /// XDP may redirect to). Zero, XDP on, is what an older daemon's map
    /// holds; an older daemon attaches no XDP program for NAT.
    pub const NO_XDP: u32 = 1 << 2;
    /// The uplink's XDP program runs in native (driver) mode: it hands the
    /// established inbound packets it translates to the uplink's tc
    /// ingress program in the skb's metadata ([`crate::XdpHandoff`])
    /// instead of redirecting them itself (a native redirect into a veth
    /// whose peer has no NAPI is dropped). Zero, redirect, is what an
    /// older daemon's map holds.
    pub const XDP_HANDOFF: u32 = 1 << 3;
}

/// Value of [`map_names::SETTINGS`] (index 0): the policies the config
/// sets, read by the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// [`settings_flags`] bits.
    pub flags: u32,
    /// Always zero.
    pub _pad: u32,
    /// Emission interval of the per-source new-flow budget (GCRA), in ns:
    /// one new flow opened from outside per interval per source address.
    /// 0 = no limit.
    pub source_interval_ns: u64,
    /// Burst tolerance of the budget, in ns (`(burst - 1) * interval`).
    pub source_tolerance_ns: u64,
}

const _: () = assert!(size_of::<Settings>() == 24);

impl Settings {
    /// The budget for `per_second` new flows per source with bursts of
    /// `burst` (0 = no limit).
    pub const fn with_source_budget(flags: u32, per_second: u32, burst: u32) -> Settings {
        if per_second == 0 {
            return Settings {
                flags,
                _pad: 0,
                source_interval_ns: 0,
                source_tolerance_ns: 0,
            };
        }
        let interval = 1_000_000_000 / per_second as u64;
        let burst = if burst == 0 { 1 } else { burst };
        Settings {
            flags,
            _pad: 0,
            source_interval_ns: interval,
            source_tolerance_ns: (burst as u64 - 1) * interval,
        }
    }

    /// GCRA: whether a new flow arriving at `now` from a source whose
    /// budget state is `tat` (its theoretical arrival time, 0 = unseen)
    /// is allowed, and the state to store if it is.
    #[inline(always)]
    pub const fn admit(&self, tat: u64, now: u64) -> Option<u64> {
        if self.source_interval_ns == 0 {
            return Some(0);
        }
        if tat > now.saturating_add(self.source_tolerance_ns) {
            return None;
        }
        let base = if tat > now { tat } else { now };
        Some(base + self.source_interval_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_budget_allows_a_burst_then_the_rate() {
        let s = Settings::with_source_budget(0, 10, 3);
        assert_eq!(s.source_interval_ns, 100_000_000);
        let t0 = 1_000_000_000;
        let mut tat = 0;
        for i in 0..3 {
            tat = s.admit(tat, t0).unwrap_or_else(|| panic!("burst {i}"));
        }
        assert_eq!(s.admit(tat, t0), None, "over the burst");
        // One interval later there is room for one more.
        let later = t0 + s.source_interval_ns;
        assert!(s.admit(tat, later).is_some());
        // No limit configured: always admitted.
        assert!(
            Settings::with_source_budget(0, 0, 0)
                .admit(u64::MAX, 0)
                .is_some()
        );
    }
}

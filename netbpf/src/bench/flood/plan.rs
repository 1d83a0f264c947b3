//! The floods part 4 runs: sources, rates, durations.

use std::{net::Ipv4Addr, time::Duration};

use serde_json::Value;

/// The published port the flood and the inbound clients aim at.
pub(crate) const PUBLISHED: u16 = 8080;

/// netbpf's conntrack capacity in this part.
pub(crate) const NETBPF_CAPACITY: u32 = 16_384;

/// The single flood source: TEST-NET-2, owned by nobody in the lab.
pub(crate) const ONE_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// A legitimate connection's budget: connect, then the greeting line.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Time between the starts of two probes of one kind during a flood.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// How long after a flood the bench waits for legitimate connections to
/// work again.
pub(crate) const RECOVERY_LIMIT: Duration = Duration::from_secs(10);

/// Probes of each kind made after recovery.
pub(crate) const AFTER_PROBES: usize = 10;

/// Where a flood comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sources {
    /// [`ONE_SOURCE`], a random source port per SYN.
    One,
    /// A random address of 198.18.0.0/16 and port per SYN.
    Many,
}

impl Sources {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Sources::One => "one source",
            Sources::Many => "many sources",
        }
    }

    pub(crate) fn key(self) -> &'static str {
        match self {
            Sources::One => "one",
            Sources::Many => "many",
        }
    }
}

/// One flood of the matrix.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flood {
    pub(crate) sources: Sources,
    /// SYNs per second; [`MAX`] is as fast as trafgen sends.
    pub(crate) rate: u64,
    pub(crate) secs: u64,
}

/// The rate of a flood that trafgen sends as fast as it can. Not in the
/// matrix yet: the first quick run with it (one source, netbpf) never
/// finished on the 2-core VM and the cause is not known.
pub(crate) const MAX: u64 = 0;

/// A flood's rate as the summary shows it.
pub(crate) fn rate_label(rate: &Value) -> String {
    match rate.as_u64() {
        Some(MAX) => "max".to_owned(),
        Some(r) => r.to_string(),
        None => "?".to_owned(),
    }
}

pub(crate) fn matrix(quick: bool) -> Vec<Flood> {
    let f = |sources, rate, secs| Flood {
        sources,
        rate,
        secs,
    };
    if quick {
        // The last one offers more SYNs than either table holds (16,384
        // and, on most machines, nf_conntrack_max = 262,144) if the sender
        // keeps the rate.
        vec![
            f(Sources::One, 1_000, 2),
            f(Sources::One, 10_000, 2),
            f(Sources::One, 50_000, 2),
            f(Sources::Many, 10_000, 2),
            f(Sources::Many, 50_000, 6),
        ]
    } else {
        vec![
            f(Sources::One, 1_000, 10),
            f(Sources::One, 10_000, 10),
            f(Sources::One, 50_000, 10),
            f(Sources::Many, 1_000, 10),
            f(Sources::Many, 10_000, 10),
            f(Sources::Many, 50_000, 10),
        ]
    }
}

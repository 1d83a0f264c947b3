//! The host's own conntrack timeouts (`--adopt-sysctl-timeouts`), read from `net.netfilter`.

use std::{path::Path, time::Duration};

use super::error::*;

/// The kernel's conntrack timeouts, as netbpf's four classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SysctlTimeouts {
    /// `nf_conntrack_udp_timeout_stream`.
    pub udp: Duration,
    /// `nf_conntrack_tcp_timeout_established`.
    pub tcp_established: Duration,
    /// The longest of the opening and closing TCP states' timeouts.
    pub tcp_transitory: Duration,
    /// `nf_conntrack_icmp_timeout`.
    pub icmp: Duration,
}

/// The sysctls [`read_sysctl_timeouts`] combines into the transitory TCP
/// timeout (netbpf has one class for all of them).
pub const TCP_TRANSITORY_SYSCTLS: [&str; 6] = [
    "nf_conntrack_tcp_timeout_syn_sent",
    "nf_conntrack_tcp_timeout_syn_recv",
    "nf_conntrack_tcp_timeout_fin_wait",
    "nf_conntrack_tcp_timeout_close_wait",
    "nf_conntrack_tcp_timeout_last_ack",
    "nf_conntrack_tcp_timeout_time_wait",
];

/// Reads the conntrack timeouts from `dir` (normally
/// `/proc/sys/net/netfilter`, which exists once `nf_conntrack` is loaded).
pub fn read_sysctl_timeouts(dir: &Path) -> Result<SysctlTimeouts, ImportError> {
    let read = |name: &str| -> Result<Duration, ImportError> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|source| ImportError::Sysctl {
            path: path.display().to_string(),
            source,
        })?;
        text.trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| ImportError::Sysctl {
                path: path.display().to_string(),
                source: std::io::Error::other(format!("{:?} is not a number", text.trim())),
            })
    };
    let mut transitory = Duration::ZERO;
    for name in TCP_TRANSITORY_SYSCTLS {
        transitory = transitory.max(read(name)?);
    }
    Ok(SysctlTimeouts {
        udp: read("nf_conntrack_udp_timeout_stream")?,
        tcp_established: read("nf_conntrack_tcp_timeout_established")?,
        tcp_transitory: transitory,
        icmp: read("nf_conntrack_icmp_timeout")?,
    })
}

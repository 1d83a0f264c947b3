//! Docker's `enable_icc=false` (`--icc=false`): containers on one bridge
//! do not reach each other directly. The bridge switches their frames from
//! port to port, past every program on the bridge device, so this runs at
//! tc ingress of each port (the containers' host-side veths), listed with
//! its network's subnet in `ICC_PORTS`. Only IPv4 to the subnet, other
//! than the bridge's own address, is dropped: ARP, the gateway, the host's
//! published ports (hairpinning happens on the bridge, after this) and
//! the outside pass.

use aya_ebpf::programs::TcContext;
use netbpf_common::{Counter, icc_refused};

use crate::{Verdict, fib, maps::ICC_PORTS, parse};

/// EtherType of IPv4, as the header holds it.
const ETH_P_IP: [u8; 2] = [0x08, 0x00];

/// A frame a container sent into its bridge port.
#[inline(always)]
pub(crate) fn from_port(ctx: &TcContext) -> Result<Verdict, Counter> {
    let ifindex = fib::skb_ifindex(ctx);
    // SAFETY: the value is copied out at once.
    let Some(port) = (unsafe { ICC_PORTS.get(&ifindex) }).copied() else {
        return Ok(Verdict::Pass);
    };
    let Some(eth) = parse::peek(ctx) else {
        return Ok(Verdict::Pass);
    };
    // ARP (which the containers still need for the gateway), IPv6 and the
    // rest: not netbpf's (IPv4 only).
    if eth.ether_type != ETH_P_IP {
        return Ok(Verdict::Pass);
    }
    if icc_refused(&port, eth.ip_dst) {
        return Err(Counter::DropIcc);
    }
    Ok(Verdict::Pass)
}

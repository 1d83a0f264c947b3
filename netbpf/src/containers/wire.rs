//! A routed container on this host: its veth and MACs resolved, its host routes, the gratuitous ARP (and, for IPv6, the unsolicited neighbour advertisement) that announces it.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, FromRawFd, OwnedFd},
};

use log::warn;
use netbpf_common::{ALL_NODES, ALL_NODES_MAC, Advert, na_flags, na_frame};

use crate::{
    config::{Config, Container},
    netdev::{self},
    rtnl::Rtnl,
};

use super::error::*;

/// A container resolved against the host: its veth's index and both MACs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The container's address.
    pub address: Ipv4Addr,
    /// Its IPv6 address, if it has one.
    pub ipv6: Option<Ipv6Addr>,
    /// Host side of its veth.
    pub interface: String,
    /// Index of the host side.
    pub ifindex: u32,
    /// MAC of the host side.
    pub host_mac: [u8; 6],
    /// The container's MAC (the veth peer's).
    pub mac: [u8; 6],
}

/// Refuses routed containers inside a masquerade CIDR.
pub fn check_not_masqueraded(config: &Config) -> Result<(), ContainersError> {
    for (i, c) in config.container.iter().enumerate() {
        if let Some(m) = config
            .masquerade
            .iter()
            .find(|m| m.source.contains(c.address))
        {
            return Err(ContainersError::Masqueraded {
                key: format!("container[{i}].address"),
                addr: c.address,
                cidr: format!("{}/{}", m.source.addr, m.source.prefix_len),
            });
        }
    }
    Ok(())
}

/// Learns a container's veth index and MACs (`key` names it in errors).
pub fn resolve(rtnl: &mut Rtnl, key: &str, c: &Container) -> Result<Resolved, ContainersError> {
    let ikey = format!("{key}.interface");
    let ifindex = netdev::ifindex(&c.interface).map_err(|source| ContainersError::Interface {
        key: ikey.clone(),
        source,
    })?;
    let rt = |source| ContainersError::Rtnl {
        key: ikey.clone(),
        source,
    };
    let host_mac = rtnl.link(ifindex, None).map_err(rt)?.mac;
    let mac = rtnl
        .veth_peer_mac(ifindex)
        .map_err(|source| ContainersError::Rtnl {
            key: ikey.clone(),
            source,
        })?
        .ok_or_else(|| ContainersError::NotVeth {
            key: ikey.clone(),
            interface: c.interface.clone(),
        })?;
    Ok(Resolved {
        address: c.address,
        ipv6: c.ipv6,
        interface: c.interface.clone(),
        ifindex,
        host_mac,
        mac,
    })
}

/// Sends a gratuitous ARP (an RFC 5227 announcement: a request whose
/// sender and target are `addr`) out of `ifindex` from `mac`, so machines on
/// the segment that cached another MAC for `addr` update it.
pub fn announce(ifindex: u32, mac: [u8; 6], addr: Ipv4Addr) -> io::Result<()> {
    const ETH_P_ARP: u16 = 0x0806;
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&addr.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&addr.octets());
    send_frame(ifindex, ETH_P_ARP, [0xff; 6], &frame)
}

/// Sends an unsolicited Neighbour Advertisement (RFC 4861 §7.2.6: to all
/// nodes, override flag set, not solicited) "`addr` is at `mac`" out of
/// `ifindex`, the IPv6 counterpart of [`announce`]. The frame is
/// `netbpf_common::na_frame`'s, as the datapath builds its replies.
pub fn announce6(ifindex: u32, mac: [u8; 6], addr: Ipv6Addr) -> io::Result<()> {
    const ETH_P_IPV6: u16 = 0x86dd;
    let target = addr.octets();
    let frame = na_frame(&Advert {
        eth_dst: &ALL_NODES_MAC,
        mac: &mac,
        target: &target,
        ip_dst: &ALL_NODES,
        flags: na_flags::OVERRIDE,
    });
    send_frame(ifindex, ETH_P_IPV6, ALL_NODES_MAC, &frame)
}

/// Sends the Ethernet `frame` (EtherType `ether_type`, to `dst`) out of
/// `ifindex` through a raw packet socket.
fn send_frame(ifindex: u32, ether_type: u16, dst: [u8; 6], frame: &[u8]) -> io::Result<()> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ether_type.to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, owned descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ether_type.to_be();
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&dst);
    use std::os::fd::AsRawFd;
    // SAFETY: frame and sll outlive the call; the lengths are theirs.
    let n = unsafe {
        libc::sendto(
            fd.as_fd().as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn install_route_and_announce(
    rtnl: &mut Rtnl,
    r: &Resolved,
    uplink: u32,
    uplink_mac: [u8; 6],
) {
    if let Err(e) = rtnl.replace_host_route(r.address, r.ifindex) {
        warn!(
            "routing: cannot route {}/32 to {}: {e}",
            r.address, r.interface
        );
    }
    if uplink_mac != [0; 6]
        && let Err(e) = announce(uplink, uplink_mac, r.address)
    {
        warn!("routing: gratuitous ARP for {} failed: {e}", r.address);
    }
    let Some(v6) = r.ipv6 else {
        return;
    };
    if let Err(e) = rtnl.replace_host_route(v6, r.ifindex) {
        warn!("routing: cannot route {v6}/128 to {}: {e}", r.interface);
    }
    if uplink_mac != [0; 6]
        && let Err(e) = announce6(uplink, uplink_mac, v6)
    {
        warn!("routing: unsolicited neighbour advertisement for {v6} failed: {e}");
    }
}

//! What the config names on this host: the uplink's index, addresses and link type, the interfaces that lead to containers.

use std::net::Ipv4Addr;

use crate::{
    config::Config,
    netdev::{self},
};

use super::error::*;

/// The configuration resolved against this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Uplink interface name.
    pub uplink: String,
    /// Uplink interface index.
    pub uplink_ifindex: u32,
    /// Address masqueraded traffic leaves with.
    pub uplink_addr: Ipv4Addr,
    /// The uplink's IPv4 addresses with their prefix lengths (host bits
    /// kept), e.g. `10.1.2.3/24`: the host's own networks for BGP's import
    /// filter.
    pub uplink_networks: Vec<crate::config::Ipv4Cidr>,
    /// The host's IPv4 addresses when the daemon started: published ports
    /// without an address answer on these.
    pub local_addrs: Vec<Ipv4Addr>,
    /// Interfaces that lead to containers (name, index): those the main
    /// routing table sends a masquerade CIDR or a published container
    /// address to. Hairpinning is handled at their ingress.
    pub inside: Vec<(String, u32)>,
}

/// Resolves interface names and the uplink address, and refuses an uplink
/// or rules that cannot work on this host (a non-Ethernet uplink, a
/// masquerade source containing the uplink's address, a published port
/// aimed at the host itself) before anything is loaded.
pub fn resolve(config: &Config) -> Result<Resolved, DatapathError> {
    let name = &config.uplink.interface;
    let uplink_ifindex = netdev::ifindex(name).map_err(DatapathError::Uplink)?;
    check_ethernet(name, uplink_ifindex)?;
    let uplink_addr = match config.uplink.address {
        Some(addr) => addr,
        None => netdev::first_ipv4(name).map_err(DatapathError::Uplink)?,
    };
    let uplink_networks = netdev::ipv4_networks(name).map_err(DatapathError::Uplink)?;
    let local_addrs = local_addresses(uplink_addr)?;
    config
        .check_host_addresses(
            &uplink_addresses(uplink_addr, &uplink_networks),
            &local_addrs,
        )
        .map_err(DatapathError::Host)?;
    let routes = netdev::routes().map_err(DatapathError::Uplink)?;
    let inside = inside_interfaces(config, &routes, name)
        .into_iter()
        .filter_map(|iface| netdev::ifindex(&iface).ok().map(|i| (iface, i)))
        .collect();
    Ok(Resolved {
        uplink: name.clone(),
        uplink_ifindex,
        uplink_addr,
        uplink_networks,
        local_addrs,
        inside,
    })
}

/// Refuses an uplink whose link type is not Ethernet (asked over
/// rtnetlink, in the daemon's network namespace).
pub(crate) fn check_ethernet(name: &str, ifindex: u32) -> Result<(), DatapathError> {
    use netlink_packet_route::link::LinkLayerType;
    let link_type = crate::rtnl::Rtnl::open()
        .and_then(|mut rtnl| rtnl.link_layer_type(ifindex))
        .map_err(|source| DatapathError::LinkType {
            name: name.to_owned(),
            source,
        })?;
    if link_type == LinkLayerType::Ether {
        return Ok(());
    }
    Err(DatapathError::NotEthernet {
        name: name.to_owned(),
        link_type: link_type.to_string().to_lowercase(),
        arphrd: u16::from(link_type),
    })
}

/// The host's IPv4 addresses (loopback left out: never reachable through
/// the uplink), with the masquerade address among them.
pub(crate) fn local_addresses(uplink_addr: Ipv4Addr) -> Result<Vec<Ipv4Addr>, DatapathError> {
    let mut local = netdev::all_ipv4().map_err(DatapathError::Uplink)?;
    local.retain(|a| !a.is_loopback());
    if !local.contains(&uplink_addr) {
        local.push(uplink_addr);
    }
    Ok(local)
}

/// The host's addresses on the uplink: the masquerade address and every
/// address the interface has.
pub(crate) fn uplink_addresses(
    uplink_addr: Ipv4Addr,
    networks: &[crate::config::Ipv4Cidr],
) -> Vec<Ipv4Addr> {
    let mut out = vec![uplink_addr];
    out.extend(networks.iter().map(|n| n.addr));
    out.sort();
    out.dedup();
    out
}

/// Interfaces whose routes lead into a masquerade CIDR or to a published
/// container, other than the uplink and loopback, sorted and unique.
pub fn inside_interfaces(config: &Config, routes: &[netdev::Route], uplink: &str) -> Vec<String> {
    let mut out: Vec<String> = routes
        .iter()
        .filter(|r| r.iface != uplink && r.iface != "lo" && r.prefix_len > 0)
        .filter(|r| {
            let net = crate::config::Ipv4Cidr {
                addr: r.dst,
                prefix_len: r.prefix_len,
            };
            config.masquerade.iter().any(|m| m.source.overlaps(&net))
                || config.publish.iter().any(|p| net.contains(p.to_addr))
        })
        .map(|r| r.iface.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn inside_interfaces_come_from_routes_into_the_nat() {
        let config = crate::config::Config::from_toml(
            "[uplink]\ninterface = \"eth0\"\n[[masquerade]]\nsource = \"10.77.0.0/24\"\n\
             [[publish]]\nproto = \"tcp\"\nport = 80\nto = \"192.168.5.2:80\"\n",
        )
        .expect("config");
        let routes = crate::netdev::parse_routes(
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t027100CB\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t007100CB\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             veth-c1\t02004D0A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
             docker0\t00004D0A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
             br1\t0005A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             other\t000A0A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
        );
        assert_eq!(routes[2].dst, std::net::Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(routes[2].prefix_len, 32);
        assert_eq!(
            super::inside_interfaces(&config, &routes, "eth0"),
            vec!["br1".to_owned(), "docker0".to_owned(), "veth-c1".to_owned()]
        );
    }
}

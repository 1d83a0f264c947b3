//! `[[container]]`: routed containers and their validation (unique
//! addresses and interfaces, neither the uplink's).
//!
//! A container is dual-stack by adding `ipv6` next to its IPv4 `address`
//! (as Calico assigns one of each): the IPv4 address names the container
//! everywhere else (CLI, owners, Docker/CNI), the IPv6 one is routed the
//! same way beside it.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use netbpf_common::forwardable_source6;

use serde::Deserialize;

use super::{errors::*, types::*, uplink::*};

/// One `[[container]]` entry: route `address` via `interface`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The container's IPv4 address.
    pub address: Ipv4Addr,
    /// Host side of the container's veth pair.
    pub interface: String,
    /// The container's IPv6 address, if it has one (a global or unique
    /// local unicast address: what a router forwards).
    pub ipv6: Option<Ipv6Addr>,
}

impl Container {
    /// A container with an IPv4 address only.
    pub fn ipv4(address: Ipv4Addr, interface: impl Into<String>) -> Self {
        Self {
            address,
            interface: interface.into(),
            ipv6: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContainer {
    address: Option<String>,
    interface: Option<String>,
    ipv6: Option<String>,
}

pub(super) fn validate_containers(
    raw: Vec<RawContainer>,
    uplink: Option<&Uplink>,
    p: &mut Problems,
) -> Vec<Container> {
    let mut out: Vec<Container> = Vec::with_capacity(raw.len());
    let mut by_addr: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut by_if: HashMap<String, usize> = HashMap::new();
    let mut by_v6: HashMap<Ipv6Addr, usize> = HashMap::new();
    for (i, c) in raw.into_iter().enumerate() {
        let akey = format!("container[{i}].address");
        let ikey = format!("container[{i}].interface");
        let vkey = format!("container[{i}].ipv6");
        let address = p.check(container_address(&akey, c.address, uplink, &by_addr));
        let interface = p.check(container_interface(&ikey, c.interface, uplink, &by_if));
        // None: no `ipv6` key; Some(None): one that was refused.
        let ipv6 = c
            .ipv6
            .map(|raw| p.check(container_ipv6(&vkey, &raw, &by_v6)));
        if let Some(address) = address {
            by_addr.insert(address, i);
        }
        if let Some(interface) = &interface {
            by_if.insert(interface.clone(), i);
        }
        if let Some(Some(v6)) = ipv6 {
            by_v6.insert(v6, i);
        }
        if let (Some(address), Some(interface)) = (address, interface)
            && ipv6 != Some(None)
        {
            out.push(Container {
                address,
                interface,
                ipv6: ipv6.flatten(),
            });
        }
    }
    out
}

/// A `[[container]] address`, unique and not the uplink's.
fn container_address(
    key: &str,
    raw: Option<String>,
    uplink: Option<&Uplink>,
    seen: &HashMap<Ipv4Addr, usize>,
) -> Result<Ipv4Addr, ConfigError> {
    let addr_s = required(key, raw, "the container's IPv4 address")?;
    let address = unicast_value(key, &addr_s)?;
    if let Some(&j) = seen.get(&address) {
        return Err(invalid(
            key,
            format!("{addr_s:?} is already used by container[{j}].address"),
        ));
    }
    if uplink.and_then(|u| u.address) == Some(address) {
        return Err(invalid(
            key,
            format!("{addr_s:?} is the same as uplink.address"),
        ));
    }
    Ok(address)
}

/// A `[[container]] ipv6`: an IPv6 address a router forwards (not
/// unspecified, loopback, multicast, link-local or IPv4-mapped), unique.
fn container_ipv6(
    key: &str,
    raw: &str,
    seen: &HashMap<Ipv6Addr, usize>,
) -> Result<Ipv6Addr, ConfigError> {
    let address: Ipv6Addr = raw
        .parse()
        .map_err(|_| invalid(key, format!("{raw:?} is not an IPv6 address")))?;
    if !forwardable_source6(&address.octets()) {
        return Err(invalid(
            key,
            format!(
                "{raw:?} is not a unicast address a router forwards (unspecified, loopback, multicast, link-local and IPv4-mapped addresses are not)"
            ),
        ));
    }
    if let Some(&j) = seen.get(&address) {
        return Err(invalid(
            key,
            format!("{raw:?} is already used by container[{j}].ipv6"),
        ));
    }
    Ok(address)
}

/// A `[[container]] interface`, unique and not the uplink.
fn container_interface(
    key: &str,
    raw: Option<String>,
    uplink: Option<&Uplink>,
    seen: &HashMap<String, usize>,
) -> Result<String, ConfigError> {
    let interface = interface_value(key, raw, "host side of the container's veth")?;
    if let Some(&j) = seen.get(&interface) {
        return Err(invalid(
            key,
            format!("{interface:?} is already used by container[{j}].interface"),
        ));
    }
    if uplink.is_some_and(|u| u.interface == interface) {
        return Err(invalid(
            key,
            format!("{interface:?} is the uplink interface (uplink.interface)"),
        ));
    }
    Ok(interface)
}

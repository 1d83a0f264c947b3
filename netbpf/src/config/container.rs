//! `[[container]]`: routed containers and their validation (unique
//! addresses and interfaces, neither the uplink's).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde::Deserialize;

use super::{errors::*, types::*, uplink::*};

/// One `[[container]]` entry: route `address` via `interface`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The container's IPv4 address.
    pub address: Ipv4Addr,
    /// Host side of the container's veth pair.
    pub interface: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContainer {
    address: Option<String>,
    interface: Option<String>,
}

pub(super) fn validate_containers(
    raw: Vec<RawContainer>,
    uplink: Option<&Uplink>,
    p: &mut Problems,
) -> Vec<Container> {
    let mut out: Vec<Container> = Vec::with_capacity(raw.len());
    let mut by_addr: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut by_if: HashMap<String, usize> = HashMap::new();
    for (i, c) in raw.into_iter().enumerate() {
        let akey = format!("container[{i}].address");
        let ikey = format!("container[{i}].interface");
        let address = p.check(container_address(&akey, c.address, uplink, &by_addr));
        let interface = p.check(container_interface(&ikey, c.interface, uplink, &by_if));
        if let Some(address) = address {
            by_addr.insert(address, i);
        }
        if let Some(interface) = &interface {
            by_if.insert(interface.clone(), i);
        }
        if let (Some(address), Some(interface)) = (address, interface) {
            out.push(Container { address, interface });
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

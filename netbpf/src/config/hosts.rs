//! The checks against the host's own addresses: a `[[masquerade]] source`
//! must not lock the host out, a `[[publish]] to` must be a container.
//! Used by the file's validation, by `Config::check_host_addresses` once
//! the daemon knows the uplink, and by the CLI's live rule changes.

use std::net::Ipv4Addr;

use super::{errors::*, types::*};

/// The loopback network: never behind a NAT, never a container.
const LOOPBACK: Ipv4Cidr = Ipv4Cidr {
    addr: Ipv4Addr::new(127, 0, 0, 0),
    prefix_len: 8,
};

/// Refuses a masquerade source that would lock the host out.
///
/// The ingress program drops every packet arriving on the uplink whose
/// source lies in a masquerade CIDR (those addresses are behind the NAT, so
/// such a packet is spoofed). A source that covers the host's own uplink
/// addresses (`0.0.0.0/0`, or `10.0.0.0/8` on a `10.1.2.3` uplink) makes
/// the host's network, its gateway included, "spoofed": nothing reaches the
/// host any more, and since the links are pinned this lasts until
/// `netbpf down`. Loopback is never behind a NAT.
///
/// `host_addrs` are the host's addresses on the uplink: `uplink.address`
/// when the file is checked on its own, every address of the uplink once
/// the daemon has resolved it ([`Config::check_host_addresses`]), the
/// datapath's masquerade address for `netbpf masquerade add`.
pub fn check_masquerade_source(
    key: &str,
    source: &Ipv4Cidr,
    host_addrs: &[Ipv4Addr],
) -> Result<(), ConfigError> {
    let lockout = "every packet arriving on the uplink from there would be dropped as \
                   spoofed, locking the host out until `netbpf down`; give the containers' \
                   subnet";
    if source.prefix_len == 0 {
        return Err(invalid(
            key,
            format!("\"{source}\" covers every address, the host's own included: {lockout}"),
        ));
    }
    if source.overlaps(&LOOPBACK) {
        return Err(invalid(
            key,
            format!(
                "\"{source}\" overlaps the loopback network {LOOPBACK}, which is never behind a NAT"
            ),
        ));
    }
    if let Some(a) = host_addrs.iter().find(|a| source.contains(**a)) {
        return Err(invalid(
            key,
            format!("\"{source}\" contains {a}, an address of the host on the uplink: {lockout}"),
        ));
    }
    Ok(())
}

/// Refuses a published port's target that is not a container: the
/// unspecified, broadcast, multicast or a loopback address, or (with
/// `host_addrs`) one of the host's own addresses. `to` is the value as
/// written, quoted in the message.
pub fn check_publish_to(
    key: &str,
    to: &str,
    addr: Ipv4Addr,
    host_addrs: &[Ipv4Addr],
) -> Result<(), ConfigError> {
    check_unicast(key, to, addr)?;
    if addr.is_loopback() {
        return Err(invalid(
            key,
            format!(
                "{to:?}: {addr} is a loopback address, never a container's; a service of the \
                 host itself needs no published port"
            ),
        ));
    }
    if host_addrs.contains(&addr) {
        return Err(invalid(
            key,
            format!(
                "{to:?}: {addr} is an address of the host itself, not a container's; a service \
                 of the host needs no published port"
            ),
        ));
    }
    Ok(())
}

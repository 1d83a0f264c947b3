//! `[[publish]]`: published ports, their datapath form (`Publish::{rule,
//! blocks}`), the one overlap rule ([`publish_collides`]) and their
//! validation.

use std::net::Ipv4Addr;

use serde::Deserialize;

use super::{errors::*, hosts::*, types::*, uplink::*};

/// One `[[publish]]` entry: DNAT host port(s) to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Transport protocol.
    pub proto: Proto,
    /// Host port or port range.
    pub port: PortRange,
    /// Container address.
    pub to_addr: Ipv4Addr,
    /// Container port; for a range, the first port of a 1:1 mapped range.
    pub to_port: u16,
    /// Only answer on this host address (`None` = any; `"0.0.0.0"` in the
    /// file also means any).
    pub address: Option<Ipv4Addr>,
}

impl Publish {
    /// The container port that `host_port` maps to, or `None` if
    /// `host_port` is not published by this entry.
    pub fn target_port(&self, host_port: u16) -> Option<u16> {
        self.port
            .contains(host_port)
            .then(|| self.rule().container_port(host_port))
    }

    /// The rule as the datapath stores it.
    pub fn rule(&self) -> netbpf_common::PublishRule {
        netbpf_common::PublishRule::new(
            self.to_addr.octets(),
            self.to_port,
            self.port.start,
            self.port.end,
        )
    }

    /// Its entries in the published-ports trie: `(prefix length, key)`.
    pub fn blocks(&self) -> netbpf_common::PublishBlocks {
        netbpf_common::publish_blocks(
            self.proto.number(),
            self.address.map_or([0; 4], |a| a.octets()),
            self.port.start,
            self.port.end,
        )
    }
}

/// Whether two published entries, each `(protocol, host address or None
/// for any, host ports)`, would answer the same packets: the one overlap
/// rule for the config file and for `netbpf publish add`.
pub fn publish_collides(
    a: (u8, Option<Ipv4Addr>, PortRange),
    b: (u8, Option<Ipv4Addr>, PortRange),
) -> bool {
    let addresses_collide = match (a.1, b.1) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    a.0 == b.0 && addresses_collide && a.2.overlaps(&b.2)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPublish {
    proto: Option<String>,
    #[serde(default, deserialize_with = "de_port")]
    port: Option<IntOrStr>,
    to: Option<String>,
    address: Option<String>,
}

fn publish_proto(key: &str, raw: Option<String>) -> Result<Proto, ConfigError> {
    let proto_s = required(key, raw, "\"tcp\" or \"udp\"")?;
    match proto_s.as_str() {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        _ => Err(invalid(
            key,
            format!("{proto_s:?} is not a supported protocol (expected \"tcp\" or \"udp\")"),
        )),
    }
}

/// A `[[publish]] to`: the container's address and port, and the value as
/// written (quoted in later messages).
fn publish_to(
    key: &str,
    raw: Option<String>,
    host_addrs: &[Ipv4Addr],
) -> Result<(Ipv4Addr, u16, String), ConfigError> {
    let to = required(
        key,
        raw,
        "container \"address:port\", e.g. \"10.77.0.2:4000\"",
    )?;
    let (addr_s, port_s) = to.rsplit_once(':').ok_or_else(|| {
        invalid(
            key,
            format!("{to:?} is not \"address:port\" (e.g. \"10.77.0.2:4000\")"),
        )
    })?;
    let to_addr: Ipv4Addr = addr_s
        .parse()
        .map_err(|_| invalid(key, format!("{to:?}: {addr_s:?} is not an IPv4 address")))?;
    check_publish_to(key, &to, to_addr, host_addrs)?;
    let to_port = parse_port(port_s).map_err(|e| invalid(key, format!("{to:?}: {e}")))?;
    Ok((to_addr, to_port, to))
}

/// `[[publish]] address`: `None` for any address (absent or `0.0.0.0`).
fn publish_address(key: &str, s: &str) -> Result<Option<Ipv4Addr>, ConfigError> {
    let ip = parse_ipv4(key, s)?;
    if ip.is_unspecified() {
        return Ok(None);
    }
    check_unicast(key, s, ip)?;
    Ok(Some(ip))
}

pub(super) fn validate_publish(
    raw: Vec<RawPublish>,
    uplink: Option<&Uplink>,
    p: &mut Problems,
) -> Vec<Publish> {
    let host_addrs: Vec<Ipv4Addr> = uplink.and_then(|u| u.address).into_iter().collect();
    // The valid entries, each with its index in the file.
    let mut valid: Vec<(usize, Publish)> = Vec::with_capacity(raw.len());
    for (i, raw) in raw.into_iter().enumerate() {
        let k = |field: &str| format!("publish[{i}].{field}");
        let proto = p.check(publish_proto(&k("proto"), raw.proto));
        let port = p.check(
            required(
                &k("port"),
                raw.port,
                "a host port like 8080 or a range like \"8000-8010\"",
            )
            .and_then(|v| port_range_value(&k("port"), &v)),
        );
        let to = p.check(publish_to(&k("to"), raw.to, &host_addrs));
        let address = match raw.address {
            None => Some(None),
            Some(s) => p.check(publish_address(&k("address"), &s)),
        };
        let (Some(proto), Some(port), Some((to_addr, to_port, to)), Some(address)) =
            (proto, port, to, address)
        else {
            continue;
        };

        let span = port.end - port.start;
        if u32::from(to_port) + u32::from(span) > 65535 {
            p.check::<()>(Err(invalid(
                k("to"),
                format!(
                    "{to:?}: host ports {port} would map to {}-{}, past 65535",
                    to_port,
                    u32::from(to_port) + u32::from(span)
                ),
            )));
            continue;
        }

        if let Some((j, prev)) = valid.iter().find(|(_, prev)| {
            publish_collides(
                (prev.proto.number(), prev.address, prev.port),
                (proto.number(), address, port),
            )
        }) {
            let prev_where = match prev.address {
                Some(a) => format!(" on {a}"),
                None => String::new(),
            };
            p.check::<()>(Err(invalid(
                k("port"),
                format!(
                    "{proto} port {port} overlaps publish[{j}].port ({} {}{prev_where})",
                    prev.proto, prev.port
                ),
            )));
            continue;
        }

        valid.push((
            i,
            Publish {
                proto,
                port,
                to_addr,
                to_port,
                address,
            },
        ));
    }
    valid.into_iter().map(|(_, p)| p).collect()
}

/// One `[[publish]]` entry from the values `netbpf publish add` takes,
/// checked by the code that checks the file's entries and named like a
/// file's first entry (`publish[0].to`). The host's addresses and the
/// other rules are the datapath's, checked by `control`.
pub fn publish_entry(
    proto: &str,
    port: &str,
    to: &str,
    address: Option<Ipv4Addr>,
) -> Result<Publish, ConfigError> {
    let raw = RawPublish {
        proto: Some(proto.to_owned()),
        port: Some(cli_port(port)),
        to: Some(to.to_owned()),
        address: address.map(|a| a.to_string()),
    };
    let mut p = Problems::default();
    let entry = validate_publish(vec![raw], None, &mut p).pop();
    p.finish()?;
    entry.ok_or_else(|| invalid("publish[0]", "could not be validated"))
}

/// What names a published entry for `netbpf publish del`: protocol, host
/// port (range) and address (`None` for any), checked like
/// [`publish_entry`] checks them.
pub fn publish_key(
    proto: &str,
    port: &str,
    address: Option<Ipv4Addr>,
) -> Result<(Proto, PortRange, Option<Ipv4Addr>), ConfigError> {
    let mut p = Problems::default();
    let proto = p.check(publish_proto("publish[0].proto", Some(proto.to_owned())));
    let port = p.check(port_range_value("publish[0].port", &cli_port(port)));
    let address = match address {
        None => Some(None),
        Some(a) => p.check(publish_address("publish[0].address", &a.to_string())),
    };
    p.finish()?;
    match (proto, port, address) {
        (Some(proto), Some(port), Some(address)) => Ok((proto, port, address)),
        _ => Err(invalid("publish[0]", "could not be validated")),
    }
}

//! `[[masquerade]]`: source-NAT rules and their validation (CIDR, host
//! bits, overlaps, the host-lockout check, ports).

use std::net::Ipv4Addr;

use serde::Deserialize;

use super::{errors::*, hosts::*, types::*, uplink::*};

/// One `[[masquerade]]` entry: SNAT traffic from `source` leaving the uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    /// Source network (host bits are zero).
    pub source: Ipv4Cidr,
    /// Optional SNAT source-port range.
    pub ports: Option<PortRange>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMasquerade {
    source: Option<String>,
    #[serde(default, deserialize_with = "de_port")]
    ports: Option<IntOrStr>,
}

/// One `[[masquerade]] source`, checked against the host's addresses and
/// the valid sources before it (`prev`: index in the file, CIDR).
fn masquerade_source(
    key: &str,
    raw: Option<String>,
    host_addrs: &[Ipv4Addr],
    prev: &[(usize, Ipv4Cidr)],
) -> Result<Ipv4Cidr, ConfigError> {
    let s = required(key, raw, "an IPv4 CIDR like \"10.77.0.0/24\"")?;
    let source: Ipv4Cidr = s
        .parse()
        .map_err(|e| invalid(key, format!("{s:?} is not an IPv4 CIDR: {e}")))?;
    if source.has_host_bits() {
        return Err(invalid(
            key,
            format!(
                "{s:?} has host bits set (did you mean \"{}\"?)",
                source.network()
            ),
        ));
    }
    check_masquerade_source(key, &source, host_addrs)?;
    if let Some((j, other)) = prev.iter().find(|(_, other)| other.overlaps(&source)) {
        return Err(invalid(
            key,
            format!("{s:?} overlaps masquerade[{j}].source (\"{other}\")"),
        ));
    }
    Ok(source)
}

pub(super) fn validate_masquerade(
    raw: Vec<RawMasquerade>,
    uplink: Option<&Uplink>,
    p: &mut Problems,
) -> Vec<Masquerade> {
    let host_addrs: Vec<Ipv4Addr> = uplink.and_then(|u| u.address).into_iter().collect();
    let mut valid: Vec<(usize, Ipv4Cidr)> = Vec::with_capacity(raw.len());
    let mut out: Vec<Masquerade> = Vec::with_capacity(raw.len());
    for (i, m) in raw.into_iter().enumerate() {
        let source = p.check(masquerade_source(
            &format!("masquerade[{i}].source"),
            m.source,
            &host_addrs,
            &valid,
        ));
        let ports = m
            .ports
            .and_then(|v| p.check(port_range_value(&format!("masquerade[{i}].ports"), &v)));
        if let Some(source) = source {
            valid.push((i, source));
            out.push(Masquerade { source, ports });
        }
    }
    out
}

/// One `[[masquerade]]` entry from the values `netbpf masquerade add|del`
/// takes, checked like the file's entries.
pub fn masquerade_entry(source: &str, ports: Option<&str>) -> Result<Masquerade, ConfigError> {
    let raw = RawMasquerade {
        source: Some(source.to_owned()),
        ports: ports.map(|s| IntOrStr::Str(s.to_owned())),
    };
    let mut p = Problems::default();
    let entry = validate_masquerade(vec![raw], None, &mut p).pop();
    p.finish()?;
    entry.ok_or_else(|| invalid("masquerade[0]", "could not be validated"))
}

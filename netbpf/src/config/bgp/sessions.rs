//! The BGP sessions of `[bgp]`: `[[bgp.peer]]` (full mesh or eBGP),
//! `[[bgp.reflector]]` (this host is a route-reflector client) and
//! `[[bgp.client]]` (this host is a route reflector), and `cluster_id`.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::options::{self, SessionOptions};
use crate::config::{errors::*, types::*};

/// What a session is to this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerRole {
    /// A `[[bgp.peer]]`: a plain neighbour (full-mesh iBGP, or eBGP).
    Peer,
    /// A `[[bgp.reflector]]`: a route reflector this host is a client of.
    Reflector,
    /// A `[[bgp.client]]`: a client of this host, which reflects to it
    /// (BIRD's `rr client`).
    Client,
}

impl PeerRole {
    /// The config table that declares sessions of this role.
    pub fn table(self) -> &'static str {
        match self {
            PeerRole::Peer => "bgp.peer",
            PeerRole::Reflector => "bgp.reflector",
            PeerRole::Client => "bgp.client",
        }
    }
}

/// What this host is in the BGP topology (shown by `netbpf bgp status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BgpRole {
    /// Only `[[bgp.peer]]`s: every host peers with every other.
    FullMesh,
    /// At least one `[[bgp.reflector]]` and no `[[bgp.client]]`.
    ReflectorClient,
    /// At least one `[[bgp.client]]`: this host reflects routes.
    Reflector,
    /// Only `[[bgp.peer]]`s, each in another AS: eBGP to routers (a
    /// top-of-rack router), the hosts do not peer with each other.
    Ebgp,
}

impl std::fmt::Display for BgpRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BgpRole::FullMesh => "full mesh",
            BgpRole::ReflectorClient => "route-reflector client",
            BgpRole::Reflector => "route reflector",
            BgpRole::Ebgp => "eBGP to routers",
        })
    }
}

/// One BGP neighbour: a `[[bgp.peer]]`, `[[bgp.reflector]]` or
/// `[[bgp.client]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpPeer {
    /// Its address (on the uplink's segment).
    pub address: Ipv4Addr,
    /// Its AS (`as`): the same as `local_as` makes an iBGP session.
    /// Always `local_as` for a reflector or a client.
    pub asn: u32,
    /// Which table declared it.
    pub role: PeerRole,
    /// `multihop`, `password`, `next_hop`.
    pub options: SessionOptions,
}

impl BgpPeer {
    /// A direct session without a password, BIRD's next-hop default.
    pub fn new(address: Ipv4Addr, asn: u32, role: PeerRole) -> Self {
        BgpPeer {
            address,
            asn,
            role,
            options: SessionOptions::default(),
        }
    }

    /// Whether the neighbour is in another AS than `local_as`.
    pub fn is_ebgp(&self, local_as: u32) -> bool {
        self.asn != local_as
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBgpPeer {
    address: Option<String>,
    #[serde(rename = "as")]
    asn: Option<i64>,
    multihop: Option<i64>,
    password: Option<String>,
    next_hop: Option<options::NextHop>,
}

/// The raw session tables of `[bgp]`.
pub(super) struct RawSessions {
    pub peer: Vec<RawBgpPeer>,
    pub reflector: Vec<RawBgpPeer>,
    pub client: Vec<RawBgpPeer>,
    pub cluster_id: Option<String>,
}

/// A usable AS number: 1..=4294967294, not AS_TRANS (23456).
pub(super) fn validate_asn(key: &str, n: i64) -> Result<u32, ConfigError> {
    match u32::try_from(n) {
        Ok(23456) => Err(invalid(
            key,
            "23456 is AS_TRANS (RFC 6793), not a real AS number",
        )),
        Ok(asn) if (1..u32::MAX).contains(&asn) => Ok(asn),
        _ => Err(invalid(
            key,
            format!("{n} is not an AS number in 1..=4294967294"),
        )),
    }
}

/// One session's `address`: not this host and not another session's.
fn peer_address(
    key: &str,
    raw: Option<String>,
    router_id: Option<Ipv4Addr>,
    prev: &[(String, Ipv4Addr)],
) -> Result<Ipv4Addr, ConfigError> {
    let s = required(key, raw, "the neighbour's IPv4 address")?;
    let address = unicast_value(key, &s)?;
    if router_id == Some(address) {
        return Err(invalid(
            key,
            format!("{s:?} is bgp.router_id: a host does not peer with itself"),
        ));
    }
    if let Some((other, _)) = prev.iter().find(|(_, a)| *a == address) {
        return Err(invalid(key, format!("{s:?} is already {other}")));
    }
    Ok(address)
}

/// One session's `as`: required for a `[[bgp.peer]]`; for a reflector or
/// a client it defaults to `local_as` and may only be `local_as` (route
/// reflection is iBGP, RFC 4456).
fn peer_asn(
    key: &str,
    raw: Option<i64>,
    role: PeerRole,
    local_as: Option<u32>,
) -> Result<Option<u32>, ConfigError> {
    if role == PeerRole::Peer {
        return required(key, raw, "the neighbour's AS number")
            .and_then(|n| validate_asn(key, n))
            .map(Some);
    }
    let Some(n) = raw else { return Ok(local_as) };
    let asn = validate_asn(key, n)?;
    match local_as {
        Some(local) if local != asn => Err(invalid(
            key,
            format!(
                "{asn} is not bgp.local_as ({local}): route reflection is iBGP, so a \
                 [[{}]] is in this host's AS (leave `as` out)",
                role.table()
            ),
        )),
        _ => Ok(Some(asn)),
    }
}

/// Every session of `[bgp]` and the cluster id (`Some` exactly when this
/// host is a reflector: `cluster_id`, else the router id), or `None`
/// after recording every bad key in `p`.
pub(super) fn validate_sessions(
    raw: RawSessions,
    local_as: Option<u32>,
    router_id: Option<Ipv4Addr>,
    p: &mut Problems,
) -> Option<(Vec<BgpPeer>, Option<Ipv4Addr>)> {
    let is_reflector = !raw.client.is_empty();
    let cluster_id = match (raw.cluster_id, is_reflector) {
        (Some(_), false) => p.check(Err(invalid(
            "bgp.cluster_id",
            "only a route reflector has a cluster id: add its clients as [[bgp.client]], \
             or remove cluster_id",
        ))),
        (Some(s), true) => match s.parse::<Ipv4Addr>() {
            Ok(id) if !id.is_unspecified() => Some(Some(id)),
            _ => p.check(Err(invalid(
                "bgp.cluster_id",
                format!("{s:?} is not a cluster id (a non-zero IPv4 address, e.g. the router id)"),
            ))),
        },
        (None, true) => router_id.map(Some),
        (None, false) => Some(None),
    };
    if raw.peer.is_empty() && raw.reflector.is_empty() && !is_reflector {
        p.check::<()>(Err(invalid(
            "bgp.peer",
            "at least one [[bgp.peer]] (address and as of a BGP neighbour), \
             [[bgp.reflector]] or [[bgp.client]] is required",
        )));
    }
    let total = raw.peer.len() + raw.reflector.len() + raw.client.len();
    // The valid addresses, each with its key.
    let mut addresses: Vec<(String, Ipv4Addr)> = Vec::with_capacity(total);
    let mut peers: Vec<BgpPeer> = Vec::with_capacity(total);
    let tables = [
        (PeerRole::Peer, raw.peer),
        (PeerRole::Reflector, raw.reflector),
        (PeerRole::Client, raw.client),
    ];
    for (role, list) in tables {
        for (i, peer) in list.into_iter().enumerate() {
            let akey = format!("{}[{i}].address", role.table());
            let address = p.check(peer_address(&akey, peer.address, router_id, &addresses));
            let skey = format!("{}[{i}].as", role.table());
            let asn = p.check(peer_asn(&skey, peer.asn, role, local_as)).flatten();
            let base = format!("{}[{i}]", role.table());
            let multihop = match peer.multihop {
                None => Some(None),
                Some(n) => p
                    .check(options::multihop(&format!("{base}.multihop"), n))
                    .map(Some),
            };
            let password = match peer.password {
                None => Some(None),
                Some(s) => p
                    .check(options::password(&format!("{base}.password"), s))
                    .map(Some),
            };
            if let Some(address) = address {
                addresses.push((akey, address));
            }
            if let (Some(address), Some(asn), Some(multihop), Some(password)) =
                (address, asn, multihop, password)
            {
                peers.push(BgpPeer {
                    address,
                    asn,
                    role,
                    options: SessionOptions {
                        multihop,
                        password,
                        next_hop: peer.next_hop,
                    },
                });
            }
        }
    }
    if peers.len() != total {
        return None;
    }
    Some((peers, cluster_id?))
}

/// This host's role given its sessions and its AS.
pub(super) fn role_of(peers: &[BgpPeer], local_as: u32) -> BgpRole {
    if peers.iter().any(|p| p.role == PeerRole::Client) {
        BgpRole::Reflector
    } else if peers.iter().any(|p| p.role == PeerRole::Reflector) {
        BgpRole::ReflectorClient
    } else if !peers.is_empty() && peers.iter().all(|p| p.is_ebgp(local_as)) {
        BgpRole::Ebgp
    } else {
        BgpRole::FullMesh
    }
}

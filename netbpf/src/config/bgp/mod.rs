//! `[bgp]`: container routes across hosts through BIRD; the schema, its
//! defaults and its validation.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{errors::*, types::*};

mod options;
mod sessions;

pub use options::{BgpPassword, MAX_BGP_MULTIHOP, MAX_BGP_PASSWORD_LEN, NextHop, SessionOptions};
pub use sessions::{BgpPeer, BgpRole, PeerRole};
use sessions::{RawBgpPeer, RawSessions, role_of, validate_asn, validate_sessions};

/// Default path of BIRD's control socket (Debian's `bird2`).
pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";

/// Default path of the BIRD config fragment netbpf renders and owns.
pub const DEFAULT_BIRD_INCLUDE: &str = "/etc/bird/netbpf.conf";

/// Default path of BIRD's main config file.
pub const DEFAULT_BIRD_MAIN_CONFIG: &str = "/etc/bird/bird.conf";

/// Default `[bgp] receive_limit`: routes accepted from one peer before
/// BIRD drops the rest (`receive limit ... action block`). Room for a few
/// thousand hosts' containers as /32s; raise it for more.
pub const DEFAULT_BGP_RECEIVE_LIMIT: u32 = 16_384;

/// Default `[bgp] graceful_restart_time` in seconds (BIRD's and Calico's):
/// how long the peers keep this host's routes while its BIRD restarts.
pub const DEFAULT_BGP_GRACEFUL_RESTART_TIME: u32 = 120;

/// Largest `[bgp] graceful_restart_time`: the BGP capability holds 12 bits
/// of seconds (RFC 4724).
pub const MAX_BGP_GRACEFUL_RESTART_TIME: u32 = 4095;

/// Largest accepted `[bgp] receive_limit`.
pub const MAX_BGP_RECEIVE_LIMIT: u32 = 4_000_000;

/// Shortest accepted `[bgp] import_min_len`: a learned prefix is a
/// container (/32) or another host's block, never wider than /8 (the same
/// bound as `block`).
pub const MIN_BGP_IMPORT_LEN: u8 = 8;

/// The `[bgp]` table: announce the routed containers over BGP through
/// BIRD 2 and learn the other hosts' containers from it.
///
/// ```toml
/// [bgp]
/// local_as = 64512                    # required: this host's AS
/// router_id = "10.0.0.11"             # required: BGP router id (an IPv4 address)
/// # socket = "/run/bird/bird.ctl"     # BIRD's control socket
/// # config = "/etc/bird/netbpf.conf"  # the fragment netbpf writes (it owns this file)
/// # main_config = "/etc/bird/bird.conf" # written by netbpf only if missing
/// # block = "10.10.1.0/24"            # announce this block plus the /32s outside it
/// # import_min_len = 32               # learn prefixes this long or longer (default: block's, else 32)
/// # receive_limit = 16384             # routes accepted per peer; BIRD drops the rest
/// # graceful_restart_time = "2m"      # peers keep our routes this long while BIRD restarts
///
/// [[bgp.peer]]                       # full mesh: one per other host (or an eBGP router)
/// address = "10.0.0.12"
/// as = 64512
/// # multihop = 2                      # the neighbour is not on the segment (TTL)
/// # password = "..."                  # TCP MD5 on the session
/// # next_hop = "self"                 # or "keep": next hop of routes passed on
///
/// # Or, instead of the full mesh, route reflectors (iBGP: `as` is local_as):
/// # [[bgp.reflector]]                 # this host is a client of 10.0.0.2
/// # address = "10.0.0.2"
/// # Or this host is a reflector for its clients:
/// # cluster_id = "10.0.0.2"           # in [bgp]; default: router_id
/// # [[bgp.client]]
/// # address = "10.0.0.11"
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    /// This host's autonomous system number (`local_as`).
    pub local_as: u32,
    /// The BGP router id (`router_id`).
    pub router_id: Ipv4Addr,
    /// BIRD's control socket (`socket`).
    pub socket: PathBuf,
    /// The fragment netbpf renders and owns (`config`); BIRD's main config
    /// includes it.
    pub config: PathBuf,
    /// BIRD's main config (`main_config`): netbpf writes a complete one
    /// only when the file does not exist (or is one it wrote before).
    pub main_config: PathBuf,
    /// A per-host block announced as a whole (`block`); containers outside
    /// it are announced as /32s. `None`: every container as a /32.
    pub block: Option<Ipv4Cidr>,
    /// Shortest prefix learned from a peer (`import_min_len`): /32s, the
    /// containers, by default; with a `block`, the block's length, so the
    /// other hosts' blocks of the same size are learned too. Shorter
    /// prefixes (the default route, aggregates) are rejected, and so is
    /// anything inside the host's own networks.
    pub import_min_len: u8,
    /// Routes accepted from one peer (`receive_limit`); BIRD drops the
    /// routes past it and keeps the session (`action block`).
    pub receive_limit: u32,
    /// How long the peers keep this host's routes while its BIRD restarts
    /// (`graceful_restart_time`, seconds; BIRD's `graceful restart time`).
    /// A host that stays down is withdrawn after it.
    pub graceful_restart_time: u32,
    /// BGP neighbours: the `[[bgp.peer]]`s, then the `[[bgp.reflector]]`s,
    /// then the `[[bgp.client]]`s, each in file order.
    pub peers: Vec<BgpPeer>,
    /// The route-reflector cluster id (`cluster_id`, else the router id):
    /// `Some` exactly when this host has `[[bgp.client]]`s.
    pub cluster_id: Option<Ipv4Addr>,
}

impl BgpConfig {
    /// Full mesh, route-reflector client or route reflector, from the
    /// sessions.
    pub fn role(&self) -> BgpRole {
        role_of(&self.peers, self.local_as)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBgp {
    local_as: Option<i64>,
    router_id: Option<String>,
    socket: Option<String>,
    config: Option<String>,
    main_config: Option<String>,
    block: Option<String>,
    import_min_len: Option<i64>,
    receive_limit: Option<i64>,
    #[serde(default, deserialize_with = "de_duration")]
    graceful_restart_time: Option<IntOrStr>,
    cluster_id: Option<String>,
    #[serde(default)]
    peer: Vec<RawBgpPeer>,
    #[serde(default)]
    reflector: Vec<RawBgpPeer>,
    #[serde(default)]
    client: Vec<RawBgpPeer>,
}

/// An absolute path, as given (BIRD is a separate process: relative paths
/// would depend on both working directories).
fn bgp_path(key: &str, raw: Option<String>, default: &str) -> Result<PathBuf, ConfigError> {
    let s = raw.unwrap_or_else(|| default.to_owned());
    if s.is_empty() || !s.starts_with('/') {
        return Err(invalid(key, format!("{s:?} is not an absolute path")));
    }
    if s.contains('"') || s.chars().any(|c| c.is_control()) {
        return Err(invalid(
            key,
            format!(
                "{s:?} contains a quote or control character, which BIRD's include cannot hold"
            ),
        ));
    }
    Ok(PathBuf::from(s))
}

fn bgp_block(s: &str) -> Result<Ipv4Cidr, ConfigError> {
    let cidr: Ipv4Cidr = s
        .parse()
        .map_err(|e| invalid("bgp.block", format!("{s:?} is not an IPv4 CIDR: {e}")))?;
    if cidr.has_host_bits() {
        return Err(invalid(
            "bgp.block",
            format!(
                "{s:?} has host bits set (did you mean \"{}\"?)",
                cidr.network()
            ),
        ));
    }
    if cidr.prefix_len < 8 {
        return Err(invalid(
            "bgp.block",
            format!("{s:?} is wider than /8; a per-host block is a small range"),
        ));
    }
    Ok(cidr)
}

/// `graceful_restart_time` in seconds: 1..=4095, as seconds or a duration.
fn restart_time(raw: Option<IntOrStr>) -> Result<u32, ConfigError> {
    const KEY: &str = "bgp.graceful_restart_time";
    let (secs, shown) = match raw {
        None => return Ok(DEFAULT_BGP_GRACEFUL_RESTART_TIME),
        Some(IntOrStr::Int(n)) => (u64::try_from(n).unwrap_or(0), n.to_string()),
        Some(IntOrStr::Str(s)) => {
            let d = parse_duration(&s)
                .map_err(|e| invalid(KEY, format!("{s:?} is not a valid duration ({e})")))?;
            if d.subsec_nanos() != 0 {
                return Err(invalid(
                    KEY,
                    format!("{s:?} is not a whole number of seconds"),
                ));
            }
            (d.as_secs(), format!("{s:?}"))
        }
    };
    match u32::try_from(secs) {
        Ok(t) if (1..=MAX_BGP_GRACEFUL_RESTART_TIME).contains(&t) => Ok(t),
        _ => Err(invalid(
            KEY,
            format!(
                "{shown} is not a restart time in 1..={MAX_BGP_GRACEFUL_RESTART_TIME} seconds \
                 (the BGP capability's 12 bits)"
            ),
        )),
    }
}

/// `[bgp]`, or `None` after recording every bad key in `p`.
pub(super) fn validate_bgp(raw: RawBgp, p: &mut Problems) -> Option<BgpConfig> {
    let local_as = p.check(
        required(
            "bgp.local_as",
            raw.local_as,
            "this host's AS number, e.g. 64512",
        )
        .and_then(|n| validate_asn("bgp.local_as", n)),
    );
    let router_id = p.check(
        required(
            "bgp.router_id",
            raw.router_id,
            "an IPv4 address, usually the uplink's",
        )
        .and_then(|rid| unicast_value("bgp.router_id", &rid)),
    );
    let socket = p.check(bgp_path("bgp.socket", raw.socket, DEFAULT_BIRD_SOCKET));
    let config = p.check(bgp_path("bgp.config", raw.config, DEFAULT_BIRD_INCLUDE));
    let main_config = p.check(bgp_path(
        "bgp.main_config",
        raw.main_config,
        DEFAULT_BIRD_MAIN_CONFIG,
    ));
    if let (Some(config), Some(main_config)) = (&config, &main_config)
        && config == main_config
    {
        p.check::<()>(Err(invalid(
            "bgp.config",
            format!(
                "{:?} is also bgp.main_config; netbpf's fragment must be a file of its own",
                config.display()
            ),
        )));
    }
    let block = match raw.block {
        None => Some(None),
        Some(s) => p.check(bgp_block(&s)).map(Some),
    };
    let import_min_len = match raw.import_min_len {
        None => block.map(|block| block.map_or(32, |b| b.prefix_len)),
        Some(n) => match u8::try_from(n) {
            Ok(len) if (MIN_BGP_IMPORT_LEN..=32).contains(&len) => Some(len),
            _ => p.check(Err(invalid(
                "bgp.import_min_len",
                format!(
                    "{n} is not a prefix length in {MIN_BGP_IMPORT_LEN}..=32 (containers are \
                     /32s, blocks a small range; a default route is never learned)"
                ),
            ))),
        },
    };
    let receive_limit = match raw.receive_limit {
        None => Some(DEFAULT_BGP_RECEIVE_LIMIT),
        Some(n) => match u32::try_from(n) {
            Ok(limit) if (1..=MAX_BGP_RECEIVE_LIMIT).contains(&limit) => Some(limit),
            _ => p.check(Err(invalid(
                "bgp.receive_limit",
                format!("{n} is not a route count in 1..={MAX_BGP_RECEIVE_LIMIT}"),
            ))),
        },
    };
    let graceful_restart_time = p.check(restart_time(raw.graceful_restart_time));
    let sessions = validate_sessions(
        RawSessions {
            peer: raw.peer,
            reflector: raw.reflector,
            client: raw.client,
            cluster_id: raw.cluster_id,
        },
        local_as,
        router_id,
        p,
    );
    let (peers, cluster_id) = sessions?;
    Some(BgpConfig {
        local_as: local_as?,
        router_id: router_id?,
        socket: socket?,
        config: config?,
        main_config: main_config?,
        block: block?,
        import_min_len: import_min_len?,
        receive_limit: receive_limit?,
        graceful_restart_time: graceful_restart_time?,
        peers,
        cluster_id,
    })
}

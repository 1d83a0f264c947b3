//! `netbpf bgp status`: BIRD's protocols and routes, parsed and shown.

use std::{fmt::Write as _, path::Path};

use serde::Serialize;

use super::{bird::*, error::*, names::*};
use crate::config::{BgpConfig, BgpRole, PeerRole};

// ---------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------

/// A BGP protocol (session) as BIRD reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// BIRD's protocol name (`netbpf_peer_...` for netbpf's peers).
    pub name: String,
    /// Whether netbpf configured it.
    pub netbpf: bool,
    /// The neighbour's address.
    pub neighbor: Option<String>,
    /// The neighbour's AS.
    pub neighbor_as: Option<u32>,
    /// Our AS on this session.
    pub local_as: Option<u32>,
    /// Protocol state: `up`, `start`, `down`, ...
    pub state: String,
    /// BGP state: `Established`, `Active`, `Connect`, `Idle`, ...
    pub bgp_state: String,
    /// Since when (BIRD's clock).
    pub since: String,
    /// BIRD's info column (and the last error, if any).
    pub info: String,
    /// The last error BIRD recorded for the session.
    pub last_error: Option<String>,
    /// Routes imported from the peer.
    pub imported: Option<u64>,
    /// Routes exported to the peer.
    pub exported: Option<u64>,
    /// BIRD's receive limit on the session (`[bgp] receive_limit`).
    pub receive_limit: Option<u64>,
    /// Whether BIRD reflects routes to this peer (`rr client`: the
    /// session is `internal route-reflector`).
    pub rr_client: bool,
    /// Whether the neighbour is in another AS (eBGP: BIRD's `Neighbor AS`
    /// differs from its `Local AS`, or `Session: external`).
    pub ebgp: bool,
    /// What the session is in netbpf's config (`[[bgp.peer]]`,
    /// `[[bgp.reflector]]` or `[[bgp.client]]`), when the config is known.
    pub role: Option<PeerRole>,
    /// The neighbour's graceful restart.
    pub graceful_restart: GracefulRestart,
    /// The restart time the neighbour announced, in seconds: how long its
    /// routes are kept while it restarts.
    pub restart_time: Option<u32>,
}

/// A neighbour's graceful restart (RFC 4724) as BIRD reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GracefulRestart {
    /// Not known: the session never came up, so no capabilities yet.
    #[default]
    Unknown,
    /// The neighbour did not announce the capability.
    Off,
    /// The neighbour can restart gracefully (its routes would be kept).
    Able,
    /// The neighbour is restarting: its routes are kept as stale until it
    /// is back or its restart time runs out.
    Restarting,
}

impl GracefulRestart {
    fn as_str(self) -> &'static str {
        match self {
            GracefulRestart::Unknown => "-",
            GracefulRestart::Off => "off",
            GracefulRestart::Able => "able",
            GracefulRestart::Restarting => "restarting",
        }
    }
}

/// One route as `show route` prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteStatus {
    /// The prefix, e.g. `10.10.2.1/32`.
    pub prefix: String,
    /// `unicast`, `blackhole`, `unreachable`, ...
    pub kind: String,
    /// The protocol it came from.
    pub protocol: String,
    /// Whether it is the best (exported) route for its prefix.
    pub primary: bool,
    /// Next hop, for unicast routes.
    pub via: Option<String>,
    /// Interface of the next hop.
    pub interface: Option<String>,
}

/// `netbpf bgp status`: BIRD's sessions and the routes announced and learned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BgpStatus {
    /// The control socket asked.
    pub socket: String,
    /// BIRD's greeting (its version).
    pub bird: String,
    /// Full mesh, route-reflector client or reflector, when the config
    /// is known ([`BgpStatus::with_config`]).
    pub role: Option<BgpRole>,
    /// The cluster id, when this host is a route reflector.
    pub cluster_id: Option<String>,
    /// Every BGP protocol.
    pub peers: Vec<PeerStatus>,
    /// Routes of [`STATIC_PROTOCOL`] and [`STATIC_PROTOCOL6`]: what this
    /// host announces.
    pub announced: Vec<RouteStatus>,
    /// Routes learned over BGP.
    pub learned: Vec<RouteStatus>,
}

/// Parses the answer to `show protocols all`, keeping the BGP protocols.
pub fn parse_protocols(lines: &[ReplyLine]) -> Vec<PeerStatus> {
    let mut out: Vec<PeerStatus> = Vec::new();
    let mut bgp = false;
    // Inside "Neighbor capabilities" (vs. the local ones or elsewhere).
    let mut neighbor_caps = false;
    for l in lines {
        match l.code {
            1002 => {
                let t: Vec<&str> = l.text.split_whitespace().collect();
                bgp = t.get(1) == Some(&"BGP");
                neighbor_caps = false;
                if bgp {
                    let name = t.first().copied().unwrap_or_default().to_owned();
                    out.push(PeerStatus {
                        netbpf: name.starts_with("netbpf_peer_"),
                        name,
                        state: t.get(3).copied().unwrap_or_default().to_owned(),
                        since: t.get(4).copied().unwrap_or_default().to_owned(),
                        info: t.get(5..).map(|r| r.join(" ")).unwrap_or_default(),
                        ..Default::default()
                    });
                }
            }
            1006 if bgp => {
                let Some(p) = out.last_mut() else { continue };
                let text = l.text.trim();
                match text {
                    "Neighbor capabilities" => neighbor_caps = true,
                    "Local capabilities" => neighbor_caps = false,
                    "Neighbor graceful restart active" => {
                        p.graceful_restart = GracefulRestart::Restarting;
                    }
                    "Graceful restart"
                        if neighbor_caps && p.graceful_restart != GracefulRestart::Restarting =>
                    {
                        p.graceful_restart = GracefulRestart::Able;
                    }
                    _ => {}
                }
                let Some((key, value)) = text.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                match key.trim() {
                    "Session" => {
                        neighbor_caps = false;
                        p.rr_client = value.split_whitespace().any(|w| w == "route-reflector");
                        p.ebgp |= value.split_whitespace().next() == Some("external");
                    }
                    "Restart time" if neighbor_caps => p.restart_time = value.parse().ok(),
                    "Receive limit" => p.receive_limit = value.parse().ok(),
                    "BGP state" => p.bgp_state = value.to_owned(),
                    "Neighbor address" => p.neighbor = Some(value.to_owned()),
                    "Neighbor AS" => p.neighbor_as = value.parse().ok(),
                    "Local AS" => p.local_as = value.parse().ok(),
                    "Last error" => p.last_error = Some(value.to_owned()),
                    "Routes" if p.imported.is_none() => {
                        for part in value.split(',') {
                            let mut w = part.split_whitespace();
                            let (Some(n), Some(what)) = (w.next(), w.next()) else {
                                continue;
                            };
                            match what {
                                "imported" => p.imported = n.parse().ok(),
                                "exported" => p.exported = n.parse().ok(),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    for p in &mut out {
        if let (Some(n), Some(l)) = (p.neighbor_as, p.local_as) {
            p.ebgp |= n != l;
        }
        if p.graceful_restart == GracefulRestart::Unknown && p.bgp_state == "Established" {
            // Up, and no graceful restart among the neighbour's capabilities.
            p.graceful_restart = GracefulRestart::Off;
        }
        if p.bgp_state.is_empty() {
            // Down protocols have no details: the info column says it.
            p.bgp_state = p.info.split_whitespace().next().unwrap_or("").to_owned();
        }
    }
    out
}

/// Parses the answer to a `show route ...` command (without `all`).
pub fn parse_routes(lines: &[ReplyLine]) -> Vec<RouteStatus> {
    let mut out: Vec<RouteStatus> = Vec::new();
    let mut prefix = String::new();
    for l in lines.iter().filter(|l| l.code == 1007) {
        let text = l.text.trim();
        if text.is_empty() || text.starts_with("Table ") {
            continue;
        }
        let mut words = text.split_whitespace().peekable();
        if text.starts_with("via ") || text.starts_with("dev ") {
            let Some(r) = out.last_mut() else { continue };
            while let Some(w) = words.next() {
                match w {
                    "via" => r.via = words.next().map(str::to_owned),
                    "on" | "dev" => r.interface = words.next().map(str::to_owned),
                    _ => {}
                }
            }
            continue;
        }
        if words.peek().is_some_and(|w| w.contains('/')) {
            prefix = words.next().unwrap_or_default().to_owned();
        }
        let kind = words.next().unwrap_or_default().to_owned();
        let mut protocol = String::new();
        let mut primary = false;
        let mut rest = String::new();
        for w in words {
            if let Some(p) = w.strip_prefix('[')
                && protocol.is_empty()
            {
                protocol = p.trim_end_matches(']').to_owned();
            } else if w == "*" {
                primary = true;
            }
            rest.push_str(w);
            rest.push(' ');
        }
        // Routes printed on one line: "unicast [...] * (100) via X on Y" is
        // BIRD 1's shape; BIRD 2 puts the next hop on the next line.
        let mut r = RouteStatus {
            prefix: prefix.clone(),
            kind,
            protocol,
            primary,
            via: None,
            interface: None,
        };
        let mut w = rest.split_whitespace();
        while let Some(x) = w.next() {
            match x {
                "via" => r.via = w.next().map(str::to_owned),
                "on" | "dev" => r.interface = w.next().map(str::to_owned),
                _ => {}
            }
        }
        out.push(r);
    }
    out
}

/// Asks BIRD at `socket` for its BGP sessions and routes.
pub fn status(socket: &Path) -> Result<BgpStatus, BgpError> {
    let mut c = BirdClient::connect(socket)?;
    let peers = parse_protocols(&c.command("show protocols all")?);
    let mut announced = Vec::new();
    for protocol in [STATIC_PROTOCOL, STATIC_PROTOCOL6] {
        match c.command(&format!("show route protocol {protocol}")) {
            Ok(lines) => announced.extend(parse_routes(&lines)),
            // No such protocol: netbpf's fragment is not loaded (or is an
            // older netbpf's, without IPv6).
            Err(BgpError::Bird { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    // BIRD 2 shows its default tables, master4 and master6: IPv4 and IPv6
    // routes learned.
    let learned = parse_routes(&c.command("show route where source = RTS_BGP")?);
    Ok(BgpStatus {
        socket: socket.display().to_string(),
        bird: c.version.clone(),
        role: None,
        cluster_id: None,
        peers,
        announced,
        learned,
    })
}

impl BgpStatus {
    /// Adds what only the config knows: this host's role, the cluster id
    /// and each netbpf session's role (matched by neighbour address).
    pub fn with_config(mut self, cfg: &BgpConfig) -> Self {
        self.role = Some(cfg.role());
        self.cluster_id = cfg.cluster_id.map(|id| id.to_string());
        for p in &mut self.peers {
            let known = cfg
                .peers
                .iter()
                .find(|c| p.netbpf && p.neighbor.as_deref() == Some(&c.address.to_string()));
            p.role = known.map(|c| c.role);
            p.ebgp |= known.is_some_and(|c| c.is_ebgp(cfg.local_as));
        }
        self
    }

    /// Column headers of the peers table.
    pub const PEER_HEADER: [&'static str; 9] = [
        "PROTOCOL",
        "NEIGHBOR",
        "AS",
        "ROLE",
        "STATE",
        "SINCE",
        "ROUTES IN/LIMIT/OUT",
        "GRACEFUL RESTART",
        "INFO",
    ];
    /// Column headers of the routes tables.
    pub const ROUTE_HEADER: [&'static str; 5] = ["PREFIX", "KIND", "VIA", "PROTOCOL", "BEST"];

    /// The status as text tables.
    pub fn render(&self) -> String {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let num = |v: Option<u64>| v.map_or_else(|| "-".into(), |n| n.to_string());
        let peers: Vec<Vec<String>> = self
            .peers
            .iter()
            .map(|p| {
                let mut info = p.info.clone();
                if let Some(e) = &p.last_error
                    && !info.contains(e.as_str())
                {
                    info = format!("{info} (last error: {e})").trim().to_owned();
                }
                let role = match (p.role, p.rr_client) {
                    (Some(PeerRole::Peer) | None, false) if p.ebgp => "eBGP",
                    (Some(PeerRole::Peer), _) => "peer",
                    (Some(PeerRole::Reflector), _) => "our reflector",
                    (Some(PeerRole::Client), _) | (None, true) => "rr client",
                    (None, false) => "-",
                };
                let gr = match (p.graceful_restart, p.restart_time) {
                    (GracefulRestart::Able, Some(t)) => format!("able ({t} s)"),
                    (g, _) => g.as_str().to_owned(),
                };
                vec![
                    p.name.clone(),
                    opt(&p.neighbor),
                    p.neighbor_as.map_or_else(|| "-".into(), |n| n.to_string()),
                    role.to_owned(),
                    if p.bgp_state.is_empty() {
                        p.state.clone()
                    } else {
                        p.bgp_state.clone()
                    },
                    p.since.clone(),
                    format!(
                        "{}/{}/{}",
                        num(p.imported),
                        num(p.receive_limit),
                        num(p.exported)
                    ),
                    gr,
                    info,
                ]
            })
            .collect();
        let routes = |rs: &[RouteStatus]| -> Vec<Vec<String>> {
            rs.iter()
                .map(|r| {
                    vec![
                        r.prefix.clone(),
                        r.kind.clone(),
                        match (&r.via, &r.interface) {
                            (Some(v), Some(i)) => format!("{v} on {i}"),
                            (Some(v), None) => v.clone(),
                            (None, Some(i)) => format!("dev {i}"),
                            (None, None) => "-".into(),
                        },
                        r.protocol.clone(),
                        if r.primary { "*".into() } else { String::new() },
                    ]
                })
                .collect()
        };
        let established = self
            .peers
            .iter()
            .filter(|p| p.bgp_state == "Established")
            .count();
        let mut s = match (self.role, &self.cluster_id) {
            (Some(role), Some(id)) => format!("Role: {role} (cluster id {id})\n"),
            (Some(role), None) => format!("Role: {role}\n"),
            (None, _) => String::new(),
        };
        let _ = writeln!(
            s,
            "BGP sessions ({} at {}): {established} of {} established",
            self.bird,
            self.socket,
            self.peers.len()
        );
        s.push_str(&crate::table::render(&Self::PEER_HEADER, &peers));
        let _ = writeln!(
            s,
            "\nAnnounced ({STATIC_PROTOCOL}, {STATIC_PROTOCOL6}): {} prefix(es)",
            self.announced.len()
        );
        s.push_str(&crate::table::render(
            &Self::ROUTE_HEADER,
            &routes(&self.announced),
        ));
        let _ = writeln!(s, "\nLearned over BGP: {} route(s)", self.learned.len());
        s.push_str(&crate::table::render(
            &Self::ROUTE_HEADER,
            &routes(&self.learned),
        ));
        s
    }
}

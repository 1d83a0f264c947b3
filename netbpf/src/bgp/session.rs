//! One `protocol bgp` of the fragment: a session of `[bgp]` with its
//! role, `multihop`, MD5 `password` and `next_hop`.

use std::fmt::Write as _;

use crate::config::{BgpConfig, BgpPeer, PeerRole};

use super::names::{ANNOUNCE_FILTER, IMPORT_FILTER, IMPORT_FILTER6, REFLECT_FILTER, peer_protocol};

/// Whether any session of `cfg` is multihop (BIRD then needs routes to
/// resolve next hops: the direct protocol and the kernel's routes).
pub fn any_multihop(cfg: &BgpConfig) -> bool {
    cfg.peers.iter().any(|p| p.options.multihop.is_some())
}

/// Whether any session of `cfg` has an MD5 password (the fragment then
/// holds a secret).
pub fn any_password(cfg: &BgpConfig) -> bool {
    cfg.peers.iter().any(|p| p.options.password.is_some())
}

/// The `protocol bgp` block for `peer`, starting with an empty line and a
/// comment saying what the session is (never the password).
pub(super) fn render_session(cfg: &BgpConfig, peer: &BgpPeer) -> String {
    let ibgp = !peer.is_ebgp(cfg.local_as);
    let kind = if ibgp { "iBGP" } else { "eBGP" };
    let what = match peer.role {
        PeerRole::Peer => "",
        PeerRole::Reflector => ", our route reflector",
        PeerRole::Client => ", our route-reflector client",
    };
    let opts = &peer.options;
    let mut notes = String::new();
    if let Some(n) = opts.multihop {
        let _ = write!(notes, ", multihop {n}");
    }
    if opts.password.is_some() {
        notes.push_str(", MD5");
    }
    let mut session = String::new();
    match opts.multihop {
        // BIRD resolves the next hop the peer sends through its table
        // (the peer is not on the segment, so neither may its next hop be).
        Some(n) => {
            let _ = writeln!(session, "  multihop {n};");
        }
        None => session.push_str("  direct;\n"),
    }
    if let Some(pw) = &opts.password {
        let _ = writeln!(session, "  password \"{}\";", pw.reveal());
    }
    if let (PeerRole::Client, Some(id)) = (peer.role, cfg.cluster_id) {
        let _ = write!(session, "  rr client;\n  rr cluster id {id};\n");
    }
    let export = if ibgp && cfg.cluster_id.is_some() {
        REFLECT_FILTER
    } else {
        ANNOUNCE_FILTER
    };
    let mut channel = String::new();
    if let Some(nh) = opts.next_hop {
        let _ = writeln!(channel, "    {};", nh.bird());
    }
    let gateway = if opts.multihop.is_some() {
        "recursive"
    } else {
        "direct"
    };
    format!(
        "\n# [[{table}]] {addr} AS {asn} ({kind}{what}{notes})\n\
         protocol bgp {name} {{\n\
         \x20 router id {rid};\n\
         \x20 local as {las};\n\
         \x20 neighbor {addr} as {asn};\n\
         {session}\
         \x20 graceful restart on;\n\
         \x20 graceful restart time {gr_time};\n\
         \x20 connect retry time 5;\n\
         \x20 ipv4 {{\n\
         \x20   import filter {IMPORT_FILTER};\n\
         \x20   receive limit {limit} action block;\n\
         \x20   export filter {export};\n\
         {channel}\
         \x20   gateway {gateway};\n\
         \x20 }};\n\
         \x20 ipv6 {{\n\
         \x20   import filter {IMPORT_FILTER6};\n\
         \x20   receive limit {limit} action block;\n\
         \x20   export filter {export};\n\
         {channel}\
         \x20   gateway {gateway};\n\
         \x20 }};\n\
         }}\n",
        table = peer.role.table(),
        addr = peer.address,
        asn = peer.asn,
        name = peer_protocol(peer.address),
        rid = cfg.router_id,
        las = cfg.local_as,
        limit = cfg.receive_limit,
        gr_time = cfg.graceful_restart_time,
    )
}

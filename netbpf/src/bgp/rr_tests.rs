//! Unit tests of route reflection in BIRD's config and of what `netbpf
//! bgp status` reads about roles, limits and graceful restart.

use super::*;
use crate::config::{BgpPeer, BgpRole, PeerRole};

fn peer(addr: [u8; 4], role: PeerRole) -> BgpPeer {
    BgpPeer::new(addr.into(), 64512, role)
}

fn cfg(peers: Vec<BgpPeer>, cluster_id: Option<Ipv4Addr>) -> BgpConfig {
    BgpConfig {
        local_as: 64512,
        router_id: Ipv4Addr::new(10, 0, 0, 2),
        socket: "/tmp/x.ctl".into(),
        config: "/etc/bird/netbpf.conf".into(),
        main_config: "/etc/bird/bird.conf".into(),
        block: None,
        import_min_len: 32,
        receive_limit: 16384,
        graceful_restart_time: 120,
        peers,
        cluster_id,
    }
}

/// The `protocol bgp` block for `addr` in fragment `f`.
fn block<'a>(f: &'a str, addr: &str) -> &'a str {
    let name = peer_protocol(addr.parse().unwrap());
    let start = f
        .find(&format!("protocol bgp {name} {{"))
        .unwrap_or_else(|| panic!("no {name} in {f}"));
    let end = f[start..].find("\n}\n").unwrap() + start;
    &f[start..end]
}

#[test]
fn a_reflector_marks_its_clients_and_reflects_bgp_routes() {
    let c = cfg(
        vec![
            peer([10, 0, 0, 3], PeerRole::Peer),
            peer([10, 0, 0, 11], PeerRole::Client),
            peer([10, 0, 0, 12], PeerRole::Client),
        ],
        Some(Ipv4Addr::new(10, 0, 0, 1)),
    );
    let f = render_fragment(&c, &[], &BTreeSet::new(), &BTreeSet::new());
    assert!(f.contains(&format!("filter {REFLECT_FILTER} {{\n")), "{f}");
    assert!(f.contains("  if source = RTS_BGP then accept;\n"), "{f}");
    for client in ["10.0.0.11", "10.0.0.12"] {
        let b = block(&f, client);
        assert!(
            b.contains("  rr client;\n  rr cluster id 10.0.0.1;\n"),
            "{b}"
        );
        assert!(b.contains("export filter netbpf_reflect;"), "{b}");
        assert!(b.contains("import filter netbpf_learn;"), "{b}");
        assert!(b.contains("receive limit 16384 action block;"), "{b}");
        assert!(b.contains("graceful restart on;"), "{b}");
        assert!(b.contains("graceful restart time 120;"), "{b}");
    }
    // The other reflector: not a client, but it gets the clients' routes.
    let b = block(&f, "10.0.0.3");
    assert!(!b.contains("rr client"), "{b}");
    assert!(b.contains("export filter netbpf_reflect;"), "{b}");
    assert!(f.contains("# [[bgp.client]] 10.0.0.11 AS 64512 (iBGP, our route-reflector client)"));
    assert_eq!(f.matches('{').count(), f.matches('}').count());
}

#[test]
fn a_client_announces_only_its_own_routes_to_its_reflectors() {
    let c = cfg(
        vec![
            peer([10, 0, 0, 2], PeerRole::Reflector),
            peer([10, 0, 0, 3], PeerRole::Reflector),
        ],
        None,
    );
    assert_eq!(c.role(), BgpRole::ReflectorClient);
    let f = render_fragment(&c, &[], &BTreeSet::new(), &BTreeSet::new());
    assert!(!f.contains("rr client") && !f.contains("rr cluster"), "{f}");
    assert!(!f.contains(REFLECT_FILTER), "{f}");
    // Two sessions, each with an IPv4 and an IPv6 channel.
    assert_eq!(
        f.matches("export filter netbpf_announce;").count(),
        4,
        "{f}"
    );
    assert!(f.contains("# [[bgp.reflector]] 10.0.0.2 AS 64512 (iBGP, our route reflector)"));
}

/// `show protocols all` of a reflector (BIRD 2.0.12): a client that is up,
/// one that is restarting, one whose neighbour has no graceful restart.
const PROTOCOLS: &str = "2002-Name       Proto      Table      State  Since         Info
1002-netbpf_peer_10_0_0_11 BGP        ---        up     08:34:23.740  Established   
1006-  BGP state:          Established
    Neighbor address: 10.0.0.11
    Neighbor AS:      64512
    Local AS:         64512
    Local capabilities
      Graceful restart
        Restart time: 90
    Neighbor capabilities
      Multiprotocol
        AF announced: ipv4
      Graceful restart
        Restart time: 120
        AF supported: ipv4
    Session:          internal route-reflector AS4
  Channel ipv4
    State:          UP
    Receive limit:  16384
      Action:       block
    Routes:         3 imported, 5 exported, 3 preferred
 
1002-netbpf_peer_10_0_0_12 BGP        ---        start  08:34:29.270  Active        Socket: Connection closed
1006-  BGP state:          Active
    Neighbor address: 10.0.0.12
    Neighbor AS:      64512
    Local AS:         64512
    Neighbor graceful restart active
    Restart timer:    118.993/-
  Channel ipv4
    State:          START
    Receive limit:  16384
    Routes:         1 imported, 0 exported, 1 preferred
 
1002-netbpf_peer_10_0_0_13 BGP        ---        up     08:34:23.740  Established   
1006-  BGP state:          Established
    Neighbor address: 10.0.0.13
    Local capabilities
      Graceful restart
        Restart time: 120
    Neighbor capabilities
      Route refresh
    Session:          internal AS4
  Channel ipv4
    Receive limit:  100
    Routes:         0 imported, 5 exported, 0 preferred
 
0000 ";

fn reply(raw: &str) -> Vec<ReplyLine> {
    let mut prev = 0;
    raw.lines()
        .map(|l| {
            let (code, _, text) = parse_reply_line(l, prev).unwrap();
            prev = code;
            ReplyLine { code, text }
        })
        .collect()
}

#[test]
fn protocols_show_rr_clients_limits_and_graceful_restart() {
    let p = parse_protocols(&reply(PROTOCOLS));
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(p[0].rr_client);
    assert_eq!(p[0].receive_limit, Some(16384));
    assert_eq!(p[0].imported, Some(3));
    assert_eq!(p[0].graceful_restart, GracefulRestart::Able);
    assert_eq!(p[0].restart_time, Some(120), "the neighbour's, not ours");
    assert_eq!(p[1].graceful_restart, GracefulRestart::Restarting);
    assert_eq!(p[1].imported, Some(1), "its routes are kept as stale");
    assert!(!p[1].rr_client, "unknown while down");
    assert_eq!(p[2].graceful_restart, GracefulRestart::Off);
    assert_eq!(
        p[2].restart_time, None,
        "our own restart time is not the neighbour's"
    );
    assert_eq!(p[2].receive_limit, Some(100));
    assert!(!p[2].rr_client);
}

#[test]
fn status_with_config_shows_the_role_and_each_sessions_role() {
    let c = cfg(
        vec![
            peer([10, 0, 0, 11], PeerRole::Client),
            peer([10, 0, 0, 12], PeerRole::Client),
        ],
        Some(Ipv4Addr::new(10, 0, 0, 2)),
    );
    let s = BgpStatus {
        socket: "/tmp/x.ctl".into(),
        bird: "BIRD 2.0.12".into(),
        peers: parse_protocols(&reply(PROTOCOLS)),
        ..Default::default()
    }
    .with_config(&c);
    assert_eq!(s.role, Some(BgpRole::Reflector));
    assert_eq!(s.peers[0].role, Some(PeerRole::Client));
    assert_eq!(s.peers[2].role, None, "not in the config");
    let text = s.render();
    assert!(
        text.starts_with("Role: route reflector (cluster id 10.0.0.2)\n"),
        "{text}"
    );
    assert!(text.contains("3/16384/5"), "{text}");
    assert!(text.contains("able (120 s)"), "{text}");
    assert!(text.contains("restarting"), "{text}");
    assert!(text.contains("rr client"), "{text}");
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["role"], "reflector");
    assert_eq!(json["peers"][0]["role"], "client");
    assert_eq!(json["peers"][0]["receive_limit"], 16384);
    assert_eq!(json["peers"][1]["graceful_restart"], "restarting");
}

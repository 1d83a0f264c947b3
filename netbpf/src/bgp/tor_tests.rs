//! Unit tests of top-of-rack peering in BIRD's config (eBGP, `multihop`,
//! MD5 `password`, `next_hop`), the fragment's file mode, and the eBGP
//! role in `netbpf bgp status`.

use std::os::unix::fs::PermissionsExt as _;

use super::*;
use crate::config::{BgpPeer, BgpRole, NextHop, PeerRole};

fn tor(addr: [u8; 4], asn: u32) -> BgpPeer {
    BgpPeer::new(addr.into(), asn, PeerRole::Peer)
}

/// Host 1 of rack 1 (AS 65101): its ToR at 10.0.1.1 (AS 65001) with a
/// password and `next_hop = "self"`, and a far router's loopback
/// 10.255.0.2 (AS 65002), two hops away, with `next_hop = "keep"`.
fn cfg() -> BgpConfig {
    let mut near = tor([10, 0, 1, 1], 65001);
    near.options.password = Some(
        crate::config::Config::from_toml(
            "[uplink]\ninterface = \"eth0\"\n[bgp]\nlocal_as = 1\nrouter_id = \"10.0.0.1\"\n\
             [[bgp.peer]]\naddress = \"10.0.0.2\"\nas = 2\npassword = \"r4ck one\"\n",
        )
        .unwrap()
        .bgp
        .unwrap()
        .peers[0]
            .options
            .password
            .clone()
            .unwrap(),
    );
    near.options.next_hop = Some(NextHop::SelfAddress);
    let mut far = tor([10, 255, 0, 2], 65002);
    far.options.multihop = Some(2);
    far.options.next_hop = Some(NextHop::Keep);
    BgpConfig {
        local_as: 65101,
        router_id: Ipv4Addr::new(10, 0, 1, 11),
        socket: "/tmp/x.ctl".into(),
        config: "/etc/bird/netbpf.conf".into(),
        main_config: "/etc/bird/bird.conf".into(),
        block: None,
        import_min_len: 32,
        receive_limit: 16384,
        graceful_restart_time: 120,
        peers: vec![near, far],
        cluster_id: None,
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
fn an_ebgp_tor_session_has_its_password_and_next_hop_and_stays_direct() {
    let c = cfg();
    assert_eq!(c.role(), BgpRole::Ebgp);
    let f = render_fragment(&c, &[], &BTreeSet::new(), &BTreeSet::new());
    let b = block(&f, "10.0.1.1");
    assert!(b.contains("  local as 65101;\n  neighbor 10.0.1.1 as 65001;\n  direct;\n  password \"r4ck one\";\n"), "{b}");
    assert!(
        b.contains("    export filter netbpf_announce;\n    next hop self;\n    gateway direct;\n"),
        "{b}"
    );
    assert!(!b.contains("multihop"), "{b}");
    // The comment says what the session is, never the password.
    assert!(
        f.contains("# [[bgp.peer]] 10.0.1.1 AS 65001 (eBGP, MD5)\n"),
        "{f}"
    );
    assert_eq!(
        f.matches("r4ck one").count(),
        1,
        "only in the password line: {f}"
    );
    assert_eq!(f.matches('{').count(), f.matches('}').count());
}

#[test]
fn a_multihop_session_resolves_its_next_hop_through_birds_table() {
    let c = cfg();
    let f = render_fragment(&c, &[], &BTreeSet::new(), &BTreeSet::new());
    let b = block(&f, "10.255.0.2");
    assert!(
        b.contains("  neighbor 10.255.0.2 as 65002;\n  multihop 2;\n  graceful restart on;\n"),
        "{b}"
    );
    assert!(!b.contains("direct;"), "{b}");
    assert!(!b.contains("password"), "{b}");
    assert!(
        b.contains("    next hop keep;\n    gateway recursive;\n"),
        "{b}"
    );
    assert!(
        f.contains("# [[bgp.peer]] 10.255.0.2 AS 65002 (eBGP, multihop 2)\n"),
        "{f}"
    );
    // The connected subnets and the kernel's routes are in BIRD's table,
    // so a next hop behind the segment's gateway resolves.
    assert!(
        f.contains(&format!(
            "protocol direct {DIRECT_PROTOCOL} {{\n  ipv4;\n}}\n"
        )),
        "{f}"
    );
    let m = render_main(&c);
    assert!(m.contains("  learn;\n  ipv4 {\n    import all;"), "{m}");
    assert!(m.contains("    export where source = RTS_BGP;\n"), "{m}");
}

#[test]
fn without_multihop_nothing_is_learned_from_the_kernel() {
    let mut c = cfg();
    c.peers.truncate(1);
    let f = render_fragment(&c, &[], &BTreeSet::new(), &BTreeSet::new());
    assert!(!f.contains("protocol direct"), "{f}");
    let m = render_main(&c);
    assert!(!m.contains("  learn;"), "{m}");
    assert!(m.contains("    import none;\n"), "{m}");
    // An iBGP mesh session renders as it always did: no options.
    let mut c = cfg();
    c.peers = vec![tor([10, 0, 1, 12], 65101)];
    assert_eq!(c.role(), BgpRole::FullMesh);
    let b = render_fragment(&c, &[], &BTreeSet::new(), &BTreeSet::new());
    let b = block(&b, "10.0.1.12");
    assert!(!b.contains("next hop"), "{b}");
    assert!(!b.contains("password"), "{b}");
    assert!(
        b.contains("  direct;\n") && b.contains("    gateway direct;\n"),
        "{b}"
    );
}

#[test]
fn a_fragment_with_a_password_is_not_world_readable() {
    let c = cfg();
    assert_eq!(fragment_mode(&c), SECRET_FILE_MODE);
    let mut plain = cfg();
    plain.peers[0].options.password = None;
    assert_eq!(fragment_mode(&plain), BIRD_FILE_MODE);
    let dir = std::env::temp_dir().join(format!("netbpf-bgp-tor-mode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("netbpf.conf");
    // An existing world-readable file is replaced by a private one.
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    write_atomic_mode(&path, "secret", fragment_mode(&c)).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "secret");
    write_atomic(&path, "plain").unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    // The group given to the file (BIRD's) survives a rewrite, so a BIRD
    // running as its own user still reads the private fragment. Only root
    // can give a file a group it is not in.
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::MetadataExt as _;
        let gid = 4242;
        std::os::unix::fs::chown(&path, None, Some(gid)).unwrap();
        write_atomic_mode(&path, "secret", SECRET_FILE_MODE).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.gid(), gid);
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `show protocols all` of a host's BIRD with an eBGP session to its ToR
/// up and one to a far router not up yet (BIRD 2.0.12's layout).
const PROTOCOLS: &str = "0001 BIRD 2.0.12 ready.
2002-Name       Proto      Table      State  Since         Info
1002-netbpf_peer_10_0_1_1 BGP        ---        up     11:02:03.456  Established   
1006-  BGP state:          Established
    Neighbor address: 10.0.1.1
    Neighbor AS:      65001
    Local AS:         65101
    Neighbor ID:      10.0.1.1
    Local capabilities
      Graceful restart
        Restart time: 120
    Neighbor capabilities
      Graceful restart
        Restart time: 120
        AF supported: ipv4
    Session:          external AS4
  Channel ipv4
    State:          UP
    Receive limit:  16384
      Action:       block
    Routes:         3 imported, 1 exported, 3 preferred
 
1002-netbpf_peer_10_255_0_2 BGP        ---        start  11:02:01.000  Active        Socket: Connection refused
1006-  BGP state:          Active
    Neighbor address: 10.255.0.2
    Neighbor AS:      65002
    Local AS:         65101
    Last error:       Socket: Connection refused
 
1002-their_mesh BGP        ---        up     11:02:03.456  Established   
1006-  BGP state:          Established
    Neighbor address: 10.0.1.12
    Neighbor AS:      65101
    Local AS:         65101
    Session:          internal multihop AS4
 
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
fn status_shows_ebgp_sessions_and_the_ebgp_role() {
    let p = parse_protocols(&reply(PROTOCOLS));
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(p[0].ebgp, "Session: external");
    assert!(p[1].ebgp, "down, but its AS is not ours");
    assert!(!p[2].ebgp, "iBGP");
    let s = BgpStatus {
        socket: "/tmp/x.ctl".into(),
        bird: "BIRD 2.0.12".into(),
        peers: p,
        ..Default::default()
    }
    .with_config(&cfg());
    assert_eq!(s.role, Some(BgpRole::Ebgp));
    let text = s.render();
    assert!(text.starts_with("Role: eBGP to routers\n"), "{text}");
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("netbpf_peer_10_0_1_1")[3], "eBGP", "{text}");
    assert_eq!(row("netbpf_peer_10_255_0_2")[3], "eBGP", "{text}");
    assert_eq!(row("their_mesh")[3], "-", "{text}");
    assert!(!text.contains("r4ck"), "{text}");
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["role"], "ebgp");
    assert_eq!(json["peers"][0]["role"], "peer");
    assert_eq!(json["peers"][0]["ebgp"], true);
    assert_eq!(json["peers"][2]["ebgp"], false);
}

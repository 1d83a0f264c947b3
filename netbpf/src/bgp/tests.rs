//! Unit tests of the BGP module: rendering, the control socket, parsing.

use super::*;
use crate::config::{BgpPeer, PeerRole};
use std::io::{BufRead, BufReader, Write};

fn cfg(block: Option<&str>) -> BgpConfig {
    BgpConfig {
        local_as: 64512,
        router_id: Ipv4Addr::new(10, 0, 0, 11),
        socket: "/tmp/x.ctl".into(),
        config: "/etc/bird/netbpf.conf".into(),
        main_config: "/etc/bird/bird.conf".into(),
        block: block.map(|b| b.parse().unwrap()),
        import_min_len: 32,
        receive_limit: 16384,
        graceful_restart_time: 120,
        peers: vec![
            BgpPeer::new(Ipv4Addr::new(10, 0, 0, 12), 64512, PeerRole::Peer),
            BgpPeer::new(Ipv4Addr::new(10, 0, 0, 1), 65000, PeerRole::Peer),
        ],
        cluster_id: None,
    }
}

fn set(addrs: &[&str]) -> BTreeSet<Ipv4Addr> {
    addrs.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn prefixes_are_slash_32s_or_the_block_plus_outsiders() {
    let c = set(&["10.10.1.2", "10.10.1.1", "10.20.0.1"]);
    let p: Vec<String> = announced_prefixes(&cfg(None), &c)
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(p, ["10.10.1.1/32", "10.10.1.2/32", "10.20.0.1/32"]);
    let p: Vec<String> = announced_prefixes(&cfg(Some("10.10.1.0/24")), &c)
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(p, ["10.10.1.0/24", "10.20.0.1/32"]);
    // The block is announced even with no container in it.
    assert_eq!(
        announced_prefixes(&cfg(Some("10.10.1.0/24")), &BTreeSet::new()).len(),
        1
    );
}

#[test]
fn fragment_has_static_routes_filter_and_one_protocol_per_peer() {
    let f = render_fragment(
        &cfg(None),
        &[],
        &set(&["10.10.1.1", "10.10.1.2"]),
        &BTreeSet::new(),
    );
    assert!(f.starts_with(MARKER), "{f}");
    assert!(f.contains("protocol static netbpf_containers {\n  ipv4;\n  route 10.10.1.1/32 blackhole;\n  route 10.10.1.2/32 blackhole;\n}"), "{f}");
    assert!(f.contains("if proto = \"netbpf_containers\" then accept;"));
    assert!(f.contains("protocol bgp netbpf_peer_10_0_0_12 {"), "{f}");
    assert!(f.contains("  neighbor 10.0.0.12 as 64512;"), "{f}");
    assert!(f.contains("(iBGP)") && f.contains("(eBGP)"), "{f}");
    assert!(f.contains("  neighbor 10.0.0.1 as 65000;"), "{f}");
    // Two sessions, each with an IPv4 and an IPv6 channel.
    assert_eq!(f.matches("export filter netbpf_announce;").count(), 4);
    assert_eq!(f.matches("router id 10.0.0.11;").count(), 2);
    assert_eq!(f.matches("local as 64512;").count(), 2);
    // Braces balance (BIRD would refuse the file otherwise).
    assert_eq!(f.matches('{').count(), f.matches('}').count());
    // No containers: a valid, empty static protocol.
    let f = render_fragment(&cfg(None), &[], &BTreeSet::new(), &BTreeSet::new());
    assert!(f.contains("protocol static netbpf_containers {\n  ipv4;\n}"));
}

fn cidrs(nets: &[&str]) -> Vec<Ipv4Cidr> {
    nets.iter().map(|n| n.parse().unwrap()).collect()
}

#[test]
fn imports_are_filtered_to_other_hosts_containers_and_limited() {
    let own = cidrs(&["10.0.0.0/24", "10.77.0.0/24"]);
    let f = render_fragment(&cfg(None), &own, &BTreeSet::new(), &BTreeSet::new());
    // One filter, used by every session, with a receive limit.
    assert!(f.contains("filter netbpf_learn {\n"), "{f}");
    assert_eq!(f.matches("import filter netbpf_learn;").count(), 2, "{f}");
    assert_eq!(
        f.matches("receive limit 16384 action block;").count(),
        4,
        "{f}: per session and family"
    );
    assert!(!f.contains("import all"), "{f}");
    // /32 only by default: the default route and aggregates fail here.
    assert!(f.contains("  if net.len < 32 then reject;\n"), "{f}");
    assert!(
        f.contains(
            "  if net ~ [ 0.0.0.0/8+, 127.0.0.0/8+, 169.254.0.0/16+, 224.0.0.0/3+ ] then reject;\n"
        ),
        "{f}"
    );
    // Nothing inside the host's own networks.
    assert!(
        f.contains("  if net ~ [ 10.0.0.0/24+, 10.77.0.0/24+ ] then reject;\n  accept;\n}"),
        "{f}"
    );
    assert_eq!(f.matches('{').count(), f.matches('}').count());
    // The configured policy.
    let mut c = cfg(Some("10.10.1.0/24"));
    c.import_min_len = 24;
    c.receive_limit = 100;
    let f = render_fragment(&c, &[], &BTreeSet::new(), &BTreeSet::new());
    assert!(f.contains("  if net.len < 24 then reject;\n"), "{f}");
    assert!(f.contains("receive limit 100 action block;"), "{f}");
    // No own networks: no empty set (BIRD refuses `[ ]`).
    assert!(!f.contains("[  ]") && !f.contains("[ ]"), "{f}");
}

#[test]
fn own_networks_are_the_uplink_subnets_masquerade_sources_and_block() {
    let config = crate::config::Config::from_toml(
        "[uplink]\ninterface = \"eth0\"\n[[masquerade]]\nsource = \"10.77.0.0/24\"\n\
         [bgp]\nlocal_as = 64512\nrouter_id = \"10.0.0.11\"\nblock = \"10.10.1.0/24\"\n\
         [[bgp.peer]]\naddress = \"10.0.0.12\"\nas = 64512\n",
    )
    .unwrap();
    let own = own_networks(
        &config,
        &cidrs(&["10.0.0.11/24", "192.0.2.7/28", "10.0.0.99/24"]),
    );
    let own: Vec<String> = own.iter().map(Ipv4Cidr::to_string).collect();
    assert_eq!(
        own,
        [
            "10.0.0.0/24",
            "10.10.1.0/24",
            "10.77.0.0/24",
            "192.0.2.0/28"
        ]
    );
}

#[test]
fn oversized_answers_are_not_read_into_memory() {
    // One line past the bound.
    let long: &'static str =
        Box::leak(format!("1007-{}\n0000 \n", "x".repeat(MAX_REPLY_LINE)).into_boxed_str());
    let (path, t) = fake_bird(vec![long]);
    let e = BirdClient::connect(&path)
        .unwrap()
        .command("show route")
        .unwrap_err();
    assert!(matches!(e, BgpError::TooLong { .. }), "{e:?}");
    // The fake's write fails once netbpf hangs up.
    let _ = t.join();
    let _ = std::fs::remove_file(&path);
    // Many short lines past the total bound.
    let line = " 10.10.2.1/32 unicast [netbpf_peer_10_0_0_12 02:41:19.386] * (100) [i]\n";
    let n = MAX_REPLY_BYTES / line.len() + 2;
    let many: &'static str =
        Box::leak(format!("1007-Table master4:\n{}0000 \n", line.repeat(n)).into_boxed_str());
    let (path, t) = fake_bird(vec![many]);
    let e = status_routes(&path).unwrap_err();
    assert!(
        matches!(e, BgpError::TooLong { limit, .. } if limit == MAX_REPLY_BYTES),
        "{e:?}"
    );
    let _ = t.join();
    let _ = std::fs::remove_file(&path);
}

fn status_routes(path: &Path) -> Result<Vec<ReplyLine>, BgpError> {
    BirdClient::connect(path)?.command("show route where source = RTS_BGP")
}

#[test]
fn main_config_includes_the_fragment_and_exports_bgp_only() {
    let m = render_main(&cfg(None));
    assert!(m.starts_with(MARKER));
    assert!(m.contains("router id 10.0.0.11;"));
    assert!(m.contains("export where source = RTS_BGP;"));
    assert!(m.contains("include \"/etc/bird/netbpf.conf\";"));
    assert_eq!(m.matches('{').count(), m.matches('}').count());
}

#[test]
fn main_config_is_written_only_when_missing_or_ours() {
    let dir = std::env::temp_dir().join(format!("netbpf-bgp-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = cfg(None);
    c.main_config = dir.join("bird.conf");
    c.config = dir.join("netbpf.conf");
    assert_eq!(prepare_main_config(&c).unwrap(), MainConfig::Written);
    let ours = std::fs::read_to_string(&c.main_config).unwrap();
    assert!(ours.contains(&format!("include \"{}\";", c.config.display())));
    // Ours again: rewritten (e.g. with a new router id).
    c.router_id = Ipv4Addr::new(10, 0, 0, 99);
    assert_eq!(prepare_main_config(&c).unwrap(), MainConfig::Written);
    assert!(
        std::fs::read_to_string(&c.main_config)
            .unwrap()
            .contains("router id 10.0.0.99;")
    );
    // A user's file is never touched.
    let user = "router id 1.2.3.4;\n# include \"x\";\n";
    std::fs::write(&c.main_config, user).unwrap();
    assert_eq!(
        prepare_main_config(&c).unwrap(),
        MainConfig::UserMissingInclude
    );
    let user = format!("{user}include \"{}\";\n", c.config.display());
    std::fs::write(&c.main_config, &user).unwrap();
    assert_eq!(prepare_main_config(&c).unwrap(), MainConfig::UserIncludes);
    assert_eq!(std::fs::read_to_string(&c.main_config).unwrap(), user);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reply_lines_parse() {
    assert_eq!(
        parse_reply_line("0001 BIRD 2.0.12 ready.\n", 0).unwrap(),
        (1, true, "BIRD 2.0.12 ready.".into())
    );
    assert_eq!(
        parse_reply_line("1007-Table master4:\n", 0).unwrap(),
        (1007, false, "Table master4:".into())
    );
    assert_eq!(
        parse_reply_line(" \tvia 10.0.0.12 on eth0\n", 1007).unwrap(),
        (1007, false, "\tvia 10.0.0.12 on eth0".into())
    );
    assert!(parse_reply_line("garbage", 0).is_err());
}

/// Lines as BIRD 2.0.12 sent them (captured from a real session).
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

const PROTOCOLS: &str = "2002-Name       Proto      Table      State  Since         Info
1002-device1    Device     ---        up     02:41:15.281  
1006-
1002-netbpf_peer_10_0_0_12 BGP        ---        up     02:41:19.098  Established   
1006-  Router ID:      10.0.0.11
   BGP state:          Established
 Neighbor address: 10.0.0.12
 Neighbor AS:      64512
 Local AS:         64512
 Neighbor ID:      10.0.0.12
   Channel ipv4
 State:          UP
 Routes:         2 imported, 3 exported, 2 preferred
 Route change stats:     received   rejected   filtered    ignored   accepted
 
1002-netbpf_peer_10_0_0_13 BGP        ---        start  02:41:19.098  Active        Socket: Connection refused
1006-  Router ID:      10.0.0.11
   BGP state:          Active
 Neighbor address: 10.0.0.13
 Neighbor AS:      64512
 Local AS:         64512
 Connect delay:    2.101/5
 Last error:       Socket: Connection refused
   Channel ipv4
 State:          DOWN
 
0000 ";

#[test]
fn protocols_parse() {
    let p = parse_protocols(&reply(PROTOCOLS));
    assert_eq!(p.len(), 2, "{p:#?}");
    assert_eq!(
        p[0],
        PeerStatus {
            name: "netbpf_peer_10_0_0_12".into(),
            netbpf: true,
            neighbor: Some("10.0.0.12".into()),
            neighbor_as: Some(64512),
            local_as: Some(64512),
            state: "up".into(),
            bgp_state: "Established".into(),
            since: "02:41:19.098".into(),
            info: "Established".into(),
            last_error: None,
            imported: Some(2),
            exported: Some(3),
            receive_limit: None,
            rr_client: false,
            ebgp: false,
            role: None,
            // Established, and no graceful restart among the capabilities
            // (this capture leaves them out).
            graceful_restart: GracefulRestart::Off,
            restart_time: None,
        }
    );
    assert_eq!(p[1].bgp_state, "Active");
    assert_eq!(p[1].state, "start");
    assert_eq!(p[1].info, "Active Socket: Connection refused");
    assert_eq!(
        p[1].last_error.as_deref(),
        Some("Socket: Connection refused")
    );
    assert_eq!(p[1].imported, None);
}

const ROUTES: &str = "1007-Table master4:
 10.10.1.1/32         blackhole [netbpf_containers 02:41:15.281] * (200)
 10.10.2.1/32         unicast [netbpf_peer_10_0_0_12 02:41:19.386] * (100) [i]
 \tvia 10.0.0.12 on eth0
                  unicast [netbpf_peer_10_0_0_13 02:41:19.400] (100) [i]
 \tvia 10.0.0.13 on eth0
0000 ";

#[test]
fn routes_parse() {
    let r = parse_routes(&reply(ROUTES));
    assert_eq!(r.len(), 3, "{r:#?}");
    assert_eq!(
        r[0],
        RouteStatus {
            prefix: "10.10.1.1/32".into(),
            kind: "blackhole".into(),
            protocol: "netbpf_containers".into(),
            primary: true,
            via: None,
            interface: None,
        }
    );
    assert_eq!(r[1].via.as_deref(), Some("10.0.0.12"));
    assert_eq!(r[1].interface.as_deref(), Some("eth0"));
    assert!(r[1].primary);
    // An alternative route for the same prefix.
    assert_eq!(r[2].prefix, "10.10.2.1/32");
    assert_eq!(r[2].protocol, "netbpf_peer_10_0_0_13");
    assert!(!r[2].primary);
    assert_eq!(r[2].via.as_deref(), Some("10.0.0.13"));
}

/// A fake BIRD on a socket: greeting, then canned answers in order.
fn fake_bird(answers: Vec<&'static str>) -> (PathBuf, std::thread::JoinHandle<Vec<String>>) {
    use std::os::unix::net::UnixListener;
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("netbpf-fake-bird-{}-{n}.ctl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let t = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        w.write_all(b"0001 BIRD 2.0.12 ready.\n").unwrap();
        let mut got = Vec::new();
        for a in answers {
            let mut cmd = String::new();
            r.read_line(&mut cmd).unwrap();
            got.push(cmd.trim().to_owned());
            w.write_all(a.as_bytes()).unwrap();
        }
        got
    });
    (path, t)
}

#[test]
fn reconfigure_accepts_reconfigured_and_reports_errors() {
    let (path, t) = fake_bird(vec![
        "0002-Reading configuration from /etc/bird/bird.conf\n0003 Reconfigured\n",
    ]);
    reconfigure(&path).unwrap();
    assert_eq!(t.join().unwrap(), ["configure"]);
    let (path, t) = fake_bird(vec![
        "0002-Reading configuration from /etc/bird/bird.conf\n8002 /etc/bird/netbpf.conf:3:1 syntax error\n",
    ]);
    let e = reconfigure(&path).unwrap_err();
    assert!(matches!(e, BgpError::Bird { code: 8002, .. }), "{e:?}");
    assert!(e.to_string().contains("syntax error"), "{e}");
    t.join().unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn status_asks_for_protocols_and_routes() {
    let (path, t) = fake_bird(vec![
        "2002-Name       Proto      Table      State  Since         Info\n1002-netbpf_peer_10_0_0_12 BGP        ---        up     02:41:19.098  Established   \n1006-  BGP state:          Established\n     Neighbor address: 10.0.0.12\n0000 \n",
        "1007-Table master4:\n 10.10.1.1/32         blackhole [netbpf_containers 02:41:15.281] * (200)\n0000 \n",
        "1007-Table master6:\n 2001:db8:1::101/128  blackhole [netbpf_containers6 02:41:15.281] * (200)\n0000 \n",
        "1007-Table master4:\n 10.10.2.1/32         unicast [netbpf_peer_10_0_0_12 02:41:19.386] * (100) [i]\n \tvia 10.0.0.12 on eth0\n1007-\n1007-Table master6:\n 2001:db8:1::201/128  unicast [netbpf_peer_10_0_0_12 02:41:19.386] * (100) [i]\n \tvia 2001:db8:1::12 on eth0\n0000 \n",
    ]);
    let s = status(&path).unwrap();
    assert_eq!(
        t.join().unwrap(),
        [
            "show protocols all",
            "show route protocol netbpf_containers",
            "show route protocol netbpf_containers6",
            "show route where source = RTS_BGP"
        ]
    );
    assert_eq!(s.bird, "BIRD 2.0.12");
    assert_eq!(s.peers.len(), 1);
    assert_eq!(s.announced[0].prefix, "10.10.1.1/32");
    assert_eq!(s.announced[1].prefix, "2001:db8:1::101/128");
    assert_eq!(s.learned[0].via.as_deref(), Some("10.0.0.12"));
    assert_eq!(s.learned[1].prefix, "2001:db8:1::201/128");
    assert_eq!(s.learned[1].via.as_deref(), Some("2001:db8:1::12"));
    let text = s.render();
    assert!(text.contains("1 of 1 established"), "{text}");
    assert!(text.contains("10.0.0.12 on eth0"), "{text}");
    assert!(text.contains("2001:db8:1::201/128"), "{text}");
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["peers"][0]["bgp_state"], "Established");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn unreachable_socket_is_an_io_error_naming_it() {
    let e = status(Path::new("/nonexistent/netbpf-bird.ctl")).unwrap_err();
    assert!(matches!(e, BgpError::Io { .. }));
    assert!(
        e.to_string().contains("/nonexistent/netbpf-bird.ctl"),
        "{e}"
    );
}

#[test]
fn ipv6_container_addresses_are_announced_and_learned_on_an_ipv6_channel() {
    let v6: BTreeSet<std::net::Ipv6Addr> = ["2001:db8:1::102", "2001:db8:1::101"]
        .iter()
        .map(|s| s.parse().expect("address"))
        .collect();
    let f = render_fragment(&cfg(None), &[], &BTreeSet::new(), &v6);
    assert!(
        f.contains(
            "protocol static netbpf_containers6 {\n  ipv6;\n  route 2001:db8:1::101/128 blackhole;\n  route 2001:db8:1::102/128 blackhole;\n}"
        ),
        "{f}"
    );
    assert!(
        f.contains("if proto = \"netbpf_containers6\" then accept;"),
        "{f}"
    );
    assert!(
        f.contains(
            "filter netbpf_learn6 {\n  if net.len < 64 then reject;\n  if net ~ [ ::/8+, fe80::/10+, ff00::/8+ ] then reject;\n  accept;\n}"
        ),
        "{f}"
    );
    // Every session carries IPv6 too (multiprotocol BGP over its IPv4
    // session), learning through the IPv6 filter.
    assert_eq!(
        f.matches("  ipv6 {\n    import filter netbpf_learn6;")
            .count(),
        2,
        "{f}"
    );
    assert_eq!(f.matches('{').count(), f.matches('}').count());
    let main = render_main(&cfg(None));
    assert!(main.contains("protocol kernel netbpf_kernel6 {"), "{main}");
    assert!(
        main.contains("  ipv6 {\n    import none;\n    export where source = RTS_BGP;"),
        "{main}"
    );
}

/// BIRD itself accepts the config netbpf writes with IPv6 routes (`bird
/// -p` only parses). Skipped where BIRD is not installed.
#[test]
fn bird_parses_the_dual_stack_config() {
    let Ok(bird) = which_bird() else {
        eprintln!("SKIPPED: bird not installed");
        return;
    };
    let dir = std::env::temp_dir().join(format!("nbv6-bird-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut c = cfg(None);
    c.config = dir.join("netbpf.conf");
    let v6: BTreeSet<std::net::Ipv6Addr> = ["2001:db8:1::101".parse().expect("address")]
        .into_iter()
        .collect();
    let fragment = render_fragment(&c, &[], &set(&["10.10.1.1"]), &v6);
    std::fs::write(&c.config, fragment).expect("fragment");
    let main = dir.join("bird.conf");
    std::fs::write(&main, render_main(&c)).expect("main");
    let out = std::process::Command::new(bird)
        .args(["-p", "-c"])
        .arg(&main)
        .output()
        .expect("bird -p");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "bird -p: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which_bird() -> Result<PathBuf, ()> {
    ["/usr/sbin/bird", "/usr/bin/bird"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or(())
}

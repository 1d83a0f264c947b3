//! Per-container-IP routing end to end (the programs' own decisions are
//! tested through BPF_PROG_TEST_RUN in `prog_test_run/routing.rs`), in
//! namespaces (prefix `nbt-rt<x>-<pid>`, removed on drop): a peer on the
//! uplink's segment reaches routed containers at their own IPs with no
//! route but being on-link, the host answering ARP for them.
//!
//! Needs root, a kernel with BPF_PROG_TEST_RUN for XDP and tc programs,
//! `bpf_redirect` and `bpf_fib_lookup` (tested on 6.18).

#[macro_use]
mod common;

use common::{cli_output, exe};

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use netbpf::lab::{self, Container, Lab, SERVICE_PORT, Transport, WhoamiServer, parse_whoami};
use netbpf_common::Counter;

// ---------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------

fn prefix(x: &str) -> String {
    format!("nbt-rt{x}-{}", std::process::id())
}

/// Whoami servers on TCP and UDP :4000 in each of `containers`.
fn serve_each(containers: &[Container]) -> Vec<WhoamiServer> {
    let mut servers = Vec::new();
    for c in containers {
        for t in [Transport::Tcp, Transport::Udp] {
            servers.push(
                WhoamiServer::spawn(
                    &c.ns,
                    t,
                    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVICE_PORT),
                    &format!("container {}: you are", c.addr),
                )
                .expect("server"),
            );
        }
    }
    servers
}

/// A lab with `n` routed containers (10.0.1.101...) and a peer on the
/// uplink's segment, whoami servers on TCP and UDP :4000 in each
/// container, the daemon running with every container in the config.
fn routed_lab(x: &str, n: usize) -> (Lab, Vec<WhoamiServer>) {
    let mut lab = Lab::build_with(&prefix(x), 0, n).expect("build lab");
    let servers = serve_each(&lab.routed);
    let extra = lab.routed_toml();
    lab.start_daemon(exe(), &extra).expect("daemon starts");
    (lab, servers)
}

#[test]
fn peer_reaches_every_routed_container_at_its_own_ip() {
    require_root!();
    let (lab, _servers) = routed_lab("peer", 5);
    let peer = lab.peer.as_ref().expect("peer");
    for c in &lab.routed {
        let dst = SocketAddrV4::new(c.addr, SERVICE_PORT);
        let tcp = lab::tcp_whoami(peer, dst).expect("tcp from the peer");
        assert!(tcp.starts_with(&format!("container {}:", c.addr)), "{tcp}");
        // The container sees the peer's own address: no NAT anywhere.
        assert_eq!(*parse_whoami(&tcp).expect("addr").ip(), lab::PEER_ADDR);
        let udp = lab::udp_whoami(peer, 0, dst).expect("udp from the peer");
        assert_eq!(*parse_whoami(&udp).expect("addr").ip(), lab::PEER_ADDR);
    }
    // The peer learnt every container at the host's uplink MAC.
    let (neigh, host_mac) = peer_neighbours(&lab, peer);
    for c in &lab.routed {
        assert!(
            neigh
                .lines()
                .any(|l| l.starts_with(&format!("{} ", c.addr)) && l.contains(&host_mac)),
            "{} at {host_mac} in {neigh}",
            c.addr
        );
    }
    let stats = netbpf::maps::read_stats(&lab.pin_dir).expect("stats");
    assert!(
        stats.get(Counter::ArpReplies) >= 5,
        "ARP answered by netbpf"
    );
    assert!(stats.get(Counter::RoutedIn) > 0, "forwarded in by netbpf");
    assert!(stats.get(Counter::RoutedOut) > 0, "forwarded out by netbpf");

    // Containers reach the peer too (they start the connection), seen
    // with their own address.
    let _peer_tcp = WhoamiServer::spawn(
        peer,
        Transport::Tcp,
        SocketAddrV4::new(lab::PEER_ADDR, SERVICE_PORT),
        "peer: you are",
    )
    .expect("peer server");
    let c = &lab.routed[0];
    let seen = lab::tcp_whoami(&c.ns, SocketAddrV4::new(lab::PEER_ADDR, SERVICE_PORT))
        .expect("tcp from a container");
    assert_eq!(*parse_whoami(&seen).expect("addr").ip(), c.addr);

    // Container to container on the same host.
    let other = &lab.routed[1];
    let seen = lab::tcp_whoami(&c.ns, SocketAddrV4::new(other.addr, SERVICE_PORT))
        .expect("container to container");
    assert_eq!(*parse_whoami(&seen).expect("addr").ip(), c.addr);
    let stats = netbpf::maps::read_stats(&lab.pin_dir).expect("stats");
    assert!(stats.get(Counter::RoutedLocal) > 0);

    // The CLI shows the maps behind it.
    let out = cli_output(&lab, &["containers", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows.as_array().expect("array").len(), 5);
    assert!(
        rows.as_array()
            .expect("array")
            .iter()
            .all(|r| r["attached"] == true)
    );
    let out = cli_output(&lab, &["neigh", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        rows.as_array()
            .expect("array")
            .iter()
            .any(|r| r["address"] == lab::PEER_ADDR.to_string()),
        "the peer is a known neighbour: {rows:#}"
    );
}

#[test]
fn containers_del_and_add_on_a_running_daemon() {
    require_root!();
    let (lab, _servers) = routed_lab("adddel", 2);
    let peer = lab.peer.as_ref().expect("peer");
    let c = &lab.routed[0];
    let dst = SocketAddrV4::new(c.addr, SERVICE_PORT);
    lab::tcp_whoami(peer, dst).expect("reachable before");
    let out = cli_output(
        &lab,
        &["containers", "del", "--address", &c.addr.to_string()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The peer's cached ARP entry still points at the host; the host no
    // longer forwards, routes or answers for it.
    let _ = peer.ip(&["neigh", "flush", "dev", "eth0"]);
    assert!(
        lab::tcp_whoami(peer, dst).is_err(),
        "unreachable once removed"
    );
    // The other container is undisturbed.
    let other = SocketAddrV4::new(lab.routed[1].addr, SERVICE_PORT);
    lab::tcp_whoami(peer, other).expect("the other container still works");
    let out = cli_output(
        &lab,
        &[
            "containers",
            "add",
            "--address",
            &c.addr.to_string(),
            "--interface",
            &c.host_veth,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = lab::tcp_whoami(peer, dst).expect("reachable again");
    assert_eq!(*parse_whoami(&seen).expect("addr").ip(), lab::PEER_ADDR);
    let seen = lab::tcp_whoami(&c.ns, SocketAddrV4::new(lab.routed[1].addr, SERVICE_PORT))
        .expect("outbound works again (veth program re-attached)");
    assert_eq!(*parse_whoami(&seen).expect("addr").ip(), c.addr);
}

#[test]
fn sighup_applies_the_config_containers() {
    require_root!();
    let (lab, _servers) = routed_lab("hup", 2);
    let peer = lab.peer.as_ref().expect("peer");
    let second = SocketAddrV4::new(lab.routed[1].addr, SERVICE_PORT);
    lab::tcp_whoami(peer, second).expect("reachable before");
    // Drop the second container from the config and reload.
    let keep = lab.routed_toml_for(&[0]);
    lab.rewrite_config(&keep).expect("config");
    lab.signal_daemon(nix::sys::signal::Signal::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = cli_output(&lab, &["containers", "list", "--json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        if rows.as_array().map(|a| a.len()) == Some(1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reload applied: {rows:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let peer = lab.peer.as_ref().expect("peer");
    let _ = peer.ip(&["neigh", "flush", "dev", "eth0"]);
    assert!(
        lab::tcp_whoami(peer, second).is_err(),
        "removed by the reload"
    );
    lab::tcp_whoami(peer, SocketAddrV4::new(lab.routed[0].addr, SERVICE_PORT))
        .expect("the kept container still works");
}

#[test]
fn routed_containers_stay_routed_without_a_daemon_and_down_removes_them() {
    require_root!();
    let (mut lab, _servers) = routed_lab("stay", 2);
    let first = SocketAddrV4::new(lab.routed[0].addr, SERVICE_PORT);
    let second = SocketAddrV4::new(lab.routed[1].addr, SERVICE_PORT);
    lab::tcp_whoami(lab.peer.as_ref().expect("peer"), first).expect("reachable before");
    lab.stop_daemon().expect("daemon stops");
    let peer = lab.peer.as_ref().expect("peer");

    // No daemon: the peer must ask ARP again (answered by the pinned XDP
    // program), and the pinned tc programs forward both ways.
    let before = netbpf::maps::read_stats(&lab.pin_dir).expect("stats");
    let _ = peer.ip(&["neigh", "flush", "dev", "eth0"]);
    for dst in [first, second] {
        let seen = lab::tcp_whoami(peer, dst).expect("reachable with no daemon");
        assert_eq!(*parse_whoami(&seen).expect("addr").ip(), lab::PEER_ADDR);
    }
    let seen =
        lab::tcp_whoami(&lab.routed[0].ns, second).expect("container to container with no daemon");
    assert_eq!(*parse_whoami(&seen).expect("addr").ip(), lab.routed[0].addr);
    let after = netbpf::maps::read_stats(&lab.pin_dir).expect("stats");
    assert!(
        after.get(Counter::RoutedIn) > before.get(Counter::RoutedIn)
            && after.get(Counter::ArpReplies) > before.get(Counter::ArpReplies),
        "netbpf's programs routed and answered ARP with no daemon"
    );

    // A daemon on a config without the first container adopts the second
    // and removes only the first (map entries, its veth's pinned link).
    let keep = lab.routed_toml_for(&[1]);
    lab.start_daemon(exe(), &keep).expect("daemon starts again");
    let out = cli_output(&lab, &["containers", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = rows.as_array().expect("array");
    assert!(
        rows.len() == 1 && rows[0]["address"] == lab.routed[1].addr.to_string(),
        "only the configured container stays: {rows:#?}"
    );
    let links = lab.pin_dir.join("links");
    assert!(
        !links
            .join(format!("netbpf_container@{}", lab.routed[0].host_veth))
            .exists()
            && links
                .join(format!("netbpf_container@{}", lab.routed[1].host_veth))
                .exists(),
        "pinned links: {:?}",
        std::fs::read_dir(&links).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    let peer = lab.peer.as_ref().expect("peer");
    let _ = peer.ip(&["neigh", "flush", "dev", "eth0"]);
    assert!(
        lab::tcp_whoami(peer, first).is_err(),
        "the dropped one is gone"
    );
    lab::tcp_whoami(peer, second).expect("the kept one still works");

    // `netbpf down` removes the rest, host routes included.
    lab.stop_daemon().expect("daemon stops");
    let out = cli_output(&lab, &["down"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let routes = lab
        .host
        .ip(&["-4", "route", "show", &format!("{}/32", lab.routed[1].addr)])
        .expect("ip route");
    assert!(
        routes.stdout.is_empty(),
        "host route left after down: {}",
        String::from_utf8_lossy(&routes.stdout)
    );
}

#[test]
fn masqueraded_and_routed_containers_coexist() {
    require_root!();
    let mut lab = Lab::build_with(&prefix("mix"), 1, 1).expect("build lab");
    let outside = SocketAddrV4::new(lab::OUTSIDE_ADDR, SERVICE_PORT);
    let _out = WhoamiServer::spawn(&lab.outside, Transport::Tcp, outside, "outside: you are")
        .expect("outside server");
    let r_addr = lab.routed[0].addr;
    let _r = WhoamiServer::spawn(
        &lab.routed[0].ns,
        Transport::Tcp,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVICE_PORT),
        "routed: you are",
    )
    .expect("routed server");
    let extra = lab.routed_toml();
    lab.start_daemon(exe(), &extra).expect("daemon starts");
    let c = &lab.containers[0];
    let seen = lab::tcp_whoami(&c.ns, outside).expect("masqueraded container reaches outside");
    assert_eq!(*parse_whoami(&seen).expect("addr").ip(), lab::UPLINK_ADDR);
    let peer = lab.peer.as_ref().expect("peer");
    let seen = lab::tcp_whoami(peer, SocketAddrV4::new(r_addr, SERVICE_PORT))
        .expect("peer reaches the routed container");
    assert_eq!(*parse_whoami(&seen).expect("addr").ip(), lab::PEER_ADDR);
}

/// The interface index of `eth0` in `ns`.
/// The peer's IPv4 neighbour table on its eth0, and the host's uplink MAC
/// (where every routed container must be).
fn peer_neighbours(lab: &Lab, peer: &netbpf::netns::Netns) -> (String, String) {
    let neigh = peer
        .ip(&["-4", "neigh", "show", "dev", "eth0"])
        .expect("ip neigh");
    let host_mac = lab
        .host
        .exec("cat", &["/sys/class/net/eth0/address"])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .expect("uplink mac");
    (String::from_utf8_lossy(&neigh.stdout).to_string(), host_mac)
}

fn eth0_index(ns: &netbpf::netns::Netns) -> String {
    let out = ns
        .exec("cat", &["/sys/class/net/eth0/ifindex"])
        .expect("read ifindex");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Issue 14: an uplink that is a veth whose peer has the same index in its
/// own namespace (both ends made straight into fresh namespaces, both index
/// 2). The kernel then reports no IFLA_LINK, and a check by peer index
/// took the uplink for a plain NIC: the ARP responder went native, whose
/// XDP_TX on a veth without NAPI on the peer drops every reply. The veth is
/// known by its link kind now, so the responder runs in generic mode.
#[test]
fn a_veth_uplink_whose_peer_has_the_same_index_routes_containers() {
    require_root!();
    let mut lab = Lab::build_direct_peer(&prefix("same"), 3).expect("build lab");
    let peer = lab.peer.take().expect("peer");
    assert_eq!(eth0_index(&lab.host), "2", "the wiring under test");
    assert_eq!(eth0_index(&peer), "2", "the wiring under test");
    let mut servers = serve_each(&lab.routed);
    for t in [Transport::Tcp, Transport::Udp] {
        servers.push(
            WhoamiServer::spawn(
                &peer,
                t,
                SocketAddrV4::new(lab::PEER_ADDR, SERVICE_PORT),
                "peer: you are",
            )
            .expect("peer server"),
        );
    }
    let extra = lab.routed_toml();
    lab.start_daemon(exe(), &extra).expect("daemon starts");
    let log = lab.daemon_log();

    let mut failures = Vec::new();
    for c in &lab.routed {
        let dst = SocketAddrV4::new(c.addr, SERVICE_PORT);
        match lab::tcp_whoami(&peer, dst).map(|s| parse_whoami(&s)) {
            Ok(Some(seen)) if *seen.ip() == lab::PEER_ADDR => {}
            other => failures.push(format!("peer → {dst} tcp: {other:?}")),
        }
        match lab::udp_whoami(&peer, 0, dst).map(|s| parse_whoami(&s)) {
            Ok(Some(seen)) if *seen.ip() == lab::PEER_ADDR => {}
            other => failures.push(format!("peer → {dst} udp: {other:?}")),
        }
        let to_peer = SocketAddrV4::new(lab::PEER_ADDR, SERVICE_PORT);
        match lab::tcp_whoami(&c.ns, to_peer).map(|s| parse_whoami(&s)) {
            Ok(Some(seen)) if *seen.ip() == c.addr => {}
            other => failures.push(format!("{} → peer tcp: {other:?}", c.addr)),
        }
        match lab::udp_whoami(&c.ns, 0, to_peer).map(|s| parse_whoami(&s)) {
            Ok(Some(seen)) if *seen.ip() == c.addr => {}
            other => failures.push(format!("{} → peer udp: {other:?}", c.addr)),
        }
    }
    // ARP: the peer learnt every container at the host's uplink MAC.
    let (neigh, host_mac) = peer_neighbours(&lab, &peer);
    for c in &lab.routed {
        if !neigh
            .lines()
            .any(|l| l.starts_with(&format!("{} ", c.addr)) && l.contains(&host_mac))
        {
            failures.push(format!("ARP: {} not at {host_mac} in {neigh:?}", c.addr));
        }
    }
    let stats = netbpf::maps::read_stats(&lab.pin_dir).expect("stats");
    if stats.get(Counter::ArpReplies) < 3 {
        failures.push(format!(
            "ARP replies counted: {}",
            stats.get(Counter::ArpReplies)
        ));
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}\ndaemon log:\n{log}",
        failures.len(),
        failures.join("\n")
    );
    drop(servers);
    drop(lab);
    drop(peer);
}

//! Route reflection end to end with real BIRD daemons: four container
//! hosts, each with a routed container, its own netbpf daemon and BIRD,
//! every host a route-reflector client (`[[bgp.reflector]]`) of one BIRD
//! running alone in a router namespace, whose config netbpf renders
//! (`[[bgp.client]]`s: `rr client`, `rr cluster id`). No host peers with
//! another: every route crosses the reflector.
//!
//! Namespaces are `nbrr<x>-<pid>-*`; everything is removed on drop, also
//! when a test fails. Routes are awaited with generous deadlines: how fast
//! they converge is the benchmark's business, not a test's.
//!
//! Needs root and `bird` (Debian `bird2`; `cargo xtask setup` installs it).

#[macro_use]
mod common;
mod bgp_common;

use bgp_common::*;

use common::{exe, require_root};

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use netbpf::{
    lab::{self, SERVICE_PORT, Transport, WhoamiServer, parse_whoami},
    multihost::{MultiHost, REFLECTOR_ADDR, Topology, container_addr},
};

/// Generous: a loaded CI machine starting five BIRDs.
const CONVERGE: Duration = Duration::from_secs(60);

/// Generous for one update or withdrawal through the reflector.
const PROPAGATE: Duration = Duration::from_secs(30);

fn logs(lab: &MultiHost) -> String {
    let mut s = String::new();
    for h in &lab.hosts {
        s.push_str(&format!(
            "host {} daemon log:\n{}\n",
            h.index,
            h.daemon_log()
        ));
    }
    if let Some(b) = lab.reflector.as_ref().and_then(|r| r.bird.as_ref()) {
        s.push_str(&format!(
            "reflector BIRD log:\n{}\n",
            std::fs::read_to_string(&b.log).unwrap_or_default()
        ));
    }
    s
}

/// Four hosts with one container each, peering as `topology`, converged.
fn started(x: &str, topology: Topology) -> (MultiHost, Vec<WhoamiServer>) {
    let prefix = format!("nbrr{x}-{}", std::process::id());
    let mut lab = MultiHost::build_with(&prefix, 4, 1, topology).expect("build");
    let servers = lab.serve().expect("servers");
    if let Err(e) = lab.start(exe()) {
        panic!("start: {e}\n{}", logs(&lab));
    }
    let took = lab
        .wait_converged(CONVERGE)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    eprintln!("converged through the reflector in {took:?}");
    (lab, servers)
}

/// Every container reaches every other host's container at its own IP.
fn assert_full_reach(lab: &MultiHost) {
    for h in &lab.hosts {
        for c in &h.containers {
            for o in lab.hosts.iter().filter(|o| o.index != h.index) {
                for d in &o.containers {
                    let dst = SocketAddrV4::new(d.addr, SERVICE_PORT);
                    let seen = lab::tcp_whoami(&c.ns, dst)
                        .unwrap_or_else(|e| panic!("tcp {} → {}: {e}", c.addr, d.addr));
                    assert_eq!(*parse_whoami(&seen).expect("addr").ip(), c.addr, "{seen}");
                }
            }
        }
    }
}

#[test]
fn four_clients_of_a_reflector_reach_every_container_and_see_withdrawals() {
    if !require_root("four_clients_of_a_reflector_reach_every_container_and_see_withdrawals")
        || !bird_installed()
    {
        return;
    }
    let (mut lab, _servers) = started("reach", Topology::Reflector);

    // Every container reaches every other host's container at its own IP.
    for h in &lab.hosts {
        let c = &h.containers[0];
        for o in lab.hosts.iter().filter(|o| o.index != h.index) {
            let d = &o.containers[0];
            let dst = SocketAddrV4::new(d.addr, SERVICE_PORT);
            let seen = lab::tcp_whoami(&c.ns, dst)
                .unwrap_or_else(|e| panic!("tcp {} → {}: {e}", c.addr, d.addr));
            assert!(
                seen.starts_with(&format!("container {} on host {}", d.addr, o.index)),
                "{seen}"
            );
            assert_eq!(*parse_whoami(&seen).expect("addr").ip(), c.addr, "{seen}");
        }
    }

    // Every route crossed the reflector: a host's only session is to it,
    // and the next hop is still the originating host (reflection keeps it).
    for h in &lab.hosts {
        let out =
            h.ns.ip(&["-4", "route", "show", "proto", "bird"])
                .expect("ip route");
        let routes = String::from_utf8_lossy(&out.stdout).into_owned();
        for o in lab.hosts.iter().filter(|o| o.index != h.index) {
            let want = format!("{} via {} dev eth0", o.containers[0].addr, o.addr);
            assert!(routes.contains(&want), "host {}: {routes}", h.index);
        }
    }

    // The reflector: four rr clients, each up, one route from each.
    let rr = lab.reflector.as_ref().expect("reflector");
    let rr_socket = rr.bird.as_ref().expect("reflector's BIRD").socket.clone();
    let s = netbpf::bgp::status(&rr_socket).expect("reflector status");
    assert_eq!(s.peers.len(), 4, "{s:#?}");
    for p in &s.peers {
        assert!(p.rr_client, "{p:#?}");
        assert_eq!(p.bgp_state, "Established", "{p:#?}");
        assert_eq!(p.imported, Some(1), "{p:#?}");
        assert_eq!(p.exported, Some(3), "the other three hosts' routes: {p:#?}");
    }

    // netbpf bgp status on a client: its role, its one session, the limit
    // and the reflector's graceful restart.
    let h1 = &lab.hosts[0];
    let j = bgp_status(exe(), h1);
    assert_eq!(j["role"], "reflector-client", "{j:#}");
    let peers = j["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 1, "{j:#}");
    assert_eq!(peers[0]["neighbor"], REFLECTOR_ADDR.to_string(), "{j:#}");
    assert_eq!(peers[0]["role"], "reflector", "{j:#}");
    assert_eq!(peers[0]["rr_client"], false, "{j:#}");
    assert_eq!(peers[0]["imported"], 3, "{j:#}");
    assert_eq!(peers[0]["receive_limit"], 16384, "{j:#}");
    assert_eq!(peers[0]["graceful_restart"], "able", "{j:#}");
    assert_eq!(peers[0]["restart_time"], 120, "{j:#}");
    let out = ok(run(
        exe(),
        h1,
        &["bgp", "status", "--config", &config_arg(h1)],
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Role: route-reflector client\n"), "{text}");
    assert!(text.contains("3/16384/1"), "{text}");

    // A new container on host 1 reaches the others through the reflector...
    let prefix = lab.prefix.clone();
    let new_addr = container_addr(1, 2);
    let (veth, _new_servers) = {
        let c = lab.hosts[0].wire_container(&prefix, 2).expect("wire");
        let servers: Vec<WhoamiServer> = [Transport::Tcp]
            .into_iter()
            .map(|t| {
                WhoamiServer::spawn(
                    &c.ns,
                    t,
                    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVICE_PORT),
                    "new container: you are",
                )
                .expect("server")
            })
            .collect();
        (c.host_veth.clone(), servers)
    };
    let addr_s = new_addr.to_string();
    ok(run(
        exe(),
        &lab.hosts[0],
        &[
            "containers",
            "add",
            "--address",
            &addr_s,
            "--interface",
            &veth,
        ],
    ));
    for o in &lab.hosts[1..] {
        assert!(
            eventually(PROPAGATE, || has_route(o, new_addr)),
            "host {} never learned {new_addr}\n{}",
            o.index,
            logs(&lab)
        );
    }
    let dst = SocketAddrV4::new(new_addr, SERVICE_PORT);
    for o in &lab.hosts[1..] {
        let c = &o.containers[0];
        let seen = lab::tcp_whoami(&c.ns, dst).expect("tcp to the new container");
        assert_eq!(*parse_whoami(&seen).expect("addr").ip(), c.addr);
    }

    // ... and removing it withdraws it on every other host.
    ok(run(
        exe(),
        &lab.hosts[0],
        &["containers", "del", "--address", &addr_s],
    ));
    for o in &lab.hosts[1..] {
        assert!(
            eventually(PROPAGATE, || !has_route(o, new_addr)),
            "host {} still routes {new_addr}",
            o.index
        );
    }
    lab.hosts[0].unwire_container(new_addr);
    let c = &lab.hosts[1].containers[0];
    assert!(
        lab::tcp_whoami(&c.ns, dst).is_err(),
        "unreachable once withdrawn"
    );

    // Removing host 3's only container withdraws it everywhere else, and
    // leaves every other route in place.
    let gone = container_addr(3, 1);
    ok(run(
        exe(),
        &lab.hosts[2],
        &["containers", "del", "--address", &gone.to_string()],
    ));
    for o in lab.hosts.iter().filter(|o| o.index != 3) {
        assert!(
            eventually(PROPAGATE, || !has_route(o, gone)),
            "host {} still routes {gone}",
            o.index
        );
    }
    lab.hosts[2].unwire_container(gone);
    for h in &lab.hosts {
        let want: BTreeSet<Ipv4Addr> = lab
            .hosts
            .iter()
            .filter(|o| o.index != h.index)
            .flat_map(|o| o.containers.iter().map(|c| c.addr))
            .collect();
        assert_eq!(
            h.kernel_bgp_routes().expect("routes"),
            want,
            "host {}",
            h.index
        );
    }
    let (a, b) = (&lab.hosts[0].containers[0], &lab.hosts[3].containers[0]);
    lab::tcp_whoami(&a.ns, SocketAddrV4::new(b.addr, SERVICE_PORT))
        .expect("host 1 still reaches host 4");
}

/// A netbpf host as the reflector: host 1 has a `[[bgp.client]]` per other
/// host, announces its own container and reflects the others' routes
/// (`netbpf_reflect`); hosts 2-4 each have host 1 as `[[bgp.reflector]]`.
#[test]
fn a_netbpf_host_reflects_its_clients_routes_and_announces_its_own() {
    if !require_root("a_netbpf_host_reflects_its_clients_routes_and_announces_its_own")
        || !bird_installed()
    {
        return;
    }
    let (mut lab, _servers) = started("host", Topology::HostReflector);
    assert!(lab.reflector.is_none(), "no router namespace");
    assert_full_reach(&lab);

    let h1 = &lab.hosts[0];
    let j = bgp_status(exe(), h1);
    assert_eq!(j["role"], "reflector", "{j:#}");
    assert_eq!(j["cluster_id"], h1.addr.to_string(), "{j:#}");
    let peers = j["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 3, "{j:#}");
    for p in peers {
        assert_eq!(p["role"], "client", "{j:#}");
        assert_eq!(p["rr_client"], true, "{j:#}");
        assert_eq!(p["imported"], 1, "{j:#}");
        // Its own container and the two other clients' routes.
        assert_eq!(p["exported"], 3, "{j:#}");
    }
    for h in &lab.hosts[1..] {
        let config = h.dir.join("netbpf.toml");
        let out = ok(run(
            exe(),
            h,
            &[
                "bgp",
                "status",
                "--json",
                "--config",
                config.to_str().expect("utf-8"),
            ],
        ));
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(j["role"], "reflector-client", "{j:#}");
        assert_eq!(j["peers"].as_array().map(Vec::len), Some(1), "{j:#}");
    }

    // Host 2's container goes: withdrawn on host 1 and, through it, on
    // hosts 3 and 4.
    let gone = container_addr(2, 1);
    ok(run(
        exe(),
        &lab.hosts[1],
        &["containers", "del", "--address", &gone.to_string()],
    ));
    for o in lab.hosts.iter().filter(|o| o.index != 2) {
        assert!(
            eventually(PROPAGATE, || !has_route(o, gone)),
            "host {} still routes {gone}",
            o.index
        );
    }
    lab.hosts[1].unwire_container(gone);
    lab.wait_converged(CONVERGE)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    assert_full_reach(&lab);
}

//! Top-of-rack peering end to end with real BIRD daemons: four container
//! hosts in two racks, each rack on its own segment behind a router
//! namespace running BIRD alone with its own AS. Every host has its own AS
//! and one eBGP session, with its rack's router; the routers peer over a
//! spine. Rack 1's sessions and the spine's are signed with TCP MD5 (when
//! the kernel has it); host 4 peers with its router's loopback, two hops
//! away (`multihop`). No host peers with another: every route crosses a
//! router, and the cross-rack ones cross both.
//!
//! Namespaces are `nbtor-<pid>-*`; everything is removed on drop, also
//! when the test fails. Routes are awaited with generous deadlines: how
//! fast they converge is the benchmark's business, not a test's.
//!
//! Needs root and `bird` (Debian `bird2`; `cargo xtask setup` installs it).

#[macro_use]
mod common;
mod bgp_common;

use bgp_common::*;

use common::{exe, require_root};

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    os::unix::fs::PermissionsExt as _,
    time::Duration,
};

use netbpf::{
    bgp,
    lab::{self, SERVICE_PORT, WhoamiServer, parse_whoami},
    multihost::{
        MultiHost, RACK1_PASSWORD, Racks, Topology, container_addr, tcp_md5_supported, tor_addr,
        tor_loopback,
    },
};

/// Generous: a loaded CI machine starting six BIRDs, two hops of eBGP.
const CONVERGE: Duration = Duration::from_secs(90);

/// Generous for one withdrawal across both routers.
const PROPAGATE: Duration = Duration::from_secs(30);

fn logs(lab: &MultiHost) -> String {
    let mut s = String::new();
    for h in &lab.hosts {
        s.push_str(&format!(
            "host {} daemon log:\n{}\nhost {} BIRD log:\n{}\n",
            h.index,
            h.daemon_log(),
            h.index,
            h.bird
                .as_ref()
                .map(|b| std::fs::read_to_string(&b.log).unwrap_or_default())
                .unwrap_or_default()
        ));
    }
    for r in &lab.routers {
        if let Some(b) = &r.bird {
            s.push_str(&format!(
                "rack {} router BIRD log:\n{}\n",
                r.rack,
                std::fs::read_to_string(&b.log).unwrap_or_default()
            ));
        }
    }
    s
}

/// `ip route show proto bird` in host `h`'s namespace.
fn routes(lab: &MultiHost, h: usize) -> String {
    let out = lab.hosts[h - 1]
        .ns
        .ip(&["-4", "route", "show", "proto", "bird"])
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_racks_behind_their_routers_reach_each_other_over_ebgp() {
    if !require_root("two_racks_behind_their_routers_reach_each_other_over_ebgp")
        || !bird_installed()
    {
        return;
    }
    let md5 = tcp_md5_supported();
    if !md5 {
        eprintln!(
            "SKIPPED (the MD5 part): the kernel has no TCP MD5 (CONFIG_TCP_MD5SIG), \
             so the sessions run without passwords"
        );
    }
    let plan = Racks {
        hosts: 4,
        racks: 2,
        md5,
    };
    let prefix = format!("nbtor-{}", std::process::id());
    let mut lab = MultiHost::build_with(&prefix, 4, 1, Topology::Racks(plan)).expect("build");
    let _servers: Vec<WhoamiServer> = lab.serve().expect("servers");
    if let Err(e) = lab.start(exe()) {
        panic!("start: {e}\n{}", logs(&lab));
    }
    lab.wait_converged(CONVERGE)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));

    // Every container reaches every other host's container at its own IP,
    // across racks too.
    for h in &lab.hosts {
        let c = &h.containers[0];
        for o in lab.hosts.iter().filter(|o| o.index != h.index) {
            let d = &o.containers[0];
            let dst = SocketAddrV4::new(d.addr, SERVICE_PORT);
            let seen = lab::tcp_whoami(&c.ns, dst)
                .unwrap_or_else(|e| panic!("tcp {} → {}: {e}\n{}", c.addr, d.addr, logs(&lab)));
            assert!(
                seen.starts_with(&format!("container {} on host {}", d.addr, o.index)),
                "{seen}"
            );
            assert_eq!(*parse_whoami(&seen).expect("addr").ip(), c.addr, "{seen}");
        }
    }

    // The other rack's containers are behind the host's own router; host
    // 4's come through its multihop session with the loopback, resolved
    // through the static route to the router's segment address.
    let r1 = routes(&lab, 1);
    for c in [container_addr(3, 1), container_addr(4, 1)] {
        assert!(
            r1.contains(&format!("{c} via {} dev eth0", tor_addr(1))),
            "{r1}"
        );
    }
    // Within a rack the router passes the other host on as next hop (it is
    // on the same segment): no hairpin through the router.
    assert!(
        r1.contains(&format!(
            "{} via {} dev eth0",
            container_addr(2, 1),
            lab.hosts[1].addr
        )),
        "{r1}"
    );
    let r4 = routes(&lab, 4);
    for c in [container_addr(1, 1), container_addr(2, 1)] {
        assert!(
            r4.contains(&format!("{c} via {} dev eth0", tor_addr(2))),
            "{r4}"
        );
    }

    // Both routers: every session up and every container in their kernels.
    for r in &lab.routers {
        let socket = &r.bird.as_ref().expect("router's BIRD").socket;
        let s = bgp::status(socket).expect("router status");
        assert_eq!(s.peers.len(), 3, "two hosts and the other router: {s:#?}");
        for p in &s.peers {
            assert_eq!(p.bgp_state, "Established", "rack {}: {p:#?}", r.rack);
            assert!(p.ebgp, "{p:#?}");
        }
        let mut have = r.kernel_bgp_routes().expect("router routes");
        have.sort();
        let want: Vec<Ipv4Addr> = (1..=4).map(|h| container_addr(h, 1)).collect();
        assert_eq!(have, want, "rack {}", r.rack);
    }

    // netbpf bgp status on host 1: the eBGP role, one session, up.
    let h1 = &lab.hosts[0];
    let j = bgp_status(exe(), h1);
    assert_eq!(j["role"], "ebgp", "{j:#}");
    let peers = j["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 1, "{j:#}");
    assert_eq!(peers[0]["neighbor"], tor_addr(1).to_string(), "{j:#}");
    assert_eq!(peers[0]["neighbor_as"], 65001, "{j:#}");
    assert_eq!(peers[0]["local_as"], 65101, "{j:#}");
    assert_eq!(peers[0]["ebgp"], true, "{j:#}");
    assert_eq!(peers[0]["bgp_state"], "Established", "{j:#}");
    assert_eq!(peers[0]["imported"], 3, "{j:#}");
    let out = ok(run(
        exe(),
        h1,
        &["bgp", "status", "--config", &config_arg(h1)],
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Role: eBGP to routers\n"), "{text}");
    assert!(text.contains(" eBGP "), "{text}");
    assert!(!text.contains(RACK1_PASSWORD), "{text}");

    // Host 4's session is multihop, with the router's loopback, and up.
    let h4 = &lab.hosts[3];
    let fragment = std::fs::read_to_string(h4.dir.join("netbpf-bird.conf")).expect("fragment");
    assert!(fragment.contains("  multihop 2;\n"), "{fragment}");
    assert!(fragment.contains("    gateway recursive;\n"), "{fragment}");
    let s = bgp::status(&h4.bird.as_ref().expect("BIRD").socket).expect("host 4 status");
    assert_eq!(s.peers.len(), 1, "{s:#?}");
    assert_eq!(
        s.peers[0].neighbor.as_deref(),
        Some(tor_loopback(2).to_string().as_str())
    );
    assert_eq!(s.peers[0].bgp_state, "Established", "{s:#?}");

    // MD5: rack 1's sessions carry a password in BIRD's config (which is
    // then not world-readable), are up, and the kernel holds an MD5 key
    // on the BGP socket; rack 2's host sessions do not.
    if md5 {
        let path = h1.dir.join("netbpf-bird.conf");
        let fragment = std::fs::read_to_string(&path).expect("fragment");
        assert!(
            fragment.contains(&format!("  password \"{RACK1_PASSWORD}\";\n")),
            "{fragment}"
        );
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let ss = h1
            .ns
            .exec(
                "ss",
                &[
                    "-tnie",
                    "state",
                    "established",
                    "( sport = :179 or dport = :179 )",
                ],
            )
            .expect("ss");
        let ss = String::from_utf8_lossy(&ss.stdout);
        assert!(
            ss.contains("md5keys:"),
            "no MD5 key on host 1's BGP socket:\n{ss}"
        );
        let h3 = &lab.hosts[2];
        let ss = h3
            .ns
            .exec(
                "ss",
                &[
                    "-tnie",
                    "state",
                    "established",
                    "( sport = :179 or dport = :179 )",
                ],
            )
            .expect("ss");
        let ss = String::from_utf8_lossy(&ss.stdout);
        assert!(ss.contains(":179"), "{ss}");
        assert!(
            !ss.contains("md5keys"),
            "host 3's session has no password:\n{ss}"
        );
    }

    // A container removed in rack 1 is withdrawn in rack 2, through both
    // routers, and only it.
    let gone = container_addr(1, 1);
    ok(run(
        exe(),
        &lab.hosts[0],
        &["containers", "del", "--address", &gone.to_string()],
    ));
    for o in &lab.hosts[1..] {
        assert!(
            eventually(PROPAGATE, || !has_route(o, gone)),
            "host {} still routes {gone}\n{}",
            o.index,
            logs(&lab)
        );
    }
    lab.hosts[0].unwire_container(gone);
    lab.wait_converged(PROPAGATE)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&lab)));
    let (a, b) = (&lab.hosts[1].containers[0], &lab.hosts[3].containers[0]);
    lab::tcp_whoami(&a.ns, SocketAddrV4::new(b.addr, SERVICE_PORT))
        .expect("host 2 still reaches host 4 across the racks");
}

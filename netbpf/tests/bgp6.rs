//! IPv6 container routes across hosts over BGP, end to end with real BIRD
//! daemons: two container hosts in namespaces (prefix `nbv6bgp-<pid>`) on
//! one bridge segment, each with a dual-stack routed container, its own
//! netbpf daemon and BIRD. The IPv6 /128s travel on the IPv4 sessions'
//! IPv6 channels; each host installs the other's, and the containers
//! reach each other at their IPv6 addresses (`ping -6`, `ncat -6`).
//! Everything is removed on drop, also when a test fails.
//!
//! Needs root, `bird` (Debian `bird2`), `ping` and `ncat` (`cargo xtask
//! setup` installs them).

#[macro_use]
mod common;
mod bgp_common;

use bgp_common::*;
use common::exe;

use std::{net::Ipv6Addr, time::Duration};

use common::require_root;
use netbpf::multihost::{Host, MultiHost, container_addr6, host_addr6};
use netbpf_common::Counter;

/// Host `h`'s IPv6 address on the segment (as `netbpf lab --hosts`
/// wires it).
fn host6(h: usize) -> String {
    host_addr6(h).to_string()
}

/// The IPv6 address of host `h`'s (first) container.
fn container6(h: usize) -> Ipv6Addr {
    container_addr6(h, 1)
}

/// The IPv6 addresses in host `h`'s kernel table with `proto bird`.
fn kernel_bgp_routes6(host: &Host) -> String {
    host.ns
        .ip(&["-6", "route", "show", "proto", "bird"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn two_hosts_route_their_containers_ipv6_addresses_over_bgp() {
    if !require_root("two_hosts_route_their_containers_ipv6_addresses_over_bgp")
        || !bird_installed()
    {
        return;
    }
    let mut lab =
        MultiHost::build(&format!("nbv6bgp-{}", std::process::id()), 2, 1).expect("build");
    // The lab's own IPv6 wiring, as `netbpf lab --hosts N` does it.
    lab.wire_ipv6().expect("IPv6 wiring");
    if let Err(e) = lab.start(exe()) {
        for h in &lab.hosts {
            eprintln!("host {} daemon log:\n{}", h.index, h.daemon_log());
        }
        panic!("start: {e}");
    }
    lab.wait_converged(Duration::from_secs(30))
        .expect("IPv4 converged");
    // Each host learns the other's /128, via its global address.
    for (h, o) in [(0, 2), (1, 1)] {
        let host = &lab.hosts[h];
        let want = format!("{}", container6(o));
        assert!(
            eventually(Duration::from_secs(15), || kernel_bgp_routes6(host)
                .lines()
                .any(|l| l.starts_with(&want))),
            "host {}: no BGP route to {want}: {}\n{}",
            host.index,
            kernel_bgp_routes6(host),
            host.daemon_log()
        );
    }
    let routes = kernel_bgp_routes6(&lab.hosts[0]);
    assert!(routes.contains(&format!("via {}", host6(2))), "{routes}");

    // Container to container across the hosts, at their IPv6 addresses.
    let c1 = &lab.hosts[0].containers[0];
    let dst = container6(2).to_string();
    let ping = |n: &str| {
        c1.ns
            .exec("ping", &["-6", "-c", n, "-W", "1", &dst])
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        eventually(Duration::from_secs(20), || ping("1")),
        "ping -6 {dst} from host 1's container"
    );
    assert!(ping("3"), "three in a row");
    for h in &lab.hosts {
        let stats = netbpf::maps::read_stats(&h.pin_dir).expect("stats");
        assert!(
            stats.get(Counter::RoutedIn) > 0,
            "host {}: routed in",
            h.index
        );
    }

    // `netbpf bgp status` on host 1: its /128 announced, host 2's learned.
    let h1 = &lab.hosts[0];
    let status = bgp_status(exe(), h1);
    let prefixes = |key: &str| -> Vec<String> {
        status[key]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|r| r["prefix"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(
        prefixes("announced").contains(&format!("{}/128", container6(1))),
        "{status:#}"
    );
    assert!(
        prefixes("learned").contains(&format!("{}/128", container6(2))),
        "{status:#}"
    );
}

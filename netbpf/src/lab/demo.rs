//! `netbpf lab` / `cargo xtask run`: the demo that builds the lab, shows the tables and the live counters.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6},
    path::Path,
    time::{Duration, Instant},
};

use log::info;

use crate::{
    maps::{self},
    rows::indent,
};

use super::{build::*, plan::*, probes::*};

/// Runs the demo: builds the lab, starts the daemon with each container's
/// port 4000 published, shows each container reaching the outside through
/// the masquerade and the outside reaching each container through its
/// published port, the NAT rules and the conntrack table that did it, then
/// shows live counters until Ctrl-C (or stops there, with `once`).
pub async fn run_demo(exe: &Path, prefix: &str, once: bool) -> anyhow::Result<()> {
    println!("netbpf lab: building namespaces {prefix}-* (the host's own network is not touched)");
    let mut lab = Lab::build_with(prefix, 3, 5)?;
    lab.wire_ipv6()?;
    let mut _servers = Vec::new();
    for transport in [Transport::Tcp, Transport::Udp] {
        _servers.push(WhoamiServer::spawn(
            &lab.outside,
            transport,
            SocketAddrV4::new(OUTSIDE_ADDR, SERVICE_PORT),
            "outside: you are",
        )?);
        for c in &lab.routed {
            _servers.push(WhoamiServer::spawn(
                &c.ns,
                transport,
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVICE_PORT),
                &format!("routed container {}: hello,", c.addr),
            )?);
            if let Some(v6) = c.ipv6 {
                _servers.push(WhoamiServer::spawn(
                    &c.ns,
                    transport,
                    SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, SERVICE_PORT, 0, 0),
                    &format!("routed container {v6}: hello,"),
                )?);
            }
        }
        for (i, c) in lab.containers.iter().enumerate() {
            _servers.push(WhoamiServer::spawn(
                &c.ns,
                transport,
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVICE_PORT),
                &format!("container c{} ({}): hello,", i + 1, c.addr),
            )?);
        }
    }
    let mut publish = String::new();
    let mut published = Vec::new();
    for (i, c) in lab.containers.iter().enumerate() {
        let port = DEMO_PUBLISH_BASE + 1 + i as u16;
        let to = SocketAddrV4::new(c.addr, SERVICE_PORT);
        for proto in ["tcp", "udp"] {
            publish.push_str(&publish_toml(proto, &port.to_string(), to, None));
        }
        published.push((i + 1, port, to));
    }
    println!(
        "  host {prefix}-host: uplink eth0 {UPLINK_ADDR}/24, containers {CONTAINER_CIDR} (each listening on tcp+udp :{SERVICE_PORT})"
    );
    println!("  outside {prefix}-out: {OUTSIDE_ADDR}, whoami server on tcp+udp :{SERVICE_PORT}");
    publish.push_str(&lab.routed_toml());
    println!(
        "  peer {prefix}-peer: {PEER_ADDR}/24 and {PEER_ADDR6}/64 on the uplink's segment (the host has {SEGMENT_HOST_ADDR}/24 and {SEGMENT_HOST_ADDR6}/64 there), no routes"
    );
    println!(
        "  routed containers (IPv4 and IPv6): {}",
        lab.routed
            .iter()
            .map(|c| match c.ipv6 {
                Some(v6) => format!("{} {v6}", c.addr),
                None => c.addr.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  masqueraded containers are IPv4 only: netbpf has no NAT66 (no IPv6 masquerade, no IPv6 published ports)"
    );
    lab.start_daemon(exe, &publish)?;
    println!(
        "  netbpf daemon attached to {prefix}-host/eth0, maps pinned in {}; config: {}",
        lab.pin_dir.display(),
        lab.dir.join("netbpf.toml").display()
    );
    println!();
    println!(
        "The Docker way, outbound (IPv4 only, there is no NAT66): every container reaches the outside as {UPLINK_ADDR}"
    );
    let dst = SocketAddrV4::new(OUTSIDE_ADDR, SERVICE_PORT);
    let seen = |line: String| parse_whoami(&line).map(|a| a.to_string()).unwrap_or(line);
    for (i, c) in lab.containers.iter().enumerate() {
        let tcp = tcp_whoami(&c.ns, dst)?;
        let udp = udp_whoami(&c.ns, 0, dst)?;
        let icmp = ping(&c.ns, OUTSIDE_ADDR, 0x4c00 + i as u16)?;
        println!(
            "  c{} {:<10} tcp → outside saw {:<21} udp → {:<21} ping → reply from {icmp}",
            i + 1,
            c.addr,
            seen(tcp),
            seen(udp),
        );
    }
    println!();
    println!(
        "The Docker way, inbound (IPv4 only, there is no NAT66): the outside reaches each container through a published port, and the container sees the client's real address"
    );
    for (n, port, to) in &published {
        let host = SocketAddrV4::new(UPLINK_ADDR, *port);
        let tcp = tcp_whoami(&lab.outside, host)?;
        let udp = udp_whoami(&lab.outside, 0, host)?;
        println!(
            "  {host} → c{n} {to}   tcp → c{n} saw {:<21} udp → c{n} saw {}",
            seen(tcp),
            seen(udp),
        );
    }
    println!();
    if let Some(peer) = &lab.peer {
        println!(
            "The Calico way: the peer reaches each routed container at its own IP (the host answers ARP for it)"
        );
        for (i, c) in lab.routed.iter().enumerate() {
            let dst = SocketAddrV4::new(c.addr, SERVICE_PORT);
            let tcp = tcp_whoami(peer, dst)?;
            let udp = udp_whoami(peer, 0, dst)?;
            let icmp = ping(peer, c.addr, 0x5200 + i as u16)?;
            println!(
                "  {dst:<16} tcp → {} saw {:<16} udp → saw {:<16} ping → reply from {icmp}",
                c.addr,
                seen(tcp),
                seen(udp)
            );
        }
        println!();
        println!(
            "The Calico way in IPv6: the peer reaches each routed container at its IPv6 address (the host answers Neighbour Solicitations for it in XDP)"
        );
        for (i, c) in lab.routed.iter().enumerate() {
            let Some(v6) = c.ipv6 else { continue };
            let id = 0x5600 + i as u16;
            // The first may wait for the container's link-local address
            // (duplicate address detection), which its replies need.
            let icmp = if i == 0 {
                ping6_within(peer, v6, id, Duration::from_secs(20))?
            } else {
                ping6(peer, v6, id)?
            };
            let dst = SocketAddrV6::new(v6, SERVICE_PORT, 0, 0);
            let tcp = tcp_whoami(peer, dst)?;
            let udp = udp_whoami(peer, 0, dst)?;
            println!(
                "  {dst:<22} tcp → {v6} saw {:<22} udp → saw {:<22} ping -6 → reply from {icmp}",
                whoami_seen(&tcp),
                whoami_seen(&udp)
            );
        }
        let neigh = peer.ip(&["-4", "neigh", "show", "dev", "eth0"])?;
        println!();
        println!("The peer's ARP table (every container at the host's uplink MAC):");
        print!("{}", indent(&String::from_utf8_lossy(&neigh.stdout)));
        let neigh6 = peer.ip(&["-6", "neigh", "show", "dev", "eth0"])?;
        println!();
        println!(
            "The peer's IPv6 neighbour table (every container at the host's uplink MAC, from netbpf's Neighbour Advertisements):"
        );
        print!("{}", indent(&String::from_utf8_lossy(&neigh6.stdout)));
        println!();
        println!("The routed containers (netbpf containers list):");
        // Read inside the host namespace, so interface names resolve there.
        let pin_dir = lab.pin_dir.clone();
        let rows = lab.host.run(move || crate::containers::list(&pin_dir))??;
        print_table(
            &crate::containers::ContainerRow::HEADER,
            rows.iter().map(|r| r.cells()),
        );
        println!();
        println!("The neighbour map (netbpf neigh list):");
        let pin_dir = lab.pin_dir.clone();
        let rows = lab.host.run(move || crate::neigh::list(&pin_dir))??;
        print_table(
            &crate::neigh::NeighRow::HEADER,
            rows.iter().map(|r| r.cells()),
        );
        println!();
    }
    println!("The NAT rules (netbpf nat list):");
    print!(
        "{}",
        indent(&crate::origins::nat_rules(&lab.pin_dir)?.render())
    );
    println!();
    println!("The conntrack table that made it happen (netbpf conntrack list):");
    let nat = lab.nat_maps()?;
    let rows = crate::conntrack::list(&nat, &crate::config::Timeouts::default())?;
    print_table(
        &crate::conntrack::FlowRow::HEADER,
        rows.iter().map(|r| r.cells()),
    );
    println!();
    if once {
        info!("lab: done (--once)");
    } else {
        println!("Live counters (netbpf stats), per second; Ctrl-C removes the lab.");
        let snapshot = || -> anyhow::Result<crate::live::Snapshot> {
            Ok(crate::live::Snapshot {
                flows: nat.flows()?.len(),
                counters: maps::read_stats(&lab.pin_dir)?.counters,
            })
        };
        let mut live = crate::live::Live::new();
        let mut before = snapshot()?;
        let mut taken = Instant::now();
        // The totals so far, then what changes.
        live.start(&before)?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut stop = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = stop.recv() => break,
                _ = term.recv() => break,
                _ = tick.tick() => {
                    let now = snapshot()?;
                    live.show(&before, &now, taken.elapsed())?;
                    before = now;
                    taken = Instant::now();
                }
            }
        }
    }
    drop(nat);
    let log = lab.stop_daemon()?;
    if log.contains("ERROR") {
        println!("daemon log:\n{log}");
    }
    drop(lab);
    println!("lab removed: namespaces, pins and files are gone");
    Ok(())
}

/// [`ping6`] again until a reply comes or `bound` has passed.
fn ping6_within(
    peer: &crate::netns::Netns,
    dst: Ipv6Addr,
    id: u16,
    bound: Duration,
) -> Result<Ipv6Addr, crate::lab::LabError> {
    let start = Instant::now();
    loop {
        match ping6(peer, dst, id) {
            Err(_) if start.elapsed() < bound => continue,
            other => return other,
        }
    }
}

/// Prints `rows` as a table under `header`, indented.
fn print_table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let cells: Vec<Vec<String>> = rows.collect();
    print!("{}", indent(&crate::table::render(header, &cells)));
}

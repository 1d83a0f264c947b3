//! `netbpf lab --docker` (`cargo xtask run -- lab --docker`): Docker's NAT
//! done by netbpf, shown with a real dockerd. netbpf starts first (as
//! systemd orders them) and follows dockerd's socket; dockerd runs with
//! its iptables off in the lab's host namespace with its own data root;
//! `docker run -p` publishes two containers; the outside reaches them, they
//! reach the outside, one reaches the other through the host's address,
//! and `docker stop` takes a port away.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{netns::Netns, rows::indent};

use super::{build::*, dockerd::*, plan::*, probes::*};

/// Waits up to `limit` until `netbpf nat list` satisfies `done`.
fn wait_rules(lab: &Lab, limit: Duration, done: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        let text = crate::origins::nat_rules(&lab.pin_dir)?.render();
        if done(&text) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!(
                "netbpf did not follow dockerd in time:\n{text}\n{}",
                lab.daemon_log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the Docker demo; with `once` it stops after the tables, otherwise
/// it waits for Ctrl-C. Everything is removed at the end.
pub async fn run_docker_demo(exe: &Path, prefix: &str, once: bool) -> anyhow::Result<()> {
    let missing = dockerd_missing();
    if !missing.is_empty() {
        bail!(
            "lab --docker needs {} (`cargo xtask setup` installs them)",
            missing.join(", ")
        );
    }
    println!(
        "netbpf lab --docker: building namespaces {prefix}-* (the host's own network and Docker are not touched)"
    );
    let mut lab = Lab::build(prefix, 0)?;
    let dir = lab.dir.join("docker");
    let socket = dir.join("docker.sock");
    let mut _servers = Vec::new();
    let out = SocketAddrV4::new(OUTSIDE_ADDR, SERVICE_PORT);
    for transport in [Transport::Tcp, Transport::Udp] {
        _servers.push(WhoamiServer::spawn(
            &lab.outside,
            transport,
            out,
            "outside: you are",
        )?);
    }
    let sock = socket.display().to_string();
    lab.start_daemon_with(exe, "", &["--docker", &sock])?;
    println!("  netbpf daemon on {prefix}-host/eth0 ({UPLINK_ADDR}), following dockerd at {sock}");
    let docker = Dockerd::start(&lab.host, &dir).context("starting dockerd")?;
    println!(
        "  dockerd in {prefix}-host: --iptables=false --userland-proxy=false, data root {}",
        dir.join("data").display()
    );
    let mut containers: Vec<(String, Netns, u16)> = Vec::new();
    for i in 1..=2u16 {
        let name = format!("web{i}");
        let port = DEMO_PUBLISH_BASE + i;
        let p = format!("{port}:{SERVICE_PORT}");
        let pu = format!("{p}/udp");
        println!(
            "  docker run -d -p {p} -p {pu} --name {name} (busybox, a whoami server on :{SERVICE_PORT})"
        );
        let ns = docker.run(&name, &["-p", &p, "-p", &pu], &format!("{prefix}-{name}"))?;
        for transport in [Transport::Tcp, Transport::Udp] {
            let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVICE_PORT);
            _servers.push(WhoamiServer::spawn(
                &ns,
                transport,
                any,
                &format!("{name}: hello,"),
            )?);
        }
        containers.push((name, ns, port));
    }
    wait_rules(&lab, Duration::from_secs(10), |t| t.contains("docker:web2"))?;
    let seen = |line: String| parse_whoami(&line).map(|a| a.to_string()).unwrap_or(line);
    println!();
    println!(
        "Outbound: each container reaches the outside as {UPLINK_ADDR} (the bridge network's masquerade)"
    );
    for (name, ns, _) in &containers {
        println!(
            "  {name:<5} tcp → outside saw {}",
            seen(tcp_whoami(ns, out)?)
        );
    }
    println!();
    println!("Inbound: `docker run -p` ports, the client's real address preserved");
    for (name, _, port) in &containers {
        let host = SocketAddrV4::new(UPLINK_ADDR, *port);
        let tcp = seen(tcp_whoami(&lab.outside, host)?);
        let udp = seen(udp_whoami(&lab.outside, 0, host)?);
        println!("  {host} → {name}   tcp → {name} saw {tcp:<21} udp → {name} saw {udp}");
    }
    if let (Some((_, ns, _)), Some((_, _, port))) = (containers.get(1), containers.first()) {
        let host = SocketAddrV4::new(UPLINK_ADDR, *port);
        println!(
            "  hairpin: web2 → {host} → web1 saw {}",
            seen(tcp_whoami(ns, host)?)
        );
    }
    println!();
    println!("The NAT rules and where they came from (netbpf nat list):");
    print!(
        "{}",
        indent(&crate::origins::nat_rules(&lab.pin_dir)?.render())
    );
    println!();
    docker.docker(&["stop", "-t", "1", "web2"])?;
    let stopped = Instant::now();
    wait_rules(&lab, Duration::from_secs(5), |t| !t.contains("docker:web2"))?;
    println!(
        "docker stop web2: its ports left the datapath {} ms after the stop returned",
        stopped.elapsed().as_millis()
    );
    println!();
    if !once {
        println!("Ctrl-C removes the lab (containers, dockerd, namespaces, pins).");
        tokio::signal::ctrl_c().await?;
    }
    drop(containers);
    drop(docker);
    let log = lab.stop_daemon()?;
    if log.contains("ERROR") {
        println!("daemon log:\n{log}");
    }
    drop(lab);
    println!("lab removed: containers, dockerd, namespaces, pins and files are gone");
    Ok(())
}

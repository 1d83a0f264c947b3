//! Docker's NAT done by netbpf, end to end with Debian's real dockerd
//! (issue 17): dockerd runs with `--iptables=false` in the lab's host
//! namespace, the daemon follows it (`--docker SOCK`), and `docker run -p`
//! works: published ports (a host address, a range, UDP) with the client's
//! address preserved, the container going out as the host, hairpin,
//! `docker stop` closing the port within a second, restarts of netbpf and
//! of dockerd. Namespaces are `nbdk<test>-<pid>-*`; everything is removed
//! on drop, also when a test fails.

#[path = "../common/mod.rs"]
#[macro_use]
mod common;
mod dockerd;
mod faults;
mod setup;

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddrV4, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use common::exe;
use netbpf::lab::{self, Lab, OUTSIDE_ADDR, UPLINK_ADDR, parse_whoami};
use setup::{Setup, require};

#[test]
fn docker_run_p_is_published_masqueraded_and_unpublished_on_stop() {
    if !require() {
        return;
    }
    let mut s = Setup::new("run");
    s.run(
        "web",
        &[
            "-p",
            "8080:4000",
            "-p",
            "8080:4000/udp",
            "-p",
            "8000-8002:4000-4002",
            "-p",
            &format!("{UPLINK_ADDR}:8181:4000"),
        ],
        &[4000, 4001, 4002],
    );
    s.wait_for_rule("docker:web");
    let web = s.docker.addr("web", "bridge").expect("address");
    let text = s.nat_list();
    for line in [
        format!("tcp    *:8080            {web}:4000"),
        format!("udp    *:8080            {web}:4000"),
        format!("tcp    *:8000-8002       {web}:4000-4002"),
        format!("tcp    {UPLINK_ADDR}:8181  {web}:4000"),
        "172.17.0.0/16".to_owned(),
    ] {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            text.lines().any(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.windows(words.len()).any(|w| w == words.as_slice())
            }),
            "{line:?} missing in\n{text}"
        );
    }
    assert!(
        text.contains("docker:web") && text.contains("config"),
        "{text}"
    );

    // The outside reaches the container and is seen with its own address.
    for (port, expect) in [(8080, "web 4000"), (8001, "web 4001"), (8181, "web 4000")] {
        let dst = SocketAddrV4::new(UPLINK_ADDR, port);
        let answer = lab::tcp_whoami(&s.lab.outside, dst)
            .unwrap_or_else(|e| panic!("tcp {dst}: {e}\n{}", s.logs()));
        assert!(answer.starts_with(expect), "{dst}: {answer}");
        assert_eq!(parse_whoami(&answer).map(|a| *a.ip()), Some(OUTSIDE_ADDR));
    }
    let answer = lab::udp_whoami(&s.lab.outside, 0, SocketAddrV4::new(UPLINK_ADDR, 8080))
        .expect("udp to the published port");
    assert_eq!(
        parse_whoami(&answer).map(|a| *a.ip()),
        Some(OUTSIDE_ADDR),
        "{answer}"
    );

    // The container goes out as the host.
    let out = SocketAddrV4::new(OUTSIDE_ADDR, 4000);
    let seen = lab::tcp_whoami(&s.containers[0], out).expect("container to outside");
    assert_eq!(
        parse_whoami(&seen).map(|a| *a.ip()),
        Some(UPLINK_ADDR),
        "{seen}"
    );

    // Hairpin: another container reaches web through the host's address.
    s.run("peer", &[], &[]);
    let answer = lab::tcp_whoami(&s.containers[1], SocketAddrV4::new(UPLINK_ADDR, 8080))
        .unwrap_or_else(|e| panic!("hairpin: {e}\n{}", s.logs()));
    assert!(answer.starts_with("web 4000"), "{answer}");

    // The host reaches its own published port (Docker's OUTPUT DNAT; here
    // the socket hooks).
    let answer = lab::tcp_whoami(&s.lab.host, SocketAddrV4::new(UPLINK_ADDR, 8080))
        .unwrap_or_else(|e| panic!("from the host: {e}\n{}", s.logs()));
    assert!(answer.starts_with("web 4000"), "{answer}");

    // docker stop: the rules go within a second, the port stops answering.
    s.docker
        .docker(&["stop", "-t", "1", "web"])
        .expect("docker");
    let stopped = Instant::now();
    s.wait_until(Duration::from_secs(1), |t| !t.contains("docker:web"))
        .unwrap_or_else(|t| panic!("web's rules still there 1 s after docker stop:\n{t}"));
    assert!(stopped.elapsed() <= Duration::from_secs(1));
    assert!(
        s.outside_tcp(8080).is_err(),
        "8080 still answers after docker stop"
    );
    let text = s.nat_list();
    assert!(text.contains("docker:network:bridge"), "{text}");
}

/// A line echo server on the outside machine, port 4100.
fn echo_server(lab: &Lab) {
    let listener = lab
        .outside
        .run(|| TcpListener::bind(SocketAddrV4::new(OUTSIDE_ADDR, 4100)))
        .expect("netns")
        .expect("bind");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let Ok(mut out) = stream.try_clone() else {
                    return;
                };
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    if writeln!(out, "{line}").is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn echo(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, what: &str) -> String {
    writeln!(stream, "{what}").unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    line.trim().to_owned()
}

#[test]
fn restarts_of_netbpf_and_of_dockerd_keep_flows_and_leave_nothing_stale() {
    if !require() {
        return;
    }
    let mut s = Setup::new("rs");
    echo_server(&s.lab);
    s.run("keep", &["--restart", "always", "-p", "8090:4000"], &[4000]);
    s.run("gone", &["-p", "8091:4000"], &[4000]);
    s.wait_for_rule("docker:gone");
    s.wait_for_rule("docker:keep");
    // A masqueraded connection from the container, open across restarts.
    let mut stream = s.containers[0]
        .run(|| TcpStream::connect(SocketAddrV4::new(OUTSIDE_ADDR, 4100)))
        .expect("netns")
        .expect("connect to the echo server");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    assert_eq!(echo(&mut stream, &mut reader, "before"), "before");

    // netbpf restarted while containers run: flows and rules kept.
    let before = s.nat_list();
    s.lab.stop_daemon().expect("stop");
    let socket = s.docker.socket.display().to_string();
    s.lab
        .start_daemon_with(exe(), "", &["--docker", &socket])
        .expect("restart");
    let after = s.nat_list();
    for origin in ["docker:keep", "docker:gone", "docker:network:bridge"] {
        assert!(
            after.contains(origin),
            "{origin} lost on restart:\n{before}\n{after}"
        );
    }
    assert_eq!(
        echo(&mut stream, &mut reader, "after netbpf"),
        "after netbpf"
    );
    assert!(
        s.outside_tcp(8090).is_ok(),
        "8090 after the netbpf restart\n{}",
        s.logs()
    );

    // dockerd restarted: `gone` does not come back, `keep` does; the
    // resync removes what is gone.
    s.docker.stop();
    s.docker.restart().expect("dockerd restart");
    let text = s
        .wait_until(Duration::from_secs(20), |t| {
            !t.contains("docker:gone") && t.contains("docker:keep")
        })
        .unwrap_or_else(|t| panic!("not resynced after dockerd restarted:\n{t}\n{}", s.logs()));
    assert!(!text.contains(":8091"), "{text}");
    let ns = format!("{}-keep2", s.lab.prefix);
    let keep = s.docker.attach("keep", &ns).expect("attach");
    s.serve(&keep, "keep", &[4000]);
    s.containers.push(keep);
    let answer = s
        .outside_tcp(8090)
        .unwrap_or_else(|e| panic!("8090 after dockerd restarted: {e}\n{}", s.logs()));
    assert_eq!(*answer.ip(), OUTSIDE_ADDR);
    assert!(
        s.outside_tcp(8091).is_err(),
        "8091 answers though gone is stopped"
    );
}

#[test]
fn user_defined_networks_are_isolated_except_through_published_ports() {
    if !require() {
        return;
    }
    let mut s = Setup::new("iso");
    s.docker
        .docker(&["network", "create", "nbdk-a"])
        .expect("docker");
    s.docker
        .docker(&["network", "create", "nbdk-b"])
        .expect("docker");
    s.wait_for_rule("docker:network:nbdk-b");
    s.run("ca", &["--network", "nbdk-a"], &[4000]);
    s.run("cb", &["--network", "nbdk-b", "-p", "8300:4000"], &[4000]);
    s.wait_for_rule("docker:cb");
    let a = s.docker.addr("ca", "nbdk-a").expect("address");
    let b = s.docker.addr("cb", "nbdk-b").expect("address");
    // Each reaches the outside as the host (both networks are masqueraded).
    let out = SocketAddrV4::new(OUTSIDE_ADDR, 4000);
    for c in &s.containers {
        let seen = lab::tcp_whoami(c, out).unwrap_or_else(|e| panic!("out: {e}\n{}", s.logs()));
        assert_eq!(
            parse_whoami(&seen).map(|x| *x.ip()),
            Some(UPLINK_ADDR),
            "{seen}"
        );
    }
    // Not to each other directly, either way.
    for (from, to) in [(0, b), (1, a)] {
        let direct = lab::tcp_whoami(&s.containers[from], SocketAddrV4::new(to, 4000));
        assert!(direct.is_err(), "{to} reached across networks: {direct:?}");
    }
    let stats = netbpf::maps::read_stats(&s.lab.pin_dir).expect("stats");
    assert!(stats.get(netbpf_common::Counter::DropIsolated) > 0);
    // Through b's published port on the host's address: yes.
    let answer = lab::tcp_whoami(&s.containers[0], SocketAddrV4::new(UPLINK_ADDR, 8300))
        .unwrap_or_else(|e| panic!("a to b's published port: {e}\n{}", s.logs()));
    assert!(answer.starts_with("cb 4000"), "{answer}");

    // Network removed: its masquerade, isolation and hairpin go with it.
    let bridge = format!(
        "br-{}",
        &s.docker
            .docker(&["network", "inspect", "-f", "{{.Id}}", "nbdk-b"])
            .expect("id")[..12]
    );
    s.docker.docker(&["rm", "-f", "cb"]).expect("docker");
    s.docker
        .docker(&["network", "rm", "nbdk-b"])
        .expect("docker");
    let text = s
        .wait_until(Duration::from_secs(5), |t| {
            !t.contains("nbdk-b") && !t.contains("docker:cb")
        })
        .unwrap_or_else(|t| panic!("nbdk-b's rules left behind:\n{t}\n{}", s.logs()));
    assert!(text.contains("docker:network:nbdk-a"), "{text}");
    let links = std::fs::read_dir(s.lab.pin_dir.join("links")).expect("links");
    let names: Vec<String> = links
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with(&bridge)),
        "{bridge} still has programs: {names:?}"
    );
}

/// The bridge ports `netbpf_icc` is pinned on.
fn icc_ports(s: &Setup) -> Vec<String> {
    std::fs::read_dir(s.lab.pin_dir.join("links"))
        .expect("links")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("netbpf_icc@").map(str::to_owned)
        })
        .collect()
}

/// Waits (5 s at most) until `netbpf_icc` is on `n` bridge ports.
fn wait_for_icc_ports(s: &Setup, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while icc_ports(s).len() != n {
        assert!(
            Instant::now() < deadline,
            "netbpf_icc on {:?}, not {n} port(s)\n{}",
            icc_ports(s),
            s.logs()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn icc_off_cuts_containers_of_one_network_off_from_each_other_but_not_from_published_ports() {
    if !require() {
        return;
    }
    let mut s = Setup::new("icc");
    s.docker
        .docker(&[
            "network",
            "create",
            "-o",
            "com.docker.network.bridge.enable_icc=false",
            "nbdk-quiet",
        ])
        .expect("docker");
    s.docker
        .docker(&["network", "create", "nbdk-chatty"])
        .expect("docker");
    s.wait_for_rule("docker:network:nbdk-chatty");
    s.run(
        "qa",
        &["--network", "nbdk-quiet", "-p", "8401:4000"],
        &[4000],
    );
    s.run(
        "qb",
        &["--network", "nbdk-quiet", "-p", "8402:4000"],
        &[4000],
    );
    s.run("ca", &["--network", "nbdk-chatty"], &[4000]);
    s.run("cb", &["--network", "nbdk-chatty"], &[4000]);
    s.wait_for_rule("docker:qb");
    // Only the quiet network's two ports.
    wait_for_icc_ports(&s, 2);
    let qa = s.docker.addr("qa", "nbdk-quiet").expect("address");
    let qb = s.docker.addr("qb", "nbdk-quiet").expect("address");
    let cb = s.docker.addr("cb", "nbdk-chatty").expect("address");

    // Not to each other directly, either way, TCP or UDP.
    for (from, to) in [(0, qb), (1, qa)] {
        let direct = lab::tcp_whoami(&s.containers[from], SocketAddrV4::new(to, 4000));
        assert!(
            direct.is_err(),
            "{to} reached inside nbdk-quiet: {direct:?}"
        );
    }
    let udp = lab::udp_whoami(&s.containers[0], 0, SocketAddrV4::new(qb, 4000));
    assert!(udp.is_err(), "udp to {qb} inside nbdk-quiet: {udp:?}");
    let stats = netbpf::maps::read_stats(&s.lab.pin_dir).expect("stats");
    assert!(stats.get(netbpf_common::Counter::DropIcc) > 0);

    // Each still goes out as the host (through its gateway: ARP works).
    let out = SocketAddrV4::new(OUTSIDE_ADDR, 4000);
    for c in &s.containers[..2] {
        let seen = lab::tcp_whoami(c, out).unwrap_or_else(|e| panic!("out: {e}\n{}", s.logs()));
        assert_eq!(
            parse_whoami(&seen).map(|x| *x.ip()),
            Some(UPLINK_ADDR),
            "{seen}"
        );
    }
    // Each reaches the other's published port on the host's address
    // (hairpin), and the outside reaches both.
    for (from, port, expect) in [(0, 8402, "qb 4000"), (1, 8401, "qa 4000")] {
        let dst = SocketAddrV4::new(UPLINK_ADDR, port);
        let answer = lab::tcp_whoami(&s.containers[from], dst)
            .unwrap_or_else(|e| panic!("hairpin to {dst}: {e}\n{}", s.logs()));
        assert!(answer.starts_with(expect), "{answer}");
        let answer = lab::tcp_whoami(&s.lab.outside, dst)
            .unwrap_or_else(|e| panic!("outside to {dst}: {e}\n{}", s.logs()));
        assert!(answer.starts_with(expect), "{answer}");
    }
    // A network with icc on: its containers talk directly.
    let answer = lab::tcp_whoami(&s.containers[2], SocketAddrV4::new(cb, 4000))
        .unwrap_or_else(|e| panic!("ca to cb: {e}\n{}", s.logs()));
    assert!(answer.starts_with("cb 4000"), "{answer}");

    // netbpf stopped and started again: the ports stay guarded throughout
    // (the links are pinned, the new daemon keeps them for the follower).
    s.lab.stop_daemon().expect("stop");
    let direct = lab::tcp_whoami(&s.containers[0], SocketAddrV4::new(qb, 4000));
    assert!(
        direct.is_err(),
        "qb reached while netbpf was stopped: {direct:?}"
    );
    let socket = s.docker.socket.display().to_string();
    s.lab
        .start_daemon_with(exe(), "", &["--docker", &socket])
        .expect("restart");
    assert_eq!(icc_ports(&s).len(), 2, "links kept over the restart");
    s.wait_for_rule("docker:qb");
    let direct = lab::tcp_whoami(&s.containers[1], SocketAddrV4::new(qa, 4000));
    assert!(direct.is_err(), "qa reached after the restart: {direct:?}");

    // A stopped container's port loses its program.
    s.docker.docker(&["rm", "-f", "qb"]).expect("docker");
    wait_for_icc_ports(&s, 1);
}

//! End-to-end tests of published ports (DNAT) and of ICMP errors through
//! the NAT: the real daemon on a lab built in network namespaces (prefix
//! `nbt-pub<test>-<pid>`, removed on drop, also on failure), real sockets
//! and real tools (ncat, traceroute, tracepath) in the containers and on
//! the outside machine. No traffic leaves the namespaces the test made.

#[macro_use]
mod common;

use common::{cli, exe, sa};

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    process::Command,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use netbpf::{
    lab::{
        self, Lab, OUTSIDE_ADDR, SERVICE_PORT, Transport, UPLINK_ADDR, WhoamiServer, parse_whoami,
        publish_toml,
    },
    maps,
    netns::{self, Netns},
};
use netbpf_common::Counter;

fn prefix(test: &str) -> String {
    format!("nbt-pub{test}-{}", std::process::id())
}

fn uplink(port: u16) -> SocketAddrV4 {
    sa(UPLINK_ADDR, port)
}

/// Whoami servers on `ports` (TCP and UDP) in every container, each
/// greeting with `c<N>:<port>`, and on the outside machine's port 4000.
fn servers(lab: &Lab, ports: &[u16]) -> Vec<WhoamiServer> {
    let mut out = Vec::new();
    for t in [Transport::Tcp, Transport::Udp] {
        out.push(
            WhoamiServer::spawn(&lab.outside, t, sa(OUTSIDE_ADDR, SERVICE_PORT), "outside")
                .expect("outside server"),
        );
        for (i, c) in lab.containers.iter().enumerate() {
            for &port in ports {
                let greeting = format!("c{}:{port} saw", i + 1);
                out.push(
                    WhoamiServer::spawn(&c.ns, t, sa(Ipv4Addr::UNSPECIFIED, port), &greeting)
                        .expect("container server"),
                );
            }
        }
    }
    out
}

/// A lab with `n` containers (servers on `ports`) and the daemon running
/// with `extra` appended to the lab config.
fn lab_with(test: &str, n: usize, ports: &[u16], extra: &str) -> (Lab, Vec<WhoamiServer>) {
    let mut lab = Lab::build(&prefix(test), n).expect("build lab");
    let servers = servers(&lab, ports);
    lab.start_daemon(exe(), extra).expect("daemon starts");
    (lab, servers)
}

/// A TCP connection from `ns` to `dst`: (first line, local address, peer).
fn tcp_ask(ns: &Netns, dst: SocketAddrV4) -> io::Result<(String, SocketAddr, SocketAddr)> {
    ns.run(move || -> io::Result<(String, SocketAddr, SocketAddr)> {
        let stream = TcpStream::connect_timeout(&SocketAddr::V4(dst), Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let (local, peer) = (stream.local_addr()?, stream.peer_addr()?);
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok((line.trim().to_owned(), local, peer))
    })
    .map_err(io::Error::other)?
}

/// One UDP request from `ns` to `dst` (unconnected socket, retried):
/// (answer, our local address, the address the answer came from).
fn udp_ask(ns: &Netns, dst: SocketAddrV4) -> io::Result<(String, SocketAddr, SocketAddr)> {
    ns.run(move || -> io::Result<(String, SocketAddr, SocketAddr)> {
        let socket = UdpSocket::bind(sa(Ipv4Addr::UNSPECIFIED, 0))?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 2048];
        for _ in 0..6 {
            socket.send_to(b"whoami", dst)?;
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
                // The bound address is 0.0.0.0: report the port, and the
                // address the server saw is what the test checks.
                return Ok((text, socket.local_addr()?, from));
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "no UDP answer"))
    })
    .map_err(io::Error::other)?
}

/// Connects over TCP from `ns` to `dst` and reports how it ended.
fn tcp_connect(ns: &Netns, dst: SocketAddrV4, timeout: Duration) -> io::Result<()> {
    ns.run(move || TcpStream::connect_timeout(&SocketAddr::V4(dst), timeout).map(drop))
        .map_err(io::Error::other)?
}

/// Sends UDP from a connected socket in `ns` to `dst` until an answer or an
/// error arrives; returns the error kind of the receive (ConnectionRefused
/// if an ICMP port unreachable reached the socket) or Ok with the answer.
fn udp_connected(ns: &Netns, dst: SocketAddrV4, src_port: u16) -> io::Result<String> {
    ns.run(move || -> io::Result<String> {
        let socket = UdpSocket::bind(sa(Ipv4Addr::UNSPECIFIED, src_port))?;
        socket.connect(dst)?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 2048];
        let mut last = io::Error::new(io::ErrorKind::TimedOut, "no answer and no ICMP error");
        for _ in 0..6 {
            // A send can report the error of an earlier datagram too.
            socket.send(b"whoami")?;
            match socket.recv(&mut buf) {
                Ok(n) => return Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned()),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    last = e
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    })
    .map_err(io::Error::other)?
}

fn stats(lab: &Lab) -> maps::Stats {
    maps::read_stats(&lab.pin_dir).expect("read stats")
}

/// `netbpf stats --json` of the lab's daemon, through the CLI.
fn cli_counter(lab: &Lab, name: &str) -> u64 {
    let out = Command::new(exe())
        .arg("--pin-dir")
        .arg(&lab.pin_dir)
        .args(["stats", "--json"])
        .output()
        .expect("run netbpf stats");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats json");
    json["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {json}"))
}

/// Runs a tool in a namespace with a time limit; returns (success, stdout
/// + stderr).
fn run_tool(ns: &Netns, program: &str, args: &[&str], limit: Duration) -> (bool, String) {
    let mut child = ns
        .command(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program} could not start ({e}): `cargo xtask setup` installs it")
        });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(status) => break Some(status),
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut text = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut text);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    if status.is_none() {
        text.push_str(&format!("\n(killed after {limit:?})"));
    }
    (status.is_some_and(|s| s.success()), text)
}

/// Checks a whoami answer came from container `n` on `port` and that the
/// container saw exactly `client`.
#[track_caller]
fn assert_answer(answer: &str, n: usize, port: u16, client_ip: Ipv4Addr, client_port: u16) {
    assert!(
        answer.starts_with(&format!("c{n}:{port} saw")),
        "expected container c{n} port {port} to answer, got {answer:?}"
    );
    let seen = parse_whoami(answer).expect("address in answer");
    assert_eq!(
        seen,
        sa(client_ip, client_port),
        "the container sees the client's real address and port"
    );
}

#[test]
fn published_tcp_and_udp_reach_the_container_with_the_client_address() {
    require_root!();
    let mut extra = String::new();
    for (i, port) in [(0usize, 8081u16), (1, 8082)] {
        for proto in ["tcp", "udp"] {
            let to = sa(Ipv4Addr::new(10, 77, 0, 2 + i as u8), SERVICE_PORT);
            extra.push_str(&publish_toml(proto, &port.to_string(), to, None));
        }
    }
    let (lab, _servers) = lab_with("basic", 2, &[SERVICE_PORT], &extra);
    for (n, port) in [(1usize, 8081u16), (2, 8082)] {
        let (answer, local, peer) = tcp_ask(&lab.outside, uplink(port)).expect("tcp");
        assert_eq!(
            peer,
            SocketAddr::V4(uplink(port)),
            "TCP reply from the published port"
        );
        assert_answer(&answer, n, SERVICE_PORT, OUTSIDE_ADDR, local.port());

        let (answer, local, from) = udp_ask(&lab.outside, uplink(port)).expect("udp");
        assert_eq!(
            from,
            SocketAddr::V4(uplink(port)),
            "UDP reply from the published port"
        );
        assert_answer(&answer, n, SERVICE_PORT, OUTSIDE_ADDR, local.port());
    }
    // Containers still get out through the masquerade, as the uplink address.
    let seen = parse_whoami(
        &lab::tcp_whoami(&lab.containers[0].ns, sa(OUTSIDE_ADDR, SERVICE_PORT)).expect("out"),
    )
    .expect("addr");
    assert_eq!(*seen.ip(), UPLINK_ADDR);

    // A container whose own source port is a published host port does not
    // get it as its outside port: published ports are never handed out.
    let c2 = &lab.containers[1].ns;
    let seen =
        parse_whoami(&lab::udp_whoami(c2, 8081, sa(OUTSIDE_ADDR, SERVICE_PORT)).expect("udp"))
            .expect("addr");
    assert_eq!(*seen.ip(), UPLINK_ADDR);
    assert_ne!(seen.port(), 8081, "published port handed out as a mapping");
    let (answer, local, _) = udp_ask(&lab.outside, uplink(8081)).expect("udp");
    assert_answer(&answer, 1, SERVICE_PORT, OUTSIDE_ADDR, local.port());

    let s = stats(&lab);
    assert!(s.get(Counter::DnatPackets) >= 4, "dnat_packets: {s:?}");
    assert!(s.get(Counter::DnatBytes) > 0);

    // The flows: inside = container, outside = the published host port,
    // remote = the real client, opened from outside.
    let flows: serde_json::Value =
        serde_json::from_str(&cli(&lab, &["conntrack", "list", "--json"])).expect("json");
    for proto in ["tcp", "udp"] {
        assert!(
            flows
                .as_array()
                .expect("array")
                .iter()
                .any(|f| f["proto"] == proto
                    && f["inside_addr"] == "10.77.0.2"
                    && f["inside_port"] == SERVICE_PORT
                    && f["outside_addr"] == UPLINK_ADDR.to_string()
                    && f["outside_port"] == 8081
                    && f["remote_addr"] == OUTSIDE_ADDR.to_string()
                    && f["opened_inbound"] == true),
            "no published {proto} flow in {flows:#}"
        );
    }

    // nat list shows the rules as the datapath holds them.
    let text = cli(&lab, &["nat", "list"]);
    assert!(text.contains("10.77.0.0/24"), "{text}");
    assert!(text.contains("class-preserving"), "{text}");
    for line in [
        "tcp    *:8081  10.77.0.2:4000",
        "udp    *:8082  10.77.0.3:4000",
    ] {
        assert!(text.contains(line), "{line:?} missing in\n{text}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&cli(&lab, &["nat", "list", "--json"])).expect("json");
    assert_eq!(json["masquerade"][0]["source"], "10.77.0.0/24");
    assert_eq!(json["masquerade"][0]["to_addr"], UPLINK_ADDR.to_string());
    assert_eq!(json["masquerade"][0]["port_mode"], "class-preserving");
    let publish = json["publish"].as_array().expect("publish array");
    assert_eq!(publish.len(), 4, "{json:#}");
    assert_eq!(publish[0]["proto"], "tcp");
    assert_eq!(publish[0]["host_addr"], "0.0.0.0");
    assert_eq!(publish[0]["any_host_addr"], true);
    assert_eq!(publish[0]["host_port_min"], 8081);
    assert_eq!(publish[0]["to_addr"], "10.77.0.2");
    assert_eq!(publish[0]["to_port_min"], 4000);
    assert!(
        json["local_addrs"]
            .as_array()
            .expect("local_addrs")
            .contains(&serde_json::json!(UPLINK_ADDR.to_string())),
        "{json:#}"
    );
}

#[test]
fn a_published_range_maps_one_to_one() {
    require_root!();
    let to = sa(Ipv4Addr::new(10, 77, 0, 2), 4000);
    let extra =
        publish_toml("tcp", "9000-9002", to, None) + &publish_toml("udp", "9000-9002", to, None);
    let (lab, _servers) = lab_with("range", 1, &[4000, 4001, 4002, 4003], &extra);
    for (host_port, port) in [(9000u16, 4000u16), (9001, 4001), (9002, 4002)] {
        let (answer, local, peer) = tcp_ask(&lab.outside, uplink(host_port)).expect("tcp");
        assert_eq!(peer, SocketAddr::V4(uplink(host_port)));
        assert_answer(&answer, 1, port, OUTSIDE_ADDR, local.port());
        let (answer, local, from) = udp_ask(&lab.outside, uplink(host_port)).expect("udp");
        assert_eq!(from, SocketAddr::V4(uplink(host_port)));
        assert_answer(&answer, 1, port, OUTSIDE_ADDR, local.port());
    }
    // Just outside the range: nothing takes the SYN, so it is dropped
    // silently (RFC 5382 REQ-4: a NAT must not answer it with a RST).
    for host_port in [8999, 9003] {
        let e = tcp_connect(&lab.outside, uplink(host_port), Duration::from_secs(1))
            .expect_err("not published");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{host_port}: {e}");
    }
    // The range is two trie blocks (9000-9001, 9002), listed as one row.
    let text = cli(&lab, &["nat", "list"]);
    assert!(
        text.contains("tcp    *:9000-9002  10.77.0.2:4000-4002"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli(&lab, &["nat", "list", "--json"])).expect("json");
    let rows = json["publish"].as_array().expect("array");
    assert_eq!(rows.len(), 2, "one row per rule: {json:#}");
    for row in rows {
        assert_eq!(row["host_port_max"], 9002);
        assert_eq!(row["to_port_max"], 4002);
        assert_eq!(row["trie_entries"], 2);
        assert_eq!(row["complete"], true);
    }
}

#[test]
fn published_flows_expire_and_come_back() {
    require_root!();
    let c1 = sa(Ipv4Addr::new(10, 77, 0, 2), SERVICE_PORT);
    // A short UDP timeout (accepted with a warning) so expiry happens here.
    let extra = publish_toml("udp", "8081", c1, None) + "\n[conntrack]\nudp_timeout = \"2s\"\n";
    let (lab, _servers) = lab_with("expire", 1, &[SERVICE_PORT], &extra);
    let (answer, local, _) = udp_ask(&lab.outside, uplink(8081)).expect("udp");
    assert_answer(&answer, 1, SERVICE_PORT, OUTSIDE_ADDR, local.port());
    let maps = lab.nat_maps().expect("maps");
    assert_eq!(maps.flows().expect("flows").len(), 1);
    // Published flows have no mapping: nothing else to release.
    assert!(maps.mapping_entries().expect("mappings").is_empty());
    assert!(maps.reverse_entries().expect("reverse").is_empty());
    let deadline = Instant::now() + Duration::from_secs(8);
    while !maps.flows().expect("flows").is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        maps.flows().expect("flows").is_empty(),
        "the published UDP flow expired: {:?} {}",
        maps.halves(),
        lab.daemon_log()
    );
    // The port is still published: a new flow opens.
    let (answer, local, _) = udp_ask(&lab.outside, uplink(8081)).expect("udp again");
    assert_answer(&answer, 1, SERVICE_PORT, OUTSIDE_ADDR, local.port());
    assert_eq!(maps.flows().expect("flows").len(), 1);
}

#[test]
fn unpublished_ports_and_other_addresses_are_not_reachable() {
    require_root!();
    let c1 = sa(Ipv4Addr::new(10, 77, 0, 2), SERVICE_PORT);
    let local_only = Some(Ipv4Addr::LOCALHOST);
    let extra =
        publish_toml("tcp", "8090", c1, local_only) + &publish_toml("udp", "8090", c1, local_only);
    let (lab, _servers) = lab_with("closed", 1, &[SERVICE_PORT], &extra);
    // Not published at all (the container listens on 4000, the host does
    // not), and published only on 127.0.0.1: the SYN is dropped silently
    // (RFC 5382 REQ-4), so the client times out.
    for port in [SERVICE_PORT, 8081, 8090] {
        let e = tcp_connect(&lab.outside, uplink(port), Duration::from_secs(1))
            .expect_err("must not connect");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "tcp {port}: {e}");
    }
    // UDP to the 127.0.0.1-only port: the host's port unreachable comes
    // back, no container answer.
    let e = udp_connected(&lab.outside, uplink(8090), 0).expect_err("no answer");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "udp 8090: {e}");

    // Straight to the container's private address (the outside routes the
    // subnet to the host): dropped on the uplink.
    lab.outside
        .ip(&[
            "route",
            "add",
            "10.77.0.0/24",
            "via",
            &UPLINK_ADDR.to_string(),
        ])
        .expect("route");
    let before = stats(&lab).get(Counter::DropDirectToInside);
    let e = tcp_connect(&lab.outside, c1, Duration::from_secs(1)).expect_err("must not connect");
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "direct to {c1}: {e}");
    assert!(stats(&lab).get(Counter::DropDirectToInside) > before);

    let flows = lab.nat_maps().expect("maps").flows().expect("flows");
    assert!(
        flows.is_empty(),
        "nothing from outside reached a container: {flows:?}"
    );
    assert_eq!(stats(&lab).get(Counter::DnatPackets), 0);
    let json: serde_json::Value =
        serde_json::from_str(&cli(&lab, &["nat", "list", "--json"])).expect("json");
    assert_eq!(json["publish"][0]["host_addr"], "127.0.0.1");
    assert_eq!(json["publish"][0]["any_host_addr"], false);
}

#[test]
fn a_port_published_on_loopback_is_not_reachable_from_the_uplink() {
    require_root!();
    // `address = "127.0.0.1"` is `docker run -p 127.0.0.1:8090:4000`: for
    // the host only. A neighbour on the uplink's segment can still send a
    // frame to the host's MAC addressed to 127.0.0.1 (moby#45610); the
    // host's stack drops such a martian, but netbpf sees it first.
    let c1 = sa(Ipv4Addr::new(10, 77, 0, 2), SERVICE_PORT);
    let extra = publish_toml("tcp", "8090", c1, Some(Ipv4Addr::LOCALHOST))
        + &publish_toml("tcp", "8081", c1, None);
    let (lab, _servers) = lab_with("loopback", 1, &[SERVICE_PORT], &extra);
    // The outside machine sends to 127.0.0.1 through its eth0, to the host.
    let out = &lab.outside;
    for conf in ["all", "eth0"] {
        out.sysctl(&format!("net.ipv4.conf.{conf}.route_localnet=1"))
            .expect("route_localnet");
    }
    // Looked up before the local table, which moves behind it.
    out.ip(&[
        "rule",
        "add",
        "to",
        "127.0.0.1/32",
        "lookup",
        "100",
        "pref",
        "10",
    ])
    .expect("rule");
    out.ip(&["rule", "add", "lookup", "local", "pref", "100"])
        .expect("rule");
    out.ip(&["rule", "del", "pref", "0"]).expect("rule");
    out.ip(&[
        "route",
        "add",
        "127.0.0.1/32",
        "via",
        &UPLINK_ADDR.to_string(),
        "dev",
        "eth0",
        "table",
        "100",
    ])
    .expect("route");
    for port in [8090, 8081] {
        let _ = tcp_connect(out, sa(Ipv4Addr::LOCALHOST, port), Duration::from_secs(1));
    }
    let flows = lab.nat_maps().expect("maps").flows().expect("flows");
    let s = stats(&lab);
    assert!(
        flows.is_empty() && s.get(Counter::DnatPackets) == 0,
        "a packet to 127.0.0.1 from the uplink reached the container: dnat_packets {}, flows {flows:#?}",
        s.get(Counter::DnatPackets)
    );
}

#[test]
fn ping_to_the_uplink_is_answered_by_the_host() {
    require_root!();
    let c1 = sa(Ipv4Addr::new(10, 77, 0, 2), SERVICE_PORT);
    let extra = publish_toml("tcp", "8081", c1, None);
    let (lab, _servers) = lab_with("ping", 1, &[SERVICE_PORT], &extra);
    // The container holds an ICMP mapping with identifier 0x5151 ...
    let c = &lab.containers[0];
    assert_eq!(
        lab::ping(&c.ns, OUTSIDE_ADDR, 0x5151).expect("ping out"),
        OUTSIDE_ADDR
    );
    let reverse_before = stats(&lab).get(Counter::ReversePackets);
    // ... and the outside pings the host with the same identifier: an echo
    // request is the host's, never a container's.
    for id in [0x5151, 0x0101] {
        let from = lab::ping(&lab.outside, UPLINK_ADDR, id).expect("ping the host");
        assert_eq!(from, UPLINK_ADDR);
    }
    let s = stats(&lab);
    assert_eq!(s.get(Counter::ReversePackets), reverse_before, "{s:?}");
    assert_eq!(s.get(Counter::DnatPackets), 0, "{s:?}");
    let flows = lab.nat_maps().expect("maps").flows().expect("flows");
    assert_eq!(flows.len(), 1, "only the container's own ping: {flows:?}");
}

#[test]
fn ncat_reaches_published_ports() {
    require_root!();
    let c1 = sa(Ipv4Addr::new(10, 77, 0, 2), SERVICE_PORT);
    let extra = publish_toml("tcp", "8081", c1, None) + &publish_toml("udp", "8081", c1, None);
    let (lab, _servers) = lab_with("ncat", 1, &[SERVICE_PORT], &extra);
    let host = UPLINK_ADDR.to_string();
    let (ok, out) = run_tool(
        &lab.outside,
        "ncat",
        &["-w", "3", &host, "8081"],
        Duration::from_secs(6),
    );
    assert!(ok, "ncat tcp: {out}");
    assert!(
        out.starts_with("c1:4000 saw 203.0.113.2:"),
        "ncat tcp: {out}"
    );
    let (ok, out) = run_tool(
        &lab.outside,
        "sh",
        &[
            "-c",
            // ncat -u quits at the end of its input: keep it open a moment
            // for the answer.
            &format!("(echo whoami; sleep 1) | ncat -u -w 3 {host} 8081"),
        ],
        Duration::from_secs(8),
    );
    assert!(ok, "ncat udp: {out}");
    assert!(
        out.starts_with("c1:4000 saw 203.0.113.2:"),
        "ncat udp: {out}"
    );
}

#[test]
fn icmp_errors_reach_the_container_and_the_client_translated() {
    require_root!();
    let c1 = sa(Ipv4Addr::new(10, 77, 0, 2), 4001);
    // Published to a container port where nothing listens.
    let extra = publish_toml("udp", "8091", c1, None);
    let (lab, _servers) = lab_with("icmperr", 1, &[SERVICE_PORT], &extra);
    let c = &lab.containers[0];
    // Inbound: UDP from a container to a closed port of the outside. The
    // outside's port unreachable quotes the translated packet; only if it
    // is translated back does the container's socket see ECONNREFUSED.
    let e = udp_connected(&c.ns, sa(OUTSIDE_ADDR, 5999), 0).expect_err("closed port");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "container: {e}");
    let after_in = cli_counter(&lab, "icmp_errors_translated");
    assert!(
        after_in > 0,
        "icmp_errors_translated after the inbound error"
    );

    // Outbound: the outside's UDP to the published port reaches the
    // container, which answers port unreachable from its private address;
    // translated, the client's socket sees ECONNREFUSED from 203.0.113.1.
    let e = udp_connected(&lab.outside, uplink(8091), 0).expect_err("closed container port");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "client: {e}");
    assert!(cli_counter(&lab, "icmp_errors_translated") > after_in);
    assert_eq!(cli_counter(&lab, "drop_icmp_no_flow"), 0);
    assert_eq!(cli_counter(&lab, "drop_unsupported_icmp"), 0);
}

/// A machine beyond the outside one: `{prefix}-far` 198.51.100.2/24, with
/// the outside machine routing between 203.0.113.0/24 and 198.51.100.0/24
/// (so it becomes an intermediate hop that sends time-exceeded), over a
/// link with a 1400-byte MTU (so it sends fragmentation-needed).
struct Far {
    ns: Netns,
}

const FAR_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const FAR_GW: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const FAR_MTU: &str = "1400";

impl Far {
    fn build(lab: &Lab) -> Far {
        let ns = Netns::create(&format!("{}-far", lab.prefix)).expect("far ns");
        netns::veth(&lab.outside, "eth1", &ns, "eth0").expect("veth");
        for (n, dev) in [(&lab.outside, "eth1"), (&ns, "eth0")] {
            n.ip(&["link", "set", dev, "mtu", FAR_MTU]).expect("mtu");
        }
        lab.outside
            .ip(&["addr", "add", &format!("{FAR_GW}/24"), "dev", "eth1"])
            .expect("addr");
        ns.ip(&["addr", "add", &format!("{FAR_ADDR}/24"), "dev", "eth0"])
            .expect("addr");
        // advmss: the far end announces a 1460-byte MSS although its link
        // carries 1400 bytes, so big segments from a container need PMTU
        // discovery (fragmentation-needed) to get through.
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &FAR_GW.to_string(),
            "advmss",
            "1460",
        ])
        .expect("route");
        lab.outside
            .sysctl("net.ipv4.ip_forward=1")
            .expect("forward");
        // ICMP errors are rate limited per destination; the tests send a
        // few in a row on purpose.
        for n in [&lab.host, &lab.outside, &ns] {
            n.sysctl("net.ipv4.icmp_ratelimit=0").expect("ratelimit");
        }
        Far { ns }
    }
}

/// The hops traceroute printed (`-n`, one probe per hop): hop number and
/// address, `None` for a `*`.
fn hops(output: &str) -> Vec<(u32, Option<Ipv4Addr>)> {
    output
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let n: u32 = words.next()?.parse().ok()?;
            let addr = words.next().and_then(|w| w.parse().ok());
            Some((n, addr))
        })
        .collect()
}

#[test]
fn traceroute_through_the_nat() {
    require_root!();
    let (lab, _servers) = lab_with("trace", 1, &[SERVICE_PORT], "");
    let far = Far::build(&lab);
    let _far_tcp = WhoamiServer::spawn(&far.ns, Transport::Tcp, sa(FAR_ADDR, 4000), "far")
        .expect("far server");
    let c = &lab.containers[0];
    let dst = FAR_ADDR.to_string();
    let expected = vec![
        (1, Some(UPLINK_ADDR)),
        (2, Some(OUTSIDE_ADDR)),
        (3, Some(FAR_ADDR)),
    ];
    for (method, flags) in [
        ("udp", &[][..]),
        ("icmp", &["-I"][..]),
        ("tcp", &["-T", "-p", "4000"][..]),
    ] {
        let before = stats(&lab).get(Counter::IcmpErrorsTranslated);
        let mut args = vec!["-n", "-q", "1", "-w", "2", "-m", "6"];
        args.extend_from_slice(flags);
        args.push(&dst);
        let (ok, out) = run_tool(&c.ns, "traceroute", &args, Duration::from_secs(15));
        assert!(ok, "traceroute ({method}): {out}");
        assert_eq!(
            hops(&out),
            expected,
            "traceroute ({method}): host, then the outside machine (its time-exceeded \
             translated back), then the destination:\n{out}"
        );
        let translated = stats(&lab).get(Counter::IcmpErrorsTranslated) - before;
        // Hop 2's time-exceeded, and for UDP the destination's port
        // unreachable (ICMP and TCP end with an echo reply / SYN-ACK).
        let want = if method == "udp" { 2 } else { 1 };
        assert!(
            translated >= want,
            "traceroute ({method}): {translated} ICMP errors translated, want >= {want}"
        );
    }
    assert_eq!(stats(&lab).get(Counter::DropIcmpNoFlow), 0);
}

#[test]
fn traceroute_from_outside_to_a_published_port() {
    require_root!();
    let c1 = sa(Ipv4Addr::new(10, 77, 0, 2), SERVICE_PORT);
    let extra = publish_toml("tcp", "8081", c1, None) + &publish_toml("udp", "8081", c1, None);
    let (lab, _servers) = lab_with("traceout", 1, &[SERVICE_PORT], &extra);
    lab.host
        .sysctl("net.ipv4.icmp_ratelimit=0")
        .expect("ratelimit");
    let host = UPLINK_ADDR.to_string();
    // TTL 1 expires on the host while it forwards the translated probe to
    // the container: its time-exceeded quotes the container's address and
    // must leave with the published address and port in the quote, or
    // traceroute cannot match it (it would print `*`). TTL 2 reaches the
    // container, which answers as 203.0.113.1:8081.
    for (method, flags) in [("tcp", &["-T"][..]), ("udp", &["-U"][..])] {
        let before = stats(&lab).get(Counter::IcmpErrorsTranslated);
        let mut args = vec!["-n", "-q", "1", "-w", "2", "-m", "4", "-p", "8081"];
        args.extend_from_slice(flags);
        args.push(&host);
        let (ok, out) = run_tool(&lab.outside, "traceroute", &args, Duration::from_secs(12));
        assert!(ok, "traceroute ({method}): {out}");
        let hops = hops(&out);
        assert_eq!(
            hops.first(),
            Some(&(1, Some(UPLINK_ADDR))),
            "traceroute ({method}) hop 1 is the host's time-exceeded:\n{out}"
        );
        assert!(
            stats(&lab).get(Counter::IcmpErrorsTranslated) > before,
            "traceroute ({method}): the host's time-exceeded was translated:\n{out}"
        );
        // The container's SYN-ACK (TCP) or whoami answer (UDP to a fixed
        // port) ends it at hop 2, from the published address.
        assert_eq!(hops.get(1), Some(&(2, Some(UPLINK_ADDR))), "{out}");
    }
}

#[test]
fn tracepath_finds_the_path_mtu_through_the_nat() {
    require_root!();
    let (lab, _servers) = lab_with("tpath", 1, &[SERVICE_PORT], "");
    let _far = Far::build(&lab);
    let c = &lab.containers[0];
    let (ok, out) = run_tool(
        &c.ns,
        "tracepath",
        &["-n", "-m", "6", &FAR_ADDR.to_string()],
        Duration::from_secs(15),
    );
    assert!(ok, "tracepath: {out}");
    assert!(
        out.contains(&format!("pmtu {FAR_MTU}")),
        "fragmentation-needed from the outside machine reached the container:\n{out}"
    );
    assert!(
        out.contains(&OUTSIDE_ADDR.to_string()),
        "hop 2 seen:\n{out}"
    );
    assert!(out.contains("reached"), "destination reached:\n{out}");
    assert!(stats(&lab).get(Counter::IcmpErrorsTranslated) >= 2);
}

/// A TCP server in `ns` on `port` that sends `len` bytes to each client and
/// closes.
fn bulk_server(ns: &Netns, port: u16, len: usize) -> JoinHandle<()> {
    let listener = ns
        .run(move || TcpListener::bind(sa(Ipv4Addr::UNSPECIFIED, port)))
        .expect("netns")
        .expect("listen");
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(&vec![b'x'; len]);
        }
    })
}

#[test]
fn pmtu_discovery_works_for_a_published_port() {
    require_root!();
    let c1 = sa(Ipv4Addr::new(10, 77, 0, 2), 4100);
    let extra = publish_toml("tcp", "8100", c1, None);
    let (lab, _servers) = lab_with("pmtu", 1, &[SERVICE_PORT], &extra);
    let far = Far::build(&lab);
    const LEN: usize = 200_000;
    let server = bulk_server(&lab.containers[0].ns, 4100, LEN);
    // The container's full-size segments do not fit the far link: only the
    // outside machine's fragmentation-needed, translated back through the
    // published flow, lets the transfer finish.
    let got = far
        .ns
        .run(|| -> io::Result<usize> {
            let mut s =
                TcpStream::connect_timeout(&SocketAddr::V4(uplink(8100)), Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf)?;
            Ok(buf.len())
        })
        .expect("netns");
    let _ = server.join();
    assert_eq!(got.expect("transfer completes"), LEN);
    assert!(stats(&lab).get(Counter::IcmpErrorsTranslated) >= 1);
}

//! End-to-end tests of the observability commands: the Prometheus
//! endpoint, `stats`, `conntrack list` filters and `--format conntrack`,
//! `conntrack top`, and `explain` compared with what the datapath did. The
//! real daemon runs on a lab built in network namespaces (prefix
//! `nbt-ob<test>-<pid>`, removed on drop, also on failure); no traffic
//! leaves the namespaces the test made.

#[macro_use]
mod common;

use common::{cli, exe, sa};

use std::{
    collections::HashMap,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    time::Duration,
};

use common::C1;
use netbpf::{
    lab::{
        self, Lab, OUTSIDE_ADDR, SERVICE_PORT, Transport, UPLINK_ADDR, WhoamiServer, parse_whoami,
        publish_toml,
    },
    maps,
    netns::Netns,
};
use serde_json::Value;

fn prefix(test: &str) -> String {
    format!("nbt-ob{test}-{}", std::process::id())
}

fn outside() -> SocketAddrV4 {
    sa(OUTSIDE_ADDR, SERVICE_PORT)
}

/// A lab with `n` containers (whoami servers on port 4000), a whoami
/// server on the outside machine, c1's TCP port 4000 published on 8081, and
/// the daemon running.
fn lab_with(test: &str, n: usize) -> (Lab, Vec<WhoamiServer>) {
    let mut lab = Lab::build(&prefix(test), n).expect("build lab");
    let mut servers = Vec::new();
    for t in [Transport::Tcp, Transport::Udp] {
        servers.push(WhoamiServer::spawn(&lab.outside, t, outside(), "outside").expect("server"));
        for (i, c) in lab.containers.iter().enumerate() {
            servers.push(
                WhoamiServer::spawn(
                    &c.ns,
                    t,
                    sa(Ipv4Addr::UNSPECIFIED, SERVICE_PORT),
                    &format!("c{}", i + 1),
                )
                .expect("container server"),
            );
        }
    }
    let extra = publish_toml("tcp", "8081", sa(C1, SERVICE_PORT), None)
        + "\n[metrics]\naddress = \"127.0.0.1:9469\"\n";
    lab.start_daemon(exe(), &extra).expect("daemon starts");
    (lab, servers)
}

fn cli_json(lab: &Lab, args: &[&str]) -> Value {
    let text = cli(lab, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

/// One HTTP/1.1 request to the lab host's metrics endpoint: (status line,
/// body).
fn http(ns: &Netns, method: &str, path: &str) -> (String, String) {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    ns.run(move || -> io::Result<(String, String)> {
        let mut s = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], 9469)),
            Duration::from_secs(3),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(request.as_bytes())?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Ok((
            head.lines().next().unwrap_or("").to_owned(),
            body.to_owned(),
        ))
    })
    .expect("netns")
    .expect("http")
}

/// Parses the text exposition format: `name{labels}` → value, checking
/// that every family is declared with HELP and TYPE before its samples.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut declared: Vec<String> = Vec::new();
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            declared.push(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let name = series.split('{').next().unwrap_or(series);
        assert!(
            declared.iter().any(|d| name == d
                || [
                    format!("{d}_bucket"),
                    format!("{d}_sum"),
                    format!("{d}_count")
                ]
                .contains(&name.to_owned())),
            "{name} has no TYPE"
        );
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        assert!(
            out.insert(series.to_owned(), value).is_none(),
            "duplicate {series}"
        );
    }
    out
}

/// A TCP connection from `ns` to `dst` from local port `sport`: the
/// whoami answer.
fn tcp_from_port(ns: &Netns, sport: u16, dst: SocketAddrV4) -> io::Result<String> {
    ns.run(move || -> io::Result<String> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::V4(sa(Ipv4Addr::UNSPECIFIED, sport)).into())?;
        s.connect_timeout(&SocketAddr::V4(dst).into(), Duration::from_secs(3))?;
        let stream: TcpStream = s.into();
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.trim().to_owned())
    })
    .map_err(io::Error::other)?
}

#[test]
fn metrics_stats_and_conntrack_views_show_the_datapath() {
    require_root!();
    let (lab, _servers) = lab_with("m", 2);
    let (c1, c2) = (&lab.containers[0].ns, &lab.containers[1].ns);
    // c1: three TCP connections and a UDP exchange; c2: one TCP, a ping.
    for _ in 0..3 {
        lab::tcp_whoami(c1, outside()).expect("c1 tcp");
    }
    lab::udp_whoami(c1, 5353, outside()).expect("c1 udp");
    lab::tcp_whoami(c2, outside()).expect("c2 tcp");
    lab::ping(c2, OUTSIDE_ADDR, 0x0b01).expect("c2 ping");
    // And the outside through the published port.
    let seen = lab::tcp_whoami(&lab.outside, sa(UPLINK_ADDR, 8081)).expect("published");
    assert!(seen.starts_with("c1 "), "{seen}");

    // --- Prometheus ---
    // Let the last connection's closing segments go through first, so the
    // counters hold still between the scrape and the map reads below.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (status, body) = http(&lab.host, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let m = parse_metrics(&body);
    let stats = maps::read_stats(&lab.pin_dir).expect("stats");
    let nat = lab.nat_maps().expect("maps");
    let flows = nat.flows().expect("flows");
    let reverse = nat.reverse_entries().expect("reverse");
    let get = |series: &str| -> f64 {
        *m.get(series)
            .unwrap_or_else(|| panic!("no {series} in\n{body}"))
    };
    use netbpf_common::Counter;
    assert_eq!(
        get("netbpf_translated_packets_total{kind=\"snat\"}"),
        stats.get(Counter::SnatPackets) as f64
    );
    assert_eq!(
        get("netbpf_translated_packets_total{kind=\"dnat\"}"),
        stats.get(Counter::DnatPackets) as f64
    );
    assert!(get("netbpf_translated_packets_total{kind=\"dnat\"}") >= 1.0);
    assert_eq!(
        get("netbpf_dropped_packets_total{reason=\"direct_to_inside\"}"),
        0.0
    );
    assert_eq!(
        get("netbpf_conntrack_flows_created_total"),
        stats.get(Counter::FlowsCreated) as f64
    );
    assert_eq!(
        get("netbpf_table_entries{table=\"conntrack\"}"),
        flows.len() as f64
    );
    assert_eq!(
        get("netbpf_table_entries_limit{table=\"conntrack\"}"),
        262_144.0
    );
    assert_eq!(
        get("netbpf_table_entries{table=\"nat_reverse\"}"),
        reverse.len() as f64
    );
    let tcp_ports = reverse.iter().filter(|(o, _)| o.proto == 6).count();
    assert_eq!(
        get("netbpf_nat_ports_used{address=\"203.0.113.1\",proto=\"tcp\"}"),
        tcp_ports as f64
    );
    assert_eq!(tcp_ports, 4, "3 from c1, 1 from c2");
    assert_eq!(
        get("netbpf_nat_ports_limit{address=\"203.0.113.1\",proto=\"tcp\"}"),
        65535.0
    );
    assert_eq!(
        get("netbpf_port_allocation_probes_count"),
        get("netbpf_port_allocation_probes_bucket{le=\"+Inf\"}")
    );
    assert!(get("netbpf_port_allocation_probes_count") >= 6.0);
    assert_eq!(get("netbpf_up"), 1.0);
    let (status, body) = http(&lab.host, "HEAD", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.is_empty());
    let (status, _) = http(&lab.host, "GET", "/nope");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = http(&lab.host, "POST", "/metrics");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");

    // --- stats ---
    let json = cli_json(&lab, &["stats", "--json"]);
    let tables = json["tables"].as_array().expect("tables");
    let conntrack = tables
        .iter()
        .find(|t| t["table"] == "CONNTRACK")
        .expect("CONNTRACK row");
    assert_eq!(conntrack["capacity"], 262_144);
    assert_eq!(conntrack["entries"], flows.len() as u64);
    let tcp_use = json["port_use"]
        .as_array()
        .expect("port_use")
        .iter()
        .find(|p| p["addr"] == "203.0.113.1" && p["proto"] == "tcp")
        .expect("tcp port use")
        .clone();
    assert_eq!(tcp_use["used"], 4);
    assert_eq!(tcp_use["ranges"], "class-preserving");
    assert!(json["counters"]["snat_packets"].as_u64().expect("counter") > 0);
    let text = cli(&lab, &["stats"]);
    for needle in [
        "COUNTER",
        "snat_packets",
        "TABLE",
        "CONNTRACK",
        "262144",
        "OUTSIDE",
        "203.0.113.1",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }

    // --- conntrack list filters and --format conntrack ---
    let rows = cli_json(&lab, &["conntrack", "list", "--json", "--proto", "udp"]);
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["inside_port"], 5353);
    let rows = cli_json(
        &lab,
        &["conntrack", "list", "--json", "--addr", "10.77.0.3"],
    );
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 2, "c2: one TCP, one ICMP: {rows:?}");
    assert!(rows.iter().all(|r| r["inside_addr"] == "10.77.0.3"));
    let rows = cli_json(&lab, &["conntrack", "list", "--json", "--port", "8081"]);
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["published"], true);
    let rows = cli_json(&lab, &["conntrack", "list", "--json", "--state", "icmp"]);
    assert_eq!(rows.as_array().expect("array").len(), 1);
    // The filters, each through the whole command as a user types it.
    let text = cli(
        &lab,
        &[
            "conntrack",
            "list",
            "--format",
            "conntrack",
            "--proto",
            "udp",
        ],
    );
    let line = text.lines().next().expect("one line");
    let want_prefix = "udp      17 ";
    assert!(line.starts_with(want_prefix), "{line}");
    let outside_port = rows_port(&lab, "udp");
    assert!(
        line.contains(&format!(
            "src=10.77.0.2 dst=203.0.113.2 sport=5353 dport=4000 src=203.0.113.2 dst=203.0.113.1 sport=4000 dport={outside_port} [ASSURED] mark=0 use=1"
        )),
        "{line}"
    );
    let text = cli(
        &lab,
        &[
            "conntrack",
            "list",
            "--format",
            "conntrack",
            "--port",
            "8081",
        ],
    );
    assert!(
        text.contains("src=203.0.113.2 dst=203.0.113.1 ")
            && text.contains("dport=8081 src=10.77.0.2 dst=203.0.113.2 sport=4000 "),
        "published flow shaped as DNAT: {text}"
    );

    // --- conntrack top ---
    let top = cli_json(&lab, &["conntrack", "top", "--json", "--proto", "tcp"]);
    let top = top.as_array().expect("array");
    assert_eq!(top[0]["inside_addr"], "10.77.0.2", "{top:?}");
    assert_eq!(top[0]["remote_port"], 4000);
    assert_eq!(top[0]["outside_ports"], 3);
    assert_eq!(top[1]["inside_addr"], "10.77.0.3");
    assert_eq!(top[1]["outside_ports"], 1);
    assert_eq!(top.len(), 2, "the published flow holds no port: {top:?}");
    let text = cli(&lab, &["conntrack", "top"]);
    assert!(text.starts_with("PROTO  DESTINATION"), "{text}");
}

/// The outside port of the single flow of `proto`.
/// Issue 14 (item 15): clients that connect to the metrics endpoint and
/// send nothing used to hold the few scrape slots for up to 5 s each, so
/// a real scrape behind them waited. Each connection is its own task now,
/// and only the map reads are limited: a scrape answers at once however
/// many idle connections are open.
#[test]
fn idle_metrics_connections_do_not_stall_a_scrape() {
    require_root!();
    let (lab, _servers) = lab_with("idle", 1);
    let metrics = SocketAddr::from(([127, 0, 0, 1], 9469));
    // Eight idle clients, and one that sends half a request.
    let idle = lab
        .host
        .run(move || -> io::Result<Vec<TcpStream>> {
            let mut idle = Vec::new();
            for i in 0..9 {
                let mut s = TcpStream::connect_timeout(&metrics, Duration::from_secs(3))?;
                if i == 8 {
                    s.write_all(b"GET /metr")?;
                }
                idle.push(s);
            }
            Ok(idle)
        })
        .expect("netns")
        .expect("idle connections");
    // Let the daemon accept them all first.
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let (status, body) = http(&lab.host, "GET", "/metrics");
        let took = started.elapsed();
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        assert_eq!(parse_metrics(&body).get("netbpf_up"), Some(&1.0));
        assert!(
            took < Duration::from_secs(1),
            "a scrape behind {} idle connections took {took:?}",
            idle.len()
        );
    }
    drop(idle);
}

fn rows_port(lab: &Lab, proto: &str) -> u64 {
    let rows = cli_json(lab, &["conntrack", "list", "--json", "--proto", proto]);
    rows[0]["outside_port"].as_u64().expect("port")
}

/// `netbpf explain --json` for one packet.
fn explain(lab: &Lab, args: &[&str]) -> Value {
    let mut all = vec!["explain", "--json"];
    all.extend_from_slice(args);
    cli_json(lab, &all)
}

#[test]
fn explain_agrees_with_what_the_datapath_does() {
    require_root!();
    let (lab, _servers) = lab_with("x", 1);
    let c1 = &lab.containers[0].ns;
    let counter = |name| {
        maps::read_stats(&lab.pin_dir)
            .expect("stats")
            .counters
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .expect("counter")
    };

    // 1. A container's new connection: a new mapping that keeps its port.
    let e = explain(&lab, &["tcp", "10.77.0.2:40000", "203.0.113.2:4000"]);
    assert_eq!(e["direction"], "from_container", "{e}");
    assert_eq!(e["verdict"], "translated", "{e}");
    assert_eq!(e["counter"], "snat_packets");
    assert_eq!(e["src"], "203.0.113.1:40000", "{e}");
    let seen = tcp_from_port(c1, 40000, outside()).expect("c1 connects");
    assert_eq!(
        parse_whoami(&seen),
        Some(sa(UPLINK_ADDR, 40000)),
        "explain said 203.0.113.1:40000: {seen}"
    );
    // Now the flow exists: explain finds it.
    let e = explain(&lab, &["tcp", "10.77.0.2:40000", "203.0.113.2:4000"]);
    assert_eq!(e["src"], "203.0.113.1:40000");
    assert!(e.to_string().contains("conntrack hit"), "{e}");

    // An ICMP error about that flow's packet (as it left) maps back to
    // c1; one about a destination the flow does not talk to is dropped.
    let e = explain(
        &lab,
        &[
            "icmp",
            "203.0.113.2",
            "203.0.113.1",
            "--icmp-error",
            "dest-unreach",
            "--quoted",
            "tcp",
            "203.0.113.1:40000",
            "203.0.113.2:4000",
        ],
    );
    assert_eq!(e["direction"], "ingress", "{e}");
    assert_eq!(e["counter"], "icmp_errors_translated", "{e}");
    assert_eq!(e["dst"], "10.77.0.2:0", "{e}");
    assert_eq!(e["quoted"]["src"], "10.77.0.2:40000", "{e}");
    let e = explain(
        &lab,
        &[
            "icmp",
            "203.0.113.2",
            "203.0.113.1",
            "--icmp-error",
            "3",
            "--quoted",
            "tcp",
            "203.0.113.1:40000",
            "203.0.113.2:4001",
        ],
    );
    assert_eq!(e["counter"], "drop_icmp_no_flow", "{e}");

    // 2. The outside to the published port: DNAT to c1:4000.
    let e = explain(&lab, &["tcp", "203.0.113.2:5555", "203.0.113.1:8081"]);
    assert_eq!(e["direction"], "ingress", "{e}");
    assert_eq!(e["verdict"], "translated");
    assert_eq!(e["counter"], "dnat_packets");
    assert_eq!(e["dst"], "10.77.0.2:4000");
    let seen = tcp_from_port(&lab.outside, 5555, sa(UPLINK_ADDR, 8081)).expect("published");
    assert_eq!(parse_whoami(&seen), Some(sa(OUTSIDE_ADDR, 5555)), "{seen}");
    assert!(seen.starts_with("c1 "), "{seen}");

    // 3. A new remote reaches c1's mapping (endpoint-independent
    //    filtering): explain says it opens a flow to 10.77.0.2:40000, and
    //    the datapath records exactly that flow.
    let e = explain(
        &lab,
        &[
            "tcp",
            "203.0.113.2:6000",
            "203.0.113.1:40000",
            "--in",
            "eth0",
        ],
    );
    assert_eq!(e["verdict"], "translated", "{e}");
    assert_eq!(e["dst"], "10.77.0.2:40000");
    assert_eq!(e["counter"], "reverse_packets");
    // c1 has no listener on 40000: it answers RST, the connect fails.
    let _ = tcp_from_port(&lab.outside, 6000, sa(UPLINK_ADDR, 40000));
    let rows = cli_json(&lab, &["conntrack", "list", "--json", "--port", "6000"]);
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["inside_addr"], "10.77.0.2");
    assert_eq!(rows[0]["inside_port"], 40000);
    assert_eq!(rows[0]["opened_inbound"], true);
    // A mid-connection segment from a remote without a flow is dropped.
    let e = explain(
        &lab,
        &[
            "tcp",
            "203.0.113.2:6001",
            "203.0.113.1:40000",
            "--in",
            "eth0",
            "--tcp-flags",
            "ack",
        ],
    );
    assert_eq!(e["verdict"], "dropped");
    assert_eq!(e["counter"], "drop_tcp_no_flow");

    // 4. Straight to a container's address: dropped, and counted so (the
    // route on the outside machine is set up here as in publish.rs: each
    // test file builds its own scene).
    let e = explain(
        &lab,
        &["udp", "203.0.113.2:5555", "10.77.0.2:4000", "--in", "eth0"],
    );
    assert_eq!(e["verdict"], "dropped", "{e}");
    assert_eq!(e["counter"], "drop_direct_to_inside");
    lab.outside
        .ip(&[
            "route",
            "add",
            "10.77.0.0/24",
            "via",
            &UPLINK_ADDR.to_string(),
        ])
        .expect("route on the outside machine");
    let before = counter("drop_direct_to_inside");
    let answered = lab::udp_whoami(&lab.outside, 5555, sa(C1, SERVICE_PORT)).is_ok();
    assert!(!answered, "the container must not be reachable directly");
    assert!(
        counter("drop_direct_to_inside") > before,
        "the datapath dropped it as explain said"
    );

    // 5. Not for a container: left to the host, whose stack answers (here
    //    with port unreachable).
    let e = explain(
        &lab,
        &[
            "udp",
            "203.0.113.2:5556",
            "203.0.113.1:9999",
            "--in",
            "eth0",
        ],
    );
    assert_eq!(e["verdict"], "passed", "{e}");
    let refused = lab
        .outside
        .run(|| -> io::Result<()> {
            let s = UdpSocket::bind(sa(Ipv4Addr::UNSPECIFIED, 5556))?;
            s.connect(sa(UPLINK_ADDR, 9999))?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            let mut buf = [0u8; 64];
            for _ in 0..4 {
                s.send(b"x")?;
                if let Err(e) = s.recv(&mut buf)
                    && e.kind() == io::ErrorKind::ConnectionRefused
                {
                    return Err(e);
                }
            }
            Ok(())
        })
        .expect("netns");
    assert_eq!(
        refused.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionRefused),
        "the host itself answered"
    );

    // 6. Text form names the steps and the verdict.
    let text = cli(
        &lab,
        &["explain", "tcp", "10.77.0.2:40001", "203.0.113.2:4000"],
    );
    assert!(text.contains("1. netbpf_inside"), "{text}");
    assert!(text.contains("netbpf_egress"), "{text}");
    assert!(
        text.contains("verdict: translated to 203.0.113.1:40001"),
        "{text}"
    );
}

/// The MAC of `iface` in `ns`.
fn mac_of(ns: &Netns, iface: &str) -> String {
    let out = ns
        .exec("cat", &[&format!("/sys/class/net/{iface}/address")])
        .expect("read mac");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn explain_follows_routed_containers() {
    require_root!();
    let mut lab =
        Lab::build_with(&format!("nbt-exr-{}", std::process::id()), 0, 2).expect("build lab");
    let mut servers = Vec::new();
    for c in &lab.routed {
        servers.push(
            WhoamiServer::spawn(
                &c.ns,
                Transport::Tcp,
                sa(Ipv4Addr::UNSPECIFIED, SERVICE_PORT),
                &format!("container {}", c.addr),
            )
            .expect("server"),
        );
    }
    let extra = lab.routed_toml();
    lab.start_daemon(exe(), &extra).expect("daemon starts");
    let peer = lab.peer.as_ref().expect("peer");
    let (r1, r2) = (&lab.routed[0], &lab.routed[1]);
    let (r1_addr, r2_addr) = (r1.addr.to_string(), r2.addr.to_string());
    let counter = |c: netbpf_common::Counter| maps::read_stats(&lab.pin_dir).expect("stats").get(c);

    // 1. From the peer to r1: netbpf_ingress passes it on, netbpf_route_in
    //    forwards it to veth-r1 with r1's MAC; the datapath does just that.
    let to_r1 = format!("{r1_addr}:4000");
    let e = explain(&lab, &["tcp", "10.0.1.2:5555", &to_r1, "--in", "eth0"]);
    assert_eq!(e["direction"], "ingress", "{e}");
    assert_eq!(e["verdict"], "forwarded", "{e}");
    assert_eq!(e["counter"], "routed_in", "{e}");
    assert_eq!(e["interface"], "veth-r1", "{e}");
    assert_eq!(e["dst_mac"], mac_of(&r1.ns, "eth0"), "{e}");
    assert_eq!(e["src_mac"], mac_of(&lab.host, "veth-r1"), "{e}");
    assert_eq!(e["ttl"], 63);
    let before = counter(netbpf_common::Counter::RoutedIn);
    let seen = tcp_from_port(peer, 5555, sa(r1.addr, SERVICE_PORT)).expect("peer to r1");
    assert!(seen.starts_with(&format!("container {r1_addr}")), "{seen}");
    assert!(counter(netbpf_common::Counter::RoutedIn) > before);
    let e = explain(
        &lab,
        &["tcp", "10.0.1.2:5555", &to_r1, "--in", "eth0", "--ttl", "1"],
    );
    assert_eq!(e["verdict"], "to_kernel", "{e}");
    assert_eq!(e["counter"], "route_ttl_expired");

    // 2. r1 to r2 on the same host: straight to veth-r2.
    let to_r2 = format!("{r2_addr}:4000");
    let e = explain(&lab, &["tcp", &format!("{r1_addr}:40000"), &to_r2]);
    assert_eq!(e["direction"], "from_routed_container", "{e}");
    assert_eq!(e["verdict"], "forwarded", "{e}");
    assert_eq!(e["counter"], "routed_local");
    assert_eq!(e["interface"], "veth-r2");
    assert_eq!(e["dst_mac"], mac_of(&r2.ns, "eth0"), "{e}");
    let before = counter(netbpf_common::Counter::RoutedLocal);
    let seen = tcp_from_port(&r1.ns, 40000, sa(r2.addr, SERVICE_PORT)).expect("r1 to r2");
    assert_eq!(parse_whoami(&seen), Some(sa(r1.addr, 40000)), "{seen}");
    assert!(counter(netbpf_common::Counter::RoutedLocal) > before);

    // 3. r1 to the peer: the kernel's route says on-link out of eth0; the
    //    next hop's MAC comes from NEIGHBOURS once the host knows the peer
    //    (it answered r1's traffic above).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let e = loop {
        let e = explain(&lab, &["udp", &format!("{r1_addr}:5353"), "10.0.1.2:4000"]);
        if e["verdict"] == "forwarded" || std::time::Instant::now() > deadline {
            break e;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(e["verdict"], "forwarded", "{e}");
    assert_eq!(e["counter"], "routed_out");
    assert_eq!(e["interface"], "eth0");
    assert_eq!(e["dst_mac"], mac_of(peer, "eth0"), "{e}");
    assert_eq!(e["src_mac"], mac_of(&lab.host, "eth0"), "{e}");
    assert!(e.to_string().contains("on-link: next hop 10.0.1.2"), "{e}");
    let before = counter(netbpf_common::Counter::RoutedOut);
    let _peer_udp = WhoamiServer::spawn(
        peer,
        Transport::Udp,
        sa(lab::PEER_ADDR, SERVICE_PORT),
        "peer",
    )
    .expect("peer server");
    let seen = lab::udp_whoami(&r1.ns, 5353, sa(lab::PEER_ADDR, SERVICE_PORT)).expect("r1 to peer");
    assert_eq!(parse_whoami(&seen), Some(sa(r1.addr, 5353)), "{seen}");
    assert!(counter(netbpf_common::Counter::RoutedOut) > before);

    // 4. A source that is not the veth's container: dropped.
    let e = explain(
        &lab,
        &[
            "udp",
            &format!("{r2_addr}:1"),
            "10.0.1.2:53",
            "--in",
            "veth-r1",
        ],
    );
    assert_eq!(e["verdict"], "dropped", "{e}");
    assert_eq!(e["counter"], "drop_spoofed");
    let text = cli(
        &lab,
        &["explain", "tcp", &format!("{r1_addr}:40000"), &to_r2],
    );
    assert!(text.contains("1. netbpf_container"), "{text}");
    assert!(text.contains("verdict: forwarded out of veth-r2"), "{text}");
}

#[test]
fn session_events_record_who_held_which_port() {
    require_root!();
    let mut lab =
        netbpf::lab::Lab::build(&format!("nbt-obev-{}", std::process::id()), 1).expect("lab");
    let out = std::net::SocketAddrV4::new(netbpf::lab::OUTSIDE_ADDR, 4000);
    let _udp =
        netbpf::lab::WhoamiServer::spawn(&lab.outside, netbpf::lab::Transport::Udp, out, "you are")
            .expect("udp");
    let events = lab.dir.join("events.jsonl");
    let events_arg = events.to_string_lossy().into_owned();
    lab.start_daemon_with(
        std::path::Path::new(env!("CARGO_BIN_EXE_netbpf")),
        "[conntrack]\nudp_timeout = \"1s\"\n",
        &["--events", &events_arg],
    )
    .expect("daemon");
    let seen = netbpf::lab::parse_whoami(
        &netbpf::lab::udp_whoami(&lab.containers[0].ns, 7777, out).expect("udp"),
    )
    .expect("answer");
    // Created at once; expired after the timeout, a GC pass and the
    // mapping grace period.
    let deadline = std::time::Instant::now()
        + netbpf::conntrack::MAPPING_GRACE
        + std::time::Duration::from_secs(6);
    let mut lines = Vec::new();
    while std::time::Instant::now() < deadline {
        lines = std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.iter().any(|l| l.contains("mapping_expired")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    for kind in ["mapping_created", "mapping_expired"] {
        assert!(
            parsed.iter().any(|e| e["event"] == kind
                && e["proto"] == "udp"
                && e["inside"] == "10.77.0.2:7777"
                && e["outside"] == seen.to_string()),
            "no {kind} for 10.77.0.2:7777 → {seen} in {lines:#?}"
        );
    }
}

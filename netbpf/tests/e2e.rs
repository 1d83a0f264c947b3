//! End-to-end tests: the real daemon on a lab built in network namespaces
//! (prefix `nbt-<test>-<pid>`, removed on drop, also on failure), real
//! sockets in the containers and on the outside machine. No traffic leaves
//! the namespaces the test made.

#[macro_use]
mod common;

use common::{cli_output, cli_pins, exe};

use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    time::Duration,
};

use netbpf::lab::{
    self, Lab, OUTSIDE_ADDR, SERVICE_PORT, Transport, UPLINK_ADDR, WhoamiServer, parse_whoami,
};

fn prefix(test: &str) -> String {
    format!("nbt-{test}-{}", std::process::id())
}

fn outside() -> SocketAddrV4 {
    SocketAddrV4::new(OUTSIDE_ADDR, SERVICE_PORT)
}

/// A lab with `n` containers, whoami servers on the outside machine and
/// the daemon running.
fn lab_with_daemon(test: &str, n: usize) -> (Lab, WhoamiServer, WhoamiServer) {
    let mut lab = Lab::build(&prefix(test), n).expect("build lab");
    let tcp = WhoamiServer::spawn(&lab.outside, Transport::Tcp, outside(), "you are").expect("tcp");
    let udp = WhoamiServer::spawn(&lab.outside, Transport::Udp, outside(), "you are").expect("udp");
    lab.start_daemon(exe(), "").expect("daemon starts");
    (lab, tcp, udp)
}

#[test]
fn containers_reach_the_outside_only_as_the_uplink_address() {
    require_root!();
    let (mut lab, _tcp, _udp) = lab_with_daemon("basic", 2);
    for (i, c) in lab.containers.iter().enumerate() {
        let seen = parse_whoami(&lab::tcp_whoami(&c.ns, outside()).expect("tcp")).expect("addr");
        assert_eq!(
            *seen.ip(),
            UPLINK_ADDR,
            "TCP from {} seen as {seen}",
            c.addr
        );
        let seen = parse_whoami(&lab::udp_whoami(&c.ns, 0, outside()).expect("udp")).expect("addr");
        assert_eq!(
            *seen.ip(),
            UPLINK_ADDR,
            "UDP from {} seen as {seen}",
            c.addr
        );
        let from = lab::ping(&c.ns, OUTSIDE_ADDR, 0x7700 + i as u16).expect("ping");
        assert_eq!(from, OUTSIDE_ADDR);
    }
    // Both containers use UDP source port 4444: distinct outside ports.
    let a =
        parse_whoami(&lab::udp_whoami(&lab.containers[0].ns, 4444, outside()).unwrap()).unwrap();
    let b =
        parse_whoami(&lab::udp_whoami(&lab.containers[1].ns, 4444, outside()).unwrap()).unwrap();
    assert_eq!((a.ip(), b.ip()), (&UPLINK_ADDR, &UPLINK_ADDR));
    assert_ne!(a.port(), b.port(), "no port overloading");

    // The CLI reads the pinned conntrack table of the running daemon.
    let out = cli_pins(&lab, &["conntrack", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = rows.as_array().expect("array");
    for proto in ["tcp", "udp", "icmp"] {
        for c in &lab.containers {
            assert!(
                rows.iter().any(|r| r["proto"] == proto
                    && r["inside_addr"] == c.addr.to_string()
                    && r["outside_addr"] == UPLINK_ADDR.to_string()
                    && r["remote_addr"] == OUTSIDE_ADDR.to_string()),
                "no {proto} flow for {} in {rows:#?}",
                c.addr
            );
        }
    }
    let table = cli_pins(&lab, &["conntrack", "list"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("PROTO"), "{text}");
    assert!(text.contains("10.77.0.2:"), "{text}");

    // Stopping the daemon leaves the datapath attached and pinned: the
    // containers still get out, translated.
    let log = lab.stop_daemon().expect("stop");
    assert!(log.contains("stays attached"), "{log}");
    let c = &lab.containers[0];
    let seen = parse_whoami(&lab::tcp_whoami(&c.ns, outside()).expect("still translated")).unwrap();
    assert_eq!(*seen.ip(), UPLINK_ADDR);
    // `netbpf down` detaches and unpins: containers no longer get out.
    let out = cli_pins(&lab, &["down"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!lab.pin_dir.exists(), "pins removed");
    assert!(
        lab::tcp_whoami(&c.ns, outside()).is_err(),
        "without netbpf the outside has no route back to {}",
        c.addr
    );
}

#[test]
fn thousand_concurrent_tcp_connections_get_distinct_mappings() {
    require_root!();
    let (lab, _tcp, _udp) = lab_with_daemon("conc", 2);
    const PER_CONTAINER: usize = 500;
    let seen: Vec<SocketAddrV4> = std::thread::scope(|s| {
        let handles: Vec<_> = lab
            .containers
            .iter()
            .map(|c| {
                s.spawn(move || {
                    c.ns.run(|| -> std::io::Result<Vec<SocketAddrV4>> {
                        // All connections open at once, then read.
                        let mut streams = Vec::with_capacity(PER_CONTAINER);
                        for _ in 0..PER_CONTAINER {
                            let stream = TcpStream::connect_timeout(
                                &SocketAddr::V4(outside()),
                                Duration::from_secs(10),
                            )?;
                            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                            streams.push(stream);
                        }
                        let mut seen = Vec::with_capacity(PER_CONTAINER);
                        for stream in &streams {
                            let mut line = String::new();
                            BufReader::new(stream).read_line(&mut line)?;
                            seen.push(parse_whoami(&line).ok_or_else(|| {
                                std::io::Error::other(format!("bad answer {line:?}"))
                            })?);
                        }
                        Ok(seen)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .expect("thread")
                    .expect("netns")
                    .expect("all connections complete")
            })
            .collect()
    });
    assert_eq!(seen.len(), 2 * PER_CONTAINER);
    assert!(
        seen.iter().all(|a| *a.ip() == UPLINK_ADDR),
        "only the uplink address is seen"
    );
    let ports: HashSet<u16> = seen.iter().map(|a| a.port()).collect();
    assert_eq!(
        ports.len(),
        seen.len(),
        "every connection has its own outside port"
    );
    let flows = lab.nat_maps().expect("maps").flows().expect("flows");
    let tcp_flows = flows.iter().filter(|(k, _)| k.proto == 6).count();
    assert!(
        tcp_flows >= 2 * PER_CONTAINER,
        "{tcp_flows} TCP flows tracked"
    );
}

#[test]
fn invalid_config_attaches_nothing() {
    require_root!();
    let lab = Lab::build(&prefix("badcfg"), 1).expect("build lab");
    let cases = [
        (
            "[uplink]\ninterface = \"eth0\"\n[[masquerade]]\nsource = \"10.77.0.1/24\"\n",
            "masquerade[0].source",
        ),
        ("[uplink]\ninterface = \"nope0\"\n", "uplink.interface"),
        (
            "[uplink]\ninterface = \"eth0\"\n[[masquerade]]\nsource = \"10.77.0.0/24\"\n[conntrack]\nudp_timeout = \"0s\"\n",
            "conntrack.udp_timeout",
        ),
    ];
    for (i, (toml, key)) in cases.iter().enumerate() {
        let path = lab.dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, toml).expect("write config");
        let out = cli_output(&lab, &["daemon", "--config", &path.to_string_lossy()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} must fail");
        assert!(
            stderr.contains(key),
            "case {i}: error names {key}: {stderr}"
        );
        assert!(!lab.pin_dir.exists(), "case {i}: nothing pinned");
    }
    // Nothing attached: a container's packets leave untranslated, so the
    // outside (which has no route to 10.77.0.0/24) cannot answer.
    let _tcp =
        WhoamiServer::spawn(&lab.outside, Transport::Tcp, outside(), "you are").expect("tcp");
    let c = &lab.containers[0];
    assert!(lab::tcp_whoami(&c.ns, outside()).is_err());
}

#[test]
fn expired_flows_and_mappings_are_reclaimed() {
    require_root!();
    let mut lab = Lab::build(&prefix("gc"), 1).expect("build lab");
    let _udp =
        WhoamiServer::spawn(&lab.outside, Transport::Udp, outside(), "you are").expect("udp");
    // Short timeouts (allowed, with a warning) so expiry happens in the test.
    lab.start_daemon(exe(), "[conntrack]\nudp_timeout = \"2s\"\n")
        .expect("daemon starts");
    let c = &lab.containers[0];
    lab::udp_whoami(&c.ns, 5353, outside()).expect("udp");
    let maps = lab.nat_maps().expect("maps");
    assert_eq!(maps.flows().expect("flows").len(), 1);
    assert_eq!(maps.mapping_entries().expect("mappings").len(), 1);
    // Flows go after their timeout (2 s) plus a GC interval (1 s); the
    // mapping after the grace period that protects flows being created.
    let deadline =
        std::time::Instant::now() + Duration::from_secs(8) + netbpf::conntrack::MAPPING_GRACE;
    let mut flows_gone = None;
    while std::time::Instant::now() < deadline {
        let flows = maps.flows().expect("flows").len();
        let mappings = maps.mapping_entries().expect("mappings").len();
        let reverse = maps.reverse_entries().expect("reverse").len();
        if flows == 0 && flows_gone.is_none() {
            flows_gone = Some(std::time::Instant::now());
        }
        if flows == 0 && mappings == 0 && reverse == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(flows_gone.is_some(), "the UDP flow expired");
    assert!(
        maps.mapping_entries().expect("mappings").is_empty(),
        "mapping released"
    );
    assert!(
        maps.reverse_entries().expect("reverse").is_empty(),
        "port released"
    );
    let log = lab.stop_daemon().expect("stop");
    assert!(log.contains("below"), "short timeout warned about: {log}");
}

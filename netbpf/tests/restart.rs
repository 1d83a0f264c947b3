//! Restarting the daemon does not drop established connections (issue 9):
//! the datapath stays attached through pinned links and keeps its flows in
//! pinned maps while no daemon runs; the next daemon adopts them. A TCP
//! connection through the NAT carries a message every few milliseconds
//! across SIGTERM, SIGKILL and a restart with a changed config, and every
//! echo must come back in order. Namespaces are `nbt-rs-<pid>`.

#[macro_use]
mod common;

use common::{cli_output, exe};

use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use netbpf::{
    lab::{self, Lab, OUTSIDE_ADDR, Transport, UPLINK_ADDR, WhoamiServer, parse_whoami},
    netns::Netns,
};

/// A line echo server on the outside machine.
fn echo_server(lab: &Lab, port: u16) {
    let listener = lab
        .outside
        .run(move || TcpListener::bind(SocketAddrV4::new(OUTSIDE_ADDR, port)))
        .expect("netns")
        .expect("bind");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut out = match stream.try_clone() {
                    Ok(s) => s,
                    Err(_) => return,
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

/// How the outside sees the first container's UDP from port 5555.
fn udp_seen(lab: &Lab) -> SocketAddrV4 {
    let answer = lab::udp_whoami(
        &lab.containers[0].ns,
        5555,
        SocketAddrV4::new(OUTSIDE_ADDR, 4000),
    );
    parse_whoami(&answer.expect("udp whoami")).expect("a whoami answer")
}

#[test]
fn established_connections_survive_daemon_restarts() {
    require_root!();
    let mut lab = Lab::build(&format!("nbt-rs-{}", std::process::id()), 1).expect("lab");
    echo_server(&lab, 7070);
    let _udp = WhoamiServer::spawn(
        &lab.outside,
        Transport::Udp,
        SocketAddrV4::new(OUTSIDE_ADDR, 4000),
        "you are",
    )
    .expect("udp");
    lab.start_daemon(exe(), "").expect("daemon");
    let udp_before = udp_seen(&lab);

    // One long-lived connection, exercised continuously from a thread.
    let stream = lab.containers[0]
        .ns
        .run(|| {
            TcpStream::connect_timeout(
                &SocketAddr::V4(SocketAddrV4::new(OUTSIDE_ADDR, 7070)),
                Duration::from_secs(3),
            )
        })
        .expect("netns")
        .expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let worker = {
        let (stop, echoed) = (stop.clone(), echoed.clone());
        thread::spawn(move || -> Result<(), String> {
            let mut out = stream.try_clone().map_err(|e| e.to_string())?;
            let mut lines = BufReader::new(stream).lines();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                writeln!(out, "{i}").map_err(|e| format!("write {i}: {e}"))?;
                let line = lines
                    .next()
                    .ok_or_else(|| format!("connection closed at {i}"))?
                    .map_err(|e| format!("read {i}: {e}"))?;
                if line != i.to_string() {
                    return Err(format!("sent {i}, got {line:?}"));
                }
                echoed.store(i + 1, Ordering::Relaxed);
                i += 1;
                thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
    };
    let progress = |what: &str| {
        let before = echoed.load(Ordering::Relaxed);
        thread::sleep(Duration::from_millis(400));
        let after = echoed.load(Ordering::Relaxed);
        assert!(after > before, "no echo while {what} ({before} → {after})");
    };

    progress("the first daemon runs");
    let log = lab.stop_daemon().expect("SIGTERM");
    assert!(log.contains("stays attached"), "{log}");
    progress("no daemon runs (after SIGTERM)");
    lab.start_daemon(exe(), "").expect("second daemon");
    progress("the second daemon runs");
    let log = lab.kill_daemon().expect("SIGKILL");
    assert!(log.contains("adopted the pinned datapath"), "{log}");
    progress("no daemon runs (after SIGKILL)");
    // A changed config: the new rule applies, the old flows carry on.
    let publish = "[[publish]]\nproto = \"udp\"\nport = 9999\nto = \"10.77.0.2:4000\"\n";
    lab.start_daemon(exe(), publish).expect("third daemon");
    progress("the third daemon runs");
    let nat = lab.nat_maps().expect("maps");
    stop.store(true, Ordering::Relaxed);
    worker
        .join()
        .expect("worker")
        .expect("every echo came back in order");
    assert!(echoed.load(Ordering::Relaxed) > 20);

    // The UDP mapping made before the restarts is the one still in use.
    let udp_after = udp_seen(&lab);
    assert_eq!(udp_after, udp_before, "mappings survive restarts");
    assert_eq!(*udp_after.ip(), UPLINK_ADDR);
    let tcp_flows = nat
        .flows()
        .expect("flows")
        .into_iter()
        .filter(|(k, _)| k.proto == 6 && k.remote_port == 7070)
        .count();
    assert_eq!(tcp_flows, 1, "the connection kept its one flow");
    // The rule added by the restart works.
    let _c1_udp = WhoamiServer::spawn(
        &lab.containers[0].ns,
        Transport::Udp,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4000),
        "c1 saw",
    )
    .expect("c1 udp");
    let seen = lab::udp_whoami(&lab.outside, 0, SocketAddrV4::new(UPLINK_ADDR, 9999))
        .expect("new publish");
    assert!(seen.starts_with("c1 saw"), "{seen}");
}

#[test]
fn a_second_daemon_for_the_same_pins_is_refused() {
    require_root!();
    let mut lab = Lab::build(&format!("nbt-rs2-{}", std::process::id()), 1).expect("lab");
    lab.start_daemon(exe(), "").expect("daemon");
    let config = lab.dir.join("netbpf.toml");
    let out = cli_output(&lab, &["daemon", "--config", &config.to_string_lossy()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another netbpf daemon is running"), "{err}");
}

#[test]
fn a_failed_restart_puts_the_previous_rules_back() {
    require_root!();
    let mut lab = Lab::build(&format!("nbt-rs3-{}", std::process::id()), 1).expect("lab");
    let _c1 = WhoamiServer::spawn(
        &lab.containers[0].ns,
        Transport::Tcp,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4000),
        "c1 saw",
    )
    .expect("c1 tcp");
    let publish = |port: u16| {
        format!("[[publish]]\nproto = \"tcp\"\nport = {port}\nto = \"10.77.0.2:4000\"\n")
    };
    lab.start_daemon(exe(), &publish(8081)).expect("daemon");
    let old = SocketAddrV4::new(UPLINK_ADDR, 8081);
    assert!(lab::tcp_whoami(&lab.outside, old).is_ok());
    lab.stop_daemon().expect("SIGTERM");
    // A restart that changes the rules, then fails attaching the socket
    // hooks (no such cgroup): it must leave the old rules in place.
    let err = lab
        .start_daemon_with(
            exe(),
            &publish(9090),
            &["--cgroup", "/nonexistent-netbpf-cgroup"],
        )
        .expect_err("the restart fails");
    let text = format!("{err:?}");
    assert!(text.contains("cgroup"), "{text}");
    assert!(text.contains("previous rules were put back"), "{text}");
    let seen = lab::tcp_whoami(&lab.outside, old).expect("the old rule still works");
    assert!(seen.starts_with("c1 saw"), "{seen}");
    assert!(
        lab::tcp_whoami(&lab.outside, SocketAddrV4::new(UPLINK_ADDR, 9090)).is_err(),
        "the failed restart's rule is not in place"
    );
}

/// Deletes the host's uplink and the outside namespace at its other end,
/// and makes both again under the same names and addresses: what a driver
/// reload, a network manager or a recreated namespace does.
fn remake_uplink(lab: &mut Lab) {
    lab.host
        .ip(&["link", "del", "eth0"])
        .expect("delete the uplink");
    let name = lab.outside.name().to_owned();
    // Netns::create removes the namespace of that name first; the old
    // value's Drop would delete the new one, so it is forgotten.
    let old = std::mem::replace(
        &mut lab.outside,
        Netns::create(&name).expect("outside again"),
    );
    std::mem::forget(old);
    netbpf::netns::veth(&lab.host, "eth0", &lab.outside, "eth0").expect("veth again");
    lab.host
        .ip(&["addr", "add", &format!("{UPLINK_ADDR}/24"), "dev", "eth0"])
        .expect("uplink address");
    lab.outside
        .ip(&["addr", "add", &format!("{OUTSIDE_ADDR}/24"), "dev", "eth0"])
        .expect("outside address");
    lab.host
        .ip(&["route", "add", "default", "via", &OUTSIDE_ADDR.to_string()])
        .expect("default route");
}

/// Issue 14: while the daemon was dead, the uplink and its namespace were
/// deleted and made again under the same names. The pinned links then
/// point at a device that is gone ("severed"): the next daemon used to
/// fail (`bpf_link_update failed: Link has been severed`), and the read
/// commands answered from the stale maps as if traffic were translated.
/// Now the read commands warn, and the daemon drops the severed links,
/// attaches afresh and keeps the maps: the mapping made before is the one
/// in use after, and containers leave as the uplink's address.
#[test]
fn a_datapath_whose_uplink_was_made_again_attaches_afresh() {
    require_root!();
    let mut lab = Lab::build(&format!("nbt-rs4-{}", std::process::id()), 1).expect("lab");
    let whoami = SocketAddrV4::new(OUTSIDE_ADDR, 4000);
    let udp = WhoamiServer::spawn(&lab.outside, Transport::Udp, whoami, "you are").expect("udp");
    lab.start_daemon(exe(), "").expect("daemon");
    let c1 = &lab.containers[0];
    let before =
        parse_whoami(&lab::udp_whoami(&c1.ns, 5555, whoami).expect("udp before")).expect("whoami");
    assert_eq!(*before.ip(), UPLINK_ADDR);
    let out = cli_output(&lab, &["conntrack", "list"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("attached to no uplink"),
        "no warning while attached: {stderr}"
    );

    lab.kill_daemon().expect("SIGKILL");
    drop(udp);
    remake_uplink(&mut lab);

    // The read commands still answer from the maps, and say that no
    // traffic passes through them.
    for args in [&["conntrack", "list"][..], &["stats"], &["nat", "list"]] {
        let out = cli_output(&lab, args);
        assert!(out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("attached to no uplink") && stderr.contains("severed"),
            "{args:?} warns: {stderr}"
        );
    }
    let out = cli_output(&lab, &["conntrack", "list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.77.0.2"),
        "the flows are still in the maps"
    );

    lab.start_daemon(exe(), "")
        .expect("the daemon attaches to the new uplink");
    let log = lab.daemon_log();
    assert!(log.contains("severed"), "the log says why: {log}");
    assert!(log.contains("flows carry over"), "{log}");

    let _udp = WhoamiServer::spawn(&lab.outside, Transport::Udp, whoami, "you are").expect("udp");
    let _tcp = WhoamiServer::spawn(&lab.outside, Transport::Tcp, whoami, "you are").expect("tcp");
    let c1 = &lab.containers[0];
    let after =
        parse_whoami(&lab::udp_whoami(&c1.ns, 5555, whoami).expect("udp after")).expect("whoami");
    assert_eq!(after, before, "the mapping made before is kept (maps kept)");
    let seen = parse_whoami(&lab::tcp_whoami(&c1.ns, whoami).expect("tcp after")).expect("whoami");
    assert_eq!(
        *seen.ip(),
        UPLINK_ADDR,
        "translated, never the 10.77.x source"
    );
    let out = cli_output(&lab, &["conntrack", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("attached to no uplink"),
        "no warning once attached again: {stderr}"
    );
}
